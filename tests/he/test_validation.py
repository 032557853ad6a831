"""One negative test per refusal of ``he``: parameters, wire frames, sums, encodings, dealt shares,
decryption shares and Shamir points; and no secret in any error message.

The refusals of ``he.roster``, ``he.identity`` and ``he.transcript`` are in ``test_roster.py``,
``test_identity.py`` and ``test_transcript.py``; those of ``he.channel`` in ``test_channel.py``.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import tenseal.sealapi as seal
from he_federation import MAX_ATTEMPTS, TEST_PARAMS, context, random_updates

from he import keygen, wire
from he.ciphertext import KINDS, CiphertextLabel, CiphertextSum, EncryptedUpdate, SecretKeyEncryptor
from he.context import HEContext
from he.decrypt import DecryptionShare, combine, gen_decryption_share, pairwise_masks, sample_smudging_noise
from he.encoding import UpdateEncoder, WeightScaleError, weight_scale_for
from he.errors import (
    CiphertextError,
    EncodingError,
    HEError,
    InsecureParametersError,
    ShareMismatchError,
)
from he.params import MAX_COMMITTEE, MAX_EXAMPLES, PRESETS, HEParams, preset
from he.threshold import lagrange_coefficient, sum_shares, validate_points

PRECISE = PRESETS["precise"]


def params(**changes) -> HEParams:
    return dataclasses.replace(TEST_PARAMS, **changes)


# -- parameters --------------------------------------------------------------------------------


def test_test_params_are_labelled_insecure():
    with pytest.raises(InsecureParametersError, match="128-bit"):
        params(insecure_for_tests=False)


def test_too_many_modulus_bits_for_ring_refused():
    with pytest.raises(InsecureParametersError, match=r"below 128-bit security \(SEAL allows at most 438\)"):
        dataclasses.replace(PRECISE, coeff_modulus_bits=(60,) * 7 + (19,))
    dataclasses.replace(PRECISE, coeff_modulus_bits=(60,) * 7 + (18,))  # exactly at the bound: fine


def test_flooding_margin_below_40_bits_refused():
    with pytest.raises(InsecureParametersError, match="flooding_margin_bits=39 is below the 40"):
        dataclasses.replace(PRECISE, flooding_margin_bits=39)


def test_value_bits_too_large_for_primes_refused():
    # 56 value bits + 5 headroom bits for 32 parties = 61 > 59 usable bits of a 60-bit prime
    with pytest.raises(InsecureParametersError, match=r"61 bits .* does not fit a 60-bit prime"):
        dataclasses.replace(PRECISE, value_bits=56)
    with pytest.raises(InsecureParametersError, match=r"value_bits must be in \[2, 62\]"):
        dataclasses.replace(PRECISE, value_bits=63)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"poly_modulus_degree": 3000}, "power of two"),
        ({"poly_modulus_degree": 512}, "power of two >= 1024"),
        ({"noise_primes": 4}, "at least one payload prime"),
        ({"noise_primes": 0}, "at least one payload prime"),
        ({"clip": float("inf")}, "clip must be a positive finite"),
        ({"clip": 0.0}, "clip must be a positive finite"),
        ({"max_rounds": 0}, "max_rounds and max_ciphertexts must be positive"),
        ({"max_ciphertexts": 0}, "max_rounds and max_ciphertexts must be positive"),
        ({"max_parties": 0}, "max_parties must be positive"),
        ({"default_weight_scale": 0}, r"default_weight_scale in \[1, 10000000\]"),
        ({"default_weight_scale": MAX_EXAMPLES + 1}, r"default_weight_scale in \[1, 10000000\]"),
    ],
)
def test_inconsistent_parameters_refused(changes, message):
    with pytest.raises(InsecureParametersError, match=message):
        params(**changes)


def test_noise_primes_too_small_for_the_flooding_refused():
    """Checked at construction for the largest committee and attempts the preset may serve."""
    with pytest.raises(
        InsecureParametersError,
        match=r"a committee of 32 with 16 attempts needs 93 bits of decryption noise room but the "
        r"noise primes hold 59",
    ):
        params(noise_primes=1)
    with pytest.raises(InsecureParametersError, match=r"needs 133 bits .* noise primes hold 118"):
        params(flooding_margin_bits=80)  # 40 more bits of flooding no longer fit


@pytest.mark.parametrize(("committee", "message"), [(1, "at least 2 members, got 1"), (0, "got 0"),
                                                    (MAX_COMMITTEE + 1, "of 33 exceeds 32")])  # fmt: skip
def test_committee_size_out_of_range_refused(committee, message):
    with pytest.raises(InsecureParametersError, match=message):
        PRECISE.check_federation(committee, MAX_ATTEMPTS)
    PRECISE.check_federation(2, 1)
    PRECISE.check_federation(MAX_COMMITTEE, 16)


def test_more_contributors_than_max_parties_refused():
    with pytest.raises(InsecureParametersError, match="33 contributors exceed max_parties=32"):
        PRECISE.check_contributors(33)
    with pytest.raises(InsecureParametersError, match="129 contributors exceed max_parties=128"):
        PRESETS["compact"].check_contributors(129)
    PRECISE.check_contributors(32)
    PRESETS["compact"].check_contributors(128)


@pytest.mark.parametrize("name", ["precise", "compact", "small"])
def test_flooding_is_statistically_sufficient_and_fits_the_noise_primes(name):
    """The closed-form bound, checked as the inequalities it stands for (params docstring):
    everything a run reveals is within 2^-margin of ideal, and |K| floods plus E stay below
    half the noise primes' product, for every committee and attempt count a roster may use."""
    p = PRESETS[name]
    ctx = context(name)
    noise_product = math.prod(int(q) for q in ctx.noise_moduli)
    for committee in range(2, MAX_COMMITTEE + 1):
        for attempts in (1, 3, 16):
            bits = p.smudging_bits(committee, attempts)
            revealed = p.poly_modulus_degree * p.max_ciphertexts * (p.max_rounds + 2) * attempts * committee
            assert 2**p.ciphertext_noise_bits * revealed <= 2 ** (bits - p.flooding_margin_bits)
            worst = committee * 2**bits + p.max_parties * 19
            noise_bits = p.decryption_noise_bits(committee, attempts)
            assert 2 ** (noise_bits - 1) < worst <= 2**noise_bits < noise_product // 2  # tight, and holds
            p.check_federation(committee, attempts)
    # more keyholders or attempts never need less flooding
    assert p.smudging_bits(32, 16) >= p.smudging_bits(16, 3) >= p.smudging_bits(2, 1)


def test_compact_preset_layout():
    compact = PRESETS["compact"]
    assert (compact.max_parties, compact.slot_bits, compact.fields_per_prime) == (128, 17, 3)
    statistics = compact.for_feature_statistics()
    assert statistics.name == "compact-statistics"
    assert statistics.slot_bits == 59 and statistics.fields_per_prime == 1
    assert HEContext(statistics).fingerprint != context("compact").fingerprint


def test_small_preset_is_128_bit_and_its_ciphertext_a_third_of_compacts():
    """N=8192 at exactly SEAL's 128-bit bound; 3.5x less upload than compact while a model fits
    one ciphertext; 4 more modulus bits, or 8 times the ciphertexts a run may decrypt, are refused."""
    small, compact = PRESETS["small"], PRESETS["compact"]
    limit = seal.CoeffModulus.MaxBitCount(8192, seal.SEC_LEVEL_TYPE.TC128)
    assert sum(small.coeff_modulus_bits) == limit == 218
    assert (small.max_parties, small.slot_bits, small.fields_per_prime) == (32, 15, 3)
    assert small.values_per_ciphertext == 49_152 and small.ciphertext_bytes == 245_760
    assert compact.ciphertext_bytes == 860_160
    assert small.decryption_noise_bits(MAX_COMMITTEE, 16) + 2 == 96 <= small.noise_modulus_bits == 98
    with pytest.raises(InsecureParametersError, match="222 modulus bits at N=8192 is below 128-bit security"):
        dataclasses.replace(small, coeff_modulus_bits=(52, 50, 50, 52, 18))
    dataclasses.replace(small, max_ciphertexts=256)  # 2 more bits of flooding still fit ...
    with pytest.raises(
        InsecureParametersError, match="needs 97 bits of decryption noise room but the noise primes hold 98"
    ):
        dataclasses.replace(small, max_ciphertexts=512)  # ... 3 do not
    statistics = small.for_feature_statistics()
    assert statistics.slot_bits == 49 and statistics.fields_per_prime == 1
    ctx = context("small")
    assert ctx.n == 8192 and [int(q).bit_length() for q in ctx.data_moduli] == [50] * 4


def test_unknown_preset_refused():
    with pytest.raises(
        InsecureParametersError, match=r"unknown HE preset 'fast'.*\['compact', 'precise', 'small'\]"
    ):
        preset("fast")
    assert preset("precise") is PRECISE


# -- encrypted updates on the wire ------------------------------------------------------------


@pytest.fixture(scope="module")
def encryptor(federation5):
    return SecretKeyEncryptor(federation5.ctx, federation5.secrets[0])


@pytest.fixture(scope="module")
def encrypted(federation5, encryptor):
    """A fresh encrypted update (2 arrays) and its bytes."""
    updates, counts = random_updates(TEST_PARAMS, 1, (50, 7), seed=11)
    update, clipped = encryptor.encrypt(updates[0], counts[0], federation5.label())
    assert clipped == 0
    return update, update.to_bytes(federation5.ctx)


def test_encrypted_update_round_trip(test_ctx, encrypted):
    update, blob = encrypted
    back = EncryptedUpdate.from_bytes(test_ctx, blob, "h1")
    assert back.layout == update.layout
    assert back.contributors == 1
    assert np.array_equal(back.c0, update.c0)
    assert not hasattr(back, "c1")  # only c0 travels
    assert len(blob) < test_ctx.params.ciphertext_bytes + 200


@pytest.mark.parametrize("kind", ["training", "", "TRAIN", None])
def test_ciphertext_kind_not_in_kinds_refused(kind):
    assert KINDS == ("train", "statistics")
    with pytest.raises(CiphertextError, match=r"kind must be one of \('train', 'statistics'\)"):
        CiphertextLabel("fed", b"run", kind, 1)


def test_update_needing_too_many_ciphertexts_refused(federation5):
    ctx = HEContext(params(name="test-one-ciphertext", max_ciphertexts=1))
    encryptor = SecretKeyEncryptor(ctx, keygen.gen_secret(ctx))
    label = federation5.label()
    encryptor.encrypt([np.zeros(ctx.params.values_per_ciphertext - 8)], 10, label)  # one: fine
    with pytest.raises(CiphertextError, match="the update needs 2 ciphertexts; the preset allows 1"):
        encryptor.encrypt([np.zeros(ctx.params.values_per_ciphertext)], 10, label)


def test_foreign_ciphertext_refused(test_ctx, encrypted):
    update, blob = encrypted
    other = HEContext(params(name="test-other", clip=32.0))  # same primes, other parameters
    assert np.array_equal(other.data_moduli, test_ctx.data_moduli)
    with pytest.raises(
        CiphertextError,
        match="encrypted update from h7: made under other HE parameters or for another federation or run "
        r"\(fingerprint [0-9a-f]{32}, expected",
    ):
        EncryptedUpdate.from_bytes(other, blob, "h7")
    total = CiphertextSum(other, update.layout)
    with pytest.raises(CiphertextError, match=r"hospital 7.*fingerprint"):
        total.add(7, blob)
    assert total.contributors == []


def _set_last_residue(blob: bytes, value: int) -> bytes:
    """Set the frame's last residue (values past the 60-bit wire width saturate to 2^60-1)."""
    pair = wire.unpack_residues(blob[-15:], 2)
    pair[1] = min(value, (1 << wire.RESIDUE_BITS) - 1)
    return blob[:-15] + wire.pack_residues(pair)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda b: _set_last_residue(b, (1 << 64) - 1), "residues out of range for their primes"),
        (lambda b: b[:-1], "residue block of"),
        (lambda b: b[:-8 * 4096], "residue block of"),
        (lambda b: b + b"\0" * 8, "residue block of"),
        (lambda b: b[:20], "too short for a fedquorum frame"),
        (lambda b: b"", "too short"),
        (lambda b: b"FQHX" + b[4:], "bad magic or version"),
        (lambda b: b[:4] + bytes([wire.VERSION - 1]) + b[5:], "bad magic or version"),
        (lambda b: b[:5] + bytes([wire.Kind.DECRYPTION_SHARE]) + b[6:], "ENCRYPTED_UPDATE frame, got kind 3"),
        (lambda b: b[:26] + b"x" + b[27:], "unreadable frame metadata"),
    ],
    ids=["u64-max", "truncated-1", "truncated-poly", "extended", "header-only", "empty",
         "bad-magic", "v2-frame", "wrong-kind", "bad-json"],
)  # fmt: skip
def test_corrupt_encrypted_update_refused(test_ctx, encrypted, corrupt, message):
    update, blob = encrypted
    with pytest.raises(CiphertextError, match=message):
        EncryptedUpdate.from_bytes(test_ctx, corrupt(blob), "h3")
    total = CiphertextSum(test_ctx, update.layout)
    with pytest.raises(CiphertextError, match="hospital 3"):
        total.add(3, corrupt(blob))
    assert total.contributors == []


def test_residue_equal_to_prime_refused(test_ctx, encrypted):
    _, blob = encrypted
    q_last = int(test_ctx.data_moduli[-1])
    with pytest.raises(CiphertextError, match="out of range"):
        EncryptedUpdate.from_bytes(test_ctx, _set_last_residue(blob, q_last), "h3")
    EncryptedUpdate.from_bytes(test_ctx, _set_last_residue(blob, q_last - 1), "h3")  # q-1 is valid


def _reframe(update: EncryptedUpdate, ctx, meta: dict, c0: np.ndarray | None = None) -> bytes:
    return wire.pack(wire.Kind.ENCRYPTED_UPDATE, ctx.fingerprint, meta, update.c0 if c0 is None else c0)


def test_bad_metadata_refused(test_ctx, encrypted):
    update, _ = encrypted
    layout = update.layout.to_json()
    cases = [
        ({"contributors": 1}, "invalid layout"),
        ({"layout": layout}, "'contributors' must be an integer"),
        ({"layout": layout, "contributors": "x"}, "'contributors' must be an integer"),
        ({"layout": layout, "contributors": 1.0}, "'contributors' must be an integer"),
        ({"layout": "nonsense", "contributors": 1}, "invalid layout"),
        ({"layout": layout, "contributors": 0}, "expected"),
        ({"layout": {**layout, "clip": -1.0}, "contributors": 1}, "invalid layout"),
        ({"layout": {**layout, "weight_scale": 0}, "contributors": 1}, "invalid layout"),
        ({"layout": {**layout, "weight_scale": 2.5}, "contributors": 1}, "invalid layout"),
        ({"layout": {**layout, "weight_scale": True}, "contributors": 1}, "invalid layout"),
        ({"layout": {"shapes": [[50], [-7]], "clip": 1.0, "weight_scale": 5}, "contributors": 1}, "layout"),
        (
            {"layout": {"shapes": [[2**32, 2**32], [40]], "clip": 1.0, "weight_scale": 5}, "contributors": 1},
            "layout",
        ),
        (
            {"layout": {"shapes": [[100000]], "clip": 1.0, "weight_scale": 5}, "contributors": 1},
            r"shape \(1, 4, 4096\), expected \(13, 4, 4096\)",
        ),
    ]
    for meta, message in cases:
        with pytest.raises(CiphertextError, match=message):
            EncryptedUpdate.from_bytes(test_ctx, _reframe(update, test_ctx, meta), "h2")
    good = {"layout": layout, "contributors": 1}
    EncryptedUpdate.from_bytes(test_ctx, _reframe(update, test_ctx, good), "h2")
    doubled = np.concatenate([update.c0, update.c0])
    with pytest.raises(CiphertextError, match=r"shape \(2, 4, 4096\), expected \(1, 4, 4096\)"):
        EncryptedUpdate.from_bytes(test_ctx, _reframe(update, test_ctx, good, doubled), "h2")
    # residues framed for 3 primes instead of 4
    with pytest.raises(CiphertextError, match="expected 4 primes"):
        EncryptedUpdate.from_bytes(test_ctx, _reframe(update, test_ctx, good, update.c0[:, :3]), "h2")
    # a (c0, c1) pair, as protocol v1 sent, is not a c0-only update
    pair = np.stack([update.c0[0], update.c0[0]])[None]
    with pytest.raises(CiphertextError, match=r"shape \(1, 2, 4, 4096\), expected \(1, 4, 4096\)"):
        EncryptedUpdate.from_bytes(test_ctx, _reframe(update, test_ctx, good, pair), "h2")


def test_upload_claiming_several_contributors_refused(test_ctx, encrypted):
    update, _ = encrypted
    claimed = _reframe(update, test_ctx, {"layout": update.layout.to_json(), "contributors": 3})
    assert EncryptedUpdate.from_bytes(test_ctx, claimed, "h2").contributors == 3  # a valid aggregate
    total = CiphertextSum(test_ctx, update.layout)
    with pytest.raises(CiphertextError, match="from hospital 2: claims 3 contributors, expected 1"):
        total.add(2, claimed)
    assert total.contributors == []


def test_wrong_layout_in_sum_names_contributor_and_keeps_sum(federation5, encrypted, encryptor):
    """The round's layout is the server's, not the first reply's: a first reply with another
    layout (layout poisoning) is refused and the honest updates after it are still summed."""
    ctx = federation5.ctx
    update, blob = encrypted
    label = federation5.label()
    other, _ = encryptor.encrypt([np.zeros(50), np.zeros(8)], 10, label)  # 58 values instead of 57
    total = CiphertextSum(ctx, update.layout)
    with pytest.raises(CiphertextError, match=r"from hospital 2: layout .*\(50,\), \(8,\).* differs"):
        total.add(2, other.to_bytes(ctx))  # first, and still refused
    total.add(1, blob)
    with pytest.raises(CiphertextError, match=r"from hospital 2: layout .*\(50,\), \(8,\).* differs"):
        total.add(2, other.to_bytes(ctx))
    narrower, _ = encryptor.encrypt([np.zeros(50), np.zeros(7)], 10, label, clip=0.5)
    with pytest.raises(CiphertextError, match=r"from hospital 3: .*clip=0.5.* differs from the round's"):
        total.add(3, narrower.to_bytes(ctx))
    rescaled, _ = encryptor.encrypt([np.zeros(50), np.zeros(7)], 10, label, weight_scale=77)
    with pytest.raises(CiphertextError, match="from hospital 4: layout"):
        total.add(4, rescaled.to_bytes(ctx))
    assert total.contributors == [1]
    assert total.result.contributors == 1
    assert np.array_equal(total.result.c0, update.c0)


def test_duplicate_contributor_refused(test_ctx, encrypted):
    update, blob = encrypted
    total = CiphertextSum(test_ctx, update.layout)
    total.add(1, blob)
    with pytest.raises(CiphertextError, match="from hospital 1: a second update this round"):
        total.add(1, blob)
    assert total.contributors == [1]
    assert np.array_equal(total.result.c0, update.c0)


def test_empty_sum_has_no_result(test_ctx, encrypted):
    with pytest.raises(CiphertextError, match="no valid encrypted update"):
        _ = CiphertextSum(test_ctx, encrypted[0].layout).result


# -- encoding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_update_refused(encryptor, federation5, bad):
    values = np.zeros(20)
    values[13] = bad
    with pytest.raises(EncodingError, match="update array 1 contains NaN or Inf"):
        encryptor.encrypt([np.zeros(3), values], 10, federation5.label())


@pytest.mark.parametrize(
    ("arrays", "message"),
    [([], "holds no arrays"), ([np.array(["a", "b"])], "not numeric")],
    ids=["empty", "strings"],
)
def test_non_numeric_or_empty_update_refused(encryptor, federation5, arrays, message):
    with pytest.raises(EncodingError, match=message):
        encryptor.encrypt(arrays, 10, federation5.label())


@pytest.mark.parametrize("count", [0, -1, MAX_EXAMPLES + 1, 2**70, True, 3.0, "5"])
def test_num_examples_out_of_range_refused(encryptor, federation5, count):
    with pytest.raises(EncodingError, match="num_examples"):
        encryptor.encrypt([np.zeros(4)], count, federation5.label())


def test_num_examples_at_the_bounds_accepted(encryptor, federation5):
    for count in (1, MAX_EXAMPLES, np.int64(7)):
        encryptor.encrypt([np.zeros(4)], count, federation5.label(), weight_scale=MAX_EXAMPLES)


def test_clipped_values_are_counted(encryptor, federation5):
    _, clipped = encryptor.encrypt([np.array([0.0, 64.0, 64.5, -65.0, -1e9])], 1, federation5.label())
    assert clipped == 3


def test_round_clip_may_only_narrow_the_presets(test_ctx) -> None:
    encoder = UpdateEncoder(test_ctx.params, test_ctx.num_payload)
    rng = np.random.default_rng(0)
    for bad in (0.0, -1.0, test_ctx.params.clip * 2):
        with pytest.raises(EncodingError, match=r"clip must be in \(0, 64.0\]"):
            encoder.encode([np.zeros(3)], 5, rng, clip=bad)


@pytest.mark.parametrize("scale", [0, -5, MAX_EXAMPLES + 1, 2.0, True, "10"])
def test_weight_scale_out_of_range_refused(test_ctx, scale):
    encoder = UpdateEncoder(test_ctx.params, test_ctx.num_payload)
    with pytest.raises(EncodingError, match=r"weight_scale must be an integer in \[1, 10000000\]"):
        encoder.encode([np.zeros(3)], 5, np.random.default_rng(0), weight_scale=scale)


def test_weight_scale_too_small_for_one_hospital_refused() -> None:
    """A weight k/S so large that the hospital's own range 2*ceil(kH/S) overflows a field."""
    compact = PRESETS["compact"]
    encoder = UpdateEncoder(compact, len(compact.payload_prime_bits))
    rng = np.random.default_rng(0)
    fits = encoder.field_limit // (2 * encoder.half_range)  # 128: the largest integer weight
    encoder.encode([np.zeros(3)], fits * 10, rng, weight_scale=10)
    with pytest.raises(EncodingError, match=r"at weight scale 10 need a field range of \d+, above 131071"):
        encoder.encode([np.zeros(3)], (fits + 1) * 10, rng, weight_scale=10)


def test_sum_whose_weights_outgrew_the_scale_is_refused_with_its_exact_count() -> None:
    """The scale leaves room for a total up to about twice the last one; 2.5 times overflows,
    and the sum is refused (never decoded wrong), still telling the exact example count."""
    compact = PRESETS["compact"]
    encoder = UpdateEncoder(compact, len(compact.payload_prime_bits))
    rng = np.random.default_rng(0)
    counts = [1000] * 40
    scale = weight_scale_for(int(sum(counts) / 2.5), compact)
    encoded = [encoder.encode([np.full(5, 0.5)], c, rng, weight_scale=scale) for c in counts]
    fields = sum(e.fields for e in encoded)
    with pytest.raises(WeightScaleError, match="weight scale was too small for its 40000 examples") as info:
        encoder.decode(fields, encoded[0].layout, len(counts))
    assert info.value.total_examples == 40000
    # with the scale from the right total the same updates decode
    scale = weight_scale_for(sum(counts), compact)
    encoded = [encoder.encode([np.full(5, 0.5)], c, rng, weight_scale=scale) for c in counts]
    arrays, total = encoder.decode(sum(e.fields for e in encoded), encoded[0].layout, len(counts))
    assert total == 40000
    np.testing.assert_allclose(arrays[0], 0.5, atol=1e-2)


def test_sum_with_impossible_example_count_refused(test_ctx) -> None:
    encoder = UpdateEncoder(test_ctx.params, test_ctx.num_payload)
    encoded = encoder.encode([np.zeros(3)], 5, np.random.default_rng(0))
    encoder.decode(encoded.fields, encoded.layout, 1)
    # one update's fields presented as the sum of two (or of 6: fewer examples than updates)
    with pytest.raises(EncodingError, match="decoded example count 5 is not that of 6 valid updates"):
        encoder.decode(encoded.fields, encoded.layout, 6)
    with pytest.raises(EncodingError, match="example count 0 is not that of 1"):
        encoder.decode(np.zeros_like(encoded.fields), encoded.layout, 1)


def shifted_field(encoder: UpdateEncoder, fields: np.ndarray, index: int, delta: int) -> np.ndarray:
    """``fields`` with ``delta`` added to field ``index``: what a keyholder can do to the payload rows."""
    p = encoder.params
    grid = (fields.shape[0], p.fields_per_prime, encoder.num_payload_primes, p.poly_modulus_degree)
    c, f, r, j = np.unravel_index(index, grid)
    out = fields.copy()
    out[c, r, j] = np.uint64(int(out[c, r, j]) + (delta << (f * p.slot_bits)))
    return out


def test_sum_whose_exact_fields_or_values_were_shifted_refused(test_ctx) -> None:
    """The offsets pin the count (each is ceil(k*H/S)), and every value field lies in [0, 2 o]:
    a count lowered alone (every value scaled up), an offset raised to feign an overflow (which
    would hand the server a weight scale), a value pushed past the range: refused, never decoded."""
    encoder = UpdateEncoder(test_ctx.params, test_ctx.num_payload)
    rng = np.random.default_rng(0)
    encoded = [encoder.encode([np.full(3, 0.5)], count, rng) for count in (40, 50, 60)]
    fields, layout = sum(e.fields for e in encoded), encoded[0].layout
    count_at, offset_at = layout.num_values, layout.num_values + encoder.count_chunks
    _, total = encoder.decode(fields, layout, 3)
    assert total == 150
    with pytest.raises(EncodingError, match=r"decoded offset sum .* is not that of 60 examples"):
        encoder.decode(shifted_field(encoder, fields, count_at, -90), layout, 3)
    overflow = encoder.field_limit >> encoder.chunk_bits  # on the offset's second chunk: past the limit
    with pytest.raises(EncodingError, match="decoded offset sum") as info:
        encoder.decode(shifted_field(encoder, fields, offset_at + 1, overflow), layout, 3)
    assert not isinstance(info.value, WeightScaleError)
    with pytest.raises(EncodingError, match="1 decoded values lie above"):
        encoder.decode(shifted_field(encoder, fields, 1, encoder.field_limit // 2), layout, 3)


# -- dealt secret shares ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dealing(federation5):
    """One hospital's dealing to the 3-of-5 committee: two seeds and three full shares."""
    return keygen.deal_secret_shares(federation5.ctx, federation5.secrets[0], 3, federation5.parties)


def test_dealt_share_round_trip(test_ctx, dealing):
    for k, share in dealing.items():
        back = keygen.DealtShare.from_bytes(test_ctx, share.to_bytes(test_ctx), f"h{k}")
        assert np.array_equal(back.expand(test_ctx), share.expand(test_ctx))
        assert (back.seed is None) == (share.seed is None)
    assert len(dealing[1].to_bytes(test_ctx)) == len(keygen.SEED_PREFIX) + keygen.SEED_BYTES


def test_dealt_share_corruption_refused(test_ctx, dealing, encrypted):
    blob = dealing[4].to_bytes(test_ctx)
    seed_blob = dealing[1].to_bytes(test_ctx)
    cases = [
        (seed_blob[:-1], "a seed must be 64 bytes"),
        (seed_blob + b"\0", "a seed must be 64 bytes"),
        (blob[:-1], "secret share from h2: residue block"),
        (_set_last_residue(blob, (1 << 64) - 1), "secret share from h2: residues out of range"),
        (encrypted[1], "expected a SECRET_SHARE frame"),
        (b"", "too short"),
        (
            wire.pack(wire.Kind.SECRET_SHARE, test_ctx.fingerprint, {}, np.stack([dealing[4].residues] * 2)),
            "expected one data-level polynomial",
        ),
    ]
    for data, message in cases:
        with pytest.raises(CiphertextError, match=message):
            keygen.DealtShare.from_bytes(test_ctx, data, "h2")
    other = HEContext(params(name="test-other", max_parties=9))
    with pytest.raises(CiphertextError, match="fingerprint"):
        keygen.DealtShare.from_bytes(other, blob, "h2")


@pytest.mark.parametrize(
    ("threshold", "points", "message"),
    [
        (0, [1, 2, 3], r"threshold 0 must be in \[1, 3\]"),
        (4, [1, 2, 3], r"threshold 4 must be in \[1, 3\]"),
        (2, [1, 2, 2], "distinct integers >= 1"),
        (2, [0, 1, 2], "distinct integers >= 1"),
    ],
)
def test_dealing_with_bad_threshold_or_points_refused(test_ctx, federation5, threshold, points, message):
    with pytest.raises(ShareMismatchError, match=message):
        keygen.deal_secret_shares(test_ctx, federation5.secrets[0], threshold, points)


# -- Shamir points -------------------------------------------------------------------------------


@pytest.mark.parametrize("points", [[1, 2, 2], [0, 1, 2], [-1, 2], [1, 2.0], [1, "2"]], ids=str)
def test_bad_points_refused(points):
    with pytest.raises(ShareMismatchError, match="party points must be distinct integers >= 1"):
        validate_points(points)
    with pytest.raises(ShareMismatchError, match="distinct integers >= 1"):
        lagrange_coefficient(1, points)
    validate_points([1, 2, 3])


def test_lagrange_point_outside_the_set_refused():
    with pytest.raises(ShareMismatchError, match=r"point 4 is not among \[1, 2, 3\]"):
        lagrange_coefficient(4, [1, 2, 3])
    # the coefficients of a set interpolate at zero: they add up to exactly 1
    assert sum(lagrange_coefficient(k, [2, 5, 7, 9]) for k in [2, 5, 7, 9]) == 1


def test_sum_of_no_shares_refused():
    with pytest.raises(ShareMismatchError, match="no dealt shares to add: the contributor set is empty"):
        sum_shares([], np.array([97], np.uint64))


# -- decryption shares ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def decryption_round(federation5):
    """Round 4: the aggregate of five updates, a request for T = {1,2,3,4} and its shares."""
    fed = federation5
    label = fed.label(round_id=4)
    updates, counts = random_updates(TEST_PARAMS, 5, (30,), seed=12)
    aggregate = fed.encrypt_all(updates, counts, label=label)
    request = fed.request(aggregate, fed.parties, (1, 2, 3, 4), label=label)
    shares = fed.shares(request)
    combine(fed.ctx, aggregate, shares, request, fed.noise_bits)  # the unaltered round decrypts
    return aggregate, request, shares


def test_decryption_share_round_trip_and_corruption(test_ctx, decryption_round):
    _, _, shares = decryption_round
    share = shares[1]
    blob = share.to_bytes(test_ctx)
    back = DecryptionShare.from_bytes(test_ctx, blob, "h2")
    assert (back.party, back.round_id, back.attempt) == (2, 4, 1)
    assert np.array_equal(back.polys, share.polys)
    with pytest.raises(CiphertextError, match="decryption share from h2: residue block"):
        DecryptionShare.from_bytes(test_ctx, blob[:-16], "h2")
    with pytest.raises(CiphertextError, match="decryption share from h2: residues out of range"):
        DecryptionShare.from_bytes(test_ctx, _set_last_residue(blob, (1 << 63)), "h2")
    for meta in ({"round": 4, "attempt": 1}, {"party": 2, "attempt": 1}, {"party": 2, "round": 4},
                 {"party": "two", "round": 4, "attempt": 1}, {"party": 2.0, "round": 4, "attempt": 1},
                 {"party": True, "round": 4, "attempt": 1}):  # fmt: skip
        framed = wire.pack(wire.Kind.DECRYPTION_SHARE, test_ctx.fingerprint, meta, share.polys)
        with pytest.raises(
            CiphertextError, match=r"metadata field '(party|round|attempt)' must be an integer"
        ):
            DecryptionShare.from_bytes(test_ctx, framed, "h2")
    secret_frame = keygen.DealtShare(residues=share.polys[0]).to_bytes(test_ctx)
    with pytest.raises(CiphertextError, match="expected a DECRYPTION_SHARE frame"):
        DecryptionShare.from_bytes(test_ctx, secret_frame, "h2")


def test_share_for_another_round_or_attempt_refused(federation5, decryption_round):
    fed = federation5
    aggregate, request, shares = decryption_round
    other_round = fed.request(aggregate, fed.parties, (1, 2, 3, 4), label=fed.label(round_id=5))
    other_attempt = fed.request(aggregate, fed.parties, (1, 2, 3, 4), label=request.label, attempt=2)
    for other, text in [(other_round, "round 5 attempt 1"), (other_attempt, "round 4 attempt 2")]:
        stale = fed.share(3, other)
        mixed = [shares[0], shares[1], stale, shares[3]]
        with pytest.raises(ShareMismatchError, match=rf"party 3 is for {text}, expected round 4 attempt 1"):
            combine(fed.ctx, aggregate, mixed, request, fed.noise_bits)


def test_share_of_wrong_shape_refused(federation5, decryption_round):
    fed = federation5
    aggregate, request, shares = decryption_round
    doubled = DecryptionShare(3, 4, 1, np.concatenate([shares[2].polys, shares[2].polys]))
    with pytest.raises(ShareMismatchError, match=r"decryption share of party 3: shape \(2, 4, 4096\)"):
        combine(fed.ctx, aggregate, [shares[0], shares[1], doubled, shares[3]], request, fed.noise_bits)


@pytest.mark.parametrize(
    ("parties", "got"),
    [((1, 2, 4), "[1, 2, 4]"), ((1, 2, 3, 4, 4), "[1, 2, 3, 4, 4]"), ((1, 2, 3, 5), "[1, 2, 3, 5]")],
    ids=["missing", "duplicate", "outsider"],
)
def test_shares_not_exactly_from_the_decryption_set_refused(federation5, decryption_round, parties, got):
    fed = federation5
    aggregate, request, shares = decryption_round
    by_party = {s.party: s for s in shares} | {5: DecryptionShare(5, 4, 1, shares[0].polys)}
    chosen = [by_party[k] for k in parties]
    with pytest.raises(
        ShareMismatchError, match=rf"a share from every member of T=\[1, 2, 3, 4\], got {re.escape(got)}"
    ):
        combine(fed.ctx, aggregate, chosen, request, fed.noise_bits)


def test_share_altered_on_a_noise_prime_refused_by_the_noise_bound(federation5, decryption_round):
    """+1 on one NTT residue of a noise prime changes every noise coefficient on that prime.
    (A change confined to the payload primes is not caught: shares carry no integrity proof,
    see docs/security.md and test_attacks.test_tampered_shares.)"""
    fed = federation5
    aggregate, request, shares = decryption_round
    polys = shares[2].polys.copy()
    row = fed.ctx.num_payload  # the first noise prime
    polys[0, row, 17] = (int(polys[0, row, 17]) + 1) % int(fed.ctx.data_moduli[row])
    altered = DecryptionShare(3, 4, 1, polys)
    with pytest.raises(ShareMismatchError, match=r"decryption noise of 2\^.* exceeds its bound 2\^"):
        combine(fed.ctx, aggregate, [shares[0], shares[1], altered, shares[3]], request, fed.noise_bits)


def test_share_generation_refusals(federation5, decryption_round):
    fed = federation5
    ctx = fed.ctx
    aggregate, request, _ = decryption_round
    c1 = np.zeros_like(aggregate.c0)
    key = fed.key_share(5, fed.parties)
    masks = pairwise_masks(ctx, 1, fed.mask_keys(1, [1, 2, 3, 4]), request)
    with pytest.raises(ShareMismatchError, match=r"party 5 is not in the decryption set \[1, 2, 3, 4\]"):
        gen_decryption_share(ctx, request, 5, c1, key, masks, fed.smudging_bits)
    with pytest.raises(ShareMismatchError, match="do not match the request"):
        gen_decryption_share(ctx, request, 1, np.concatenate([c1, c1]), key, masks, fed.smudging_bits)
    with pytest.raises(ShareMismatchError, match=r"no pairwise mask key with keyholders \[3, 4\]"):
        pairwise_masks(ctx, 1, fed.mask_keys(1, [1, 2]), request)
    with pytest.raises(ValueError, match="smudging of 121 bits exceeds the 120 bits"):
        sample_smudging_noise(ctx, 1, 121)


# -- no secret in any error message --------------------------------------------------------------

# Residues under the 60-bit primes are >= 2^32 with overwhelming probability and print as 10+
# digit numbers; smaller values could match any number in a message by chance.
BIG_NUMBER = re.compile(r"\d{10,}")


def _errors_about_secrets(fed, dealing) -> list[BaseException]:
    """Every refusal that can be triggered with secret material as the input."""
    ctx = fed.ctx
    share = dealing[4].residues
    blob = dealing[4].to_bytes(ctx)
    seed_blob = dealing[1].to_bytes(ctx)
    label = fed.label()
    request = fed.request(
        EncryptedUpdate(None, np.zeros((1, 4, ctx.n), np.uint64)), fed.parties, (1, 2, 3, 4)
    )
    bad_inputs = [
        lambda: keygen.DealtShare.from_bytes(ctx, blob[:-8], "h1"),
        lambda: keygen.DealtShare.from_bytes(ctx, _set_last_residue(blob, (1 << 64) - 1), "h1"),
        lambda: keygen.DealtShare.from_bytes(ctx, blob[:8] + blob[9:], "h1"),
        lambda: keygen.DealtShare.from_bytes(ctx, seed_blob[:-1], "h1"),
        lambda: keygen.DealtShare.from_bytes(
            ctx, wire.pack(wire.Kind.SECRET_SHARE, ctx.fingerprint, {}, np.stack([share, share])), "h1"
        ),
        lambda: keygen.DealtShare.from_bytes(HEContext(params(name="test-other", clip=1.0)), blob, "h1"),
        lambda: EncryptedUpdate.from_bytes(ctx, blob, "h1"),
        lambda: DecryptionShare.from_bytes(
            ctx, wire.pack(wire.Kind.DECRYPTION_SHARE, ctx.fingerprint, {"party": "x"}, share[None]), "h1"
        ),
        lambda: wire.unpack(
            wire.pack(wire.Kind.SECRET_SHARE, ctx.fingerprint, {}, fed.secrets[0].residues[None]),
            wire.Kind.DECRYPTION_SHARE, ctx.fingerprint, ctx.data_moduli, "secret key",
        ),
        lambda: wire.unpack(
            wire.pack(wire.Kind.SECRET_SHARE, ctx.fingerprint, {}, fed.secrets[0].residues[None]),
            wire.Kind.SECRET_SHARE, ctx.fingerprint, ctx.data_moduli[:3], "secret key",
        ),
        lambda: SecretKeyEncryptor(ctx, fed.secrets[0]).encrypt([np.array([np.nan])], 1, label),
        lambda: gen_decryption_share(ctx, request, 5, share[None], share, share[None], 80),
        lambda: gen_decryption_share(ctx, request, 1, share[None], share, share[None, :2], 80),
        lambda: sum_shares([], ctx.data_moduli),
    ]  # fmt: skip
    errors = []
    for bad in bad_inputs:
        with pytest.raises(HEError) as info:
            bad()
        errors.append(info.value)
    return errors


def leaked(text: str, secret_values: set[int]) -> set[int]:
    return {int(m) for m in BIG_NUMBER.findall(text)} & secret_values


def test_error_messages_never_contain_secret_material(federation5, dealing):
    secret_values = set()
    for sk in federation5.secrets:
        secret_values |= set(sk.residues.ravel().tolist())
    for share in dealing.values():
        secret_values |= set(share.expand(federation5.ctx).ravel().tolist())
    for shares in federation5.dealt.values():
        for share in shares.values():
            secret_values |= set(share.ravel().tolist())
    secret_values = {v for v in secret_values if v >= 1 << 32}
    assert len(secret_values) > 100_000
    seeds = [d.seed.hex() for d in dealing.values() if d.seed is not None]
    assert len(seeds) == 2
    errors = _errors_about_secrets(federation5, dealing)
    assert len(errors) == 14
    for err in errors:
        texts = [str(err), repr(err)]
        cause = err.__cause__
        while cause is not None:
            texts += [str(cause), repr(cause)]
            cause = cause.__cause__
        for text in texts:
            assert len(text) < 400, text  # nothing like a dump of an array
            assert not leaked(text, secret_values), text
            assert not any(seed[:16] in text for seed in seeds), text
    some_secret = max(secret_values)
    assert leaked(f"share residue {some_secret} out of range", secret_values) == {some_secret}
    for holder in (federation5.secrets[0], dealing[1], dealing[4]):
        assert "<secret>" in repr(holder)
        assert not leaked(repr(holder), secret_values)
    assert dealing[1].seed.hex()[:16] not in repr(dealing[1])
    encryptor = SecretKeyEncryptor(federation5.ctx, federation5.secrets[0])
    assert repr(encryptor) == "SecretKeyEncryptor(test-insecure)"


def test_residue_packing_round_trips_at_the_edges() -> None:
    from he.wire import pack_residues, packed_size, unpack_residues

    rng = np.random.default_rng(5)
    values = rng.integers(0, 1 << 60, 1000, dtype=np.uint64)
    values[:4] = [0, (1 << 60) - 1, 1, (1 << 60) - 2]
    body = pack_residues(values)
    assert len(body) == packed_size(values.size) == 7500
    assert np.array_equal(unpack_residues(body, values.size), values)
    with pytest.raises(ValueError, match="below 2\\^60"):
        pack_residues(np.array([1 << 60, 0], dtype=np.uint64))


def test_removed_wire_kinds_are_gone() -> None:
    """Protocol v2 has no public-key shares or c1 aggregates on the wire (v3 frames)."""
    assert wire.VERSION == 3
    assert {k.name for k in wire.Kind} == {"ENCRYPTED_UPDATE", "DECRYPTION_SHARE", "SECRET_SHARE"}


def test_a_narrower_round_clip_shrinks_the_quantization_error() -> None:
    compact = preset("compact")
    encoder = UpdateEncoder(compact, len(compact.payload_prime_bits))
    values = np.random.default_rng(1).uniform(-0.04, 0.04, 5000)
    errors = {}
    for clip in (compact.clip, 0.05):
        encoded = encoder.encode([values], 500, np.random.default_rng(2), clip=clip)
        (decoded,), _ = encoder.decode(encoded.fields, encoded.layout, 1)
        errors[clip] = np.max(np.abs(decoded - values))
    assert errors[0.05] < errors[compact.clip] / 10


def test_frames_of_another_run_refused_by_name(test_ctx, encrypted):
    """Bound contexts (``HEContext.bound(run_id)``): an update, share or dealt share made for one
    run does not parse in another, and the error names the sender."""
    update, _ = encrypted
    run_a, run_b = test_ctx.bound(b"run-a"), test_ctx.bound(b"run-b")
    frame = update.to_bytes(run_a)
    assert EncryptedUpdate.from_bytes(run_a, frame, "h1").contributors == 1
    with pytest.raises(CiphertextError, match="from h1: made under other HE parameters or for another"):
        EncryptedUpdate.from_bytes(run_b, frame, "h1")
    dealt = keygen.DealtShare(residues=update.c0[0]).to_bytes(run_a)
    with pytest.raises(CiphertextError, match="secret share from h2: made under other"):
        keygen.DealtShare.from_bytes(run_b, dealt, "h2")
    assert run_a.data_moduli is test_ctx.data_moduli  # a view: same primes and tables

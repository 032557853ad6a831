"""One negative test per refusal of ``he`` about parameters and plaintext: presets whose security,
flooding or packing bounds do not hold, committees and contributor sets beyond a preset's
limits, updates that cannot be encoded (non-finite or non-numeric values, example counts, clip
and weight scale out of range), and field sums that decode to an impossible count, offset or
value (refused, never decoded wrong).

Malformed wire frames and the server's sum are in ``test_validation_wire.py``; dealt shares,
Shamir points, decryption shares and secrets in error messages in ``test_validation_shares.py``.
The refusals of ``he.roster``, ``he.identity`` and ``he.transcript`` are in ``test_roster.py``,
``test_identity.py`` and ``test_transcript.py``; those of ``he.channel`` in ``test_channel.py``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import tenseal.sealapi as seal
from he_federation import MAX_ATTEMPTS, context, params

from he.context import HEContext
from he.encoding import UpdateEncoder, WeightScaleError, weight_scale_for
from he.errors import EncodingError, InsecureParametersError
from he.params import MAX_COMMITTEE, MAX_EXAMPLES, PRESETS, preset

PRECISE = PRESETS["precise"]


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


def test_small_preset_is_128_bit_with_compacts_noise_room():
    """N=8192 at exactly SEAL's 128-bit bound, with two 60-bit noise primes (118 bits: room for the
    share check's gains, ``he.share_check``); 4 more modulus bits are refused; a full ciphertext is
    3.5x smaller than compact's."""
    small, compact = PRESETS["small"], PRESETS["compact"]
    limit = seal.CoeffModulus.MaxBitCount(8192, seal.SEC_LEVEL_TYPE.TC128)
    assert sum(small.coeff_modulus_bits) == limit == 218
    assert (small.max_parties, small.slot_bits, small.fields_per_prime) == (32, 15, 2)
    assert small.values_per_ciphertext == 32_768 and small.ciphertext_bytes == 245_760
    assert compact.ciphertext_bytes == 860_160
    assert small.decryption_noise_bits(MAX_COMMITTEE, 16) + 2 == 96 <= small.noise_modulus_bits == 118
    with pytest.raises(InsecureParametersError, match="222 modulus bits at N=8192 is below 128-bit security"):
        dataclasses.replace(small, coeff_modulus_bits=(44, 40, 60, 60, 18))
    statistics = small.for_feature_statistics()
    assert statistics.slot_bits == 39 and statistics.fields_per_prime == 1
    ctx = context("small")
    assert ctx.n == 8192 and [int(q).bit_length() for q in ctx.data_moduli] == [40, 40, 60, 60]


def test_unknown_preset_refused():
    with pytest.raises(
        InsecureParametersError, match=r"unknown HE preset 'fast'.*\['compact', 'precise', 'small'\]"
    ):
        preset("fast")
    assert preset("precise") is PRECISE


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
    grid = (fields.shape[0], p.poly_modulus_degree, encoder.num_payload_primes, p.fields_per_prime)
    c, j, r, f = np.unravel_index(index, grid)  # the order in which ``UpdateEncoder._pack`` fills fields
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

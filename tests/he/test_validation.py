"""One negative test per refusal of ``he``: parameters, wire frames, sums, encodings, shares."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from conftest import TEST_PARAMS, random_updates

from he import keygen, wire
from he.ciphertext import CiphertextSum, EncryptedUpdate, UpdateEncryptor
from he.context import HEContext
from he.decrypt import DecryptionShare, combine
from he.errors import (
    CiphertextError,
    EncodingError,
    HEError,
    InsecureParametersError,
    ShareMismatchError,
)
from he.params import PRESETS, HEParams, preset

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
        ({"noise_primes": 4}, "at least one payload prime"),
        ({"noise_primes": 0}, "at least one payload prime"),
        ({"clip": float("inf")}, "clip must be a positive finite"),
        ({"clip": 0.0}, "clip must be a positive finite"),
        ({"max_parties": 0}, "must be positive"),
        ({"max_samples_per_party": 0}, "must be positive"),
    ],
)
def test_inconsistent_parameters_refused(changes, message):
    with pytest.raises(InsecureParametersError, match=message):
        params(**changes)


def test_threshold_above_parties_refused():
    with pytest.raises(
        InsecureParametersError, match=r"threshold must be in \[1, 5\] for 5 hospitals, got 6"
    ):
        PRECISE.check_federation(5, 6)
    with pytest.raises(InsecureParametersError, match="got 0"):
        PRECISE.check_federation(5, 0)


def test_more_parties_than_max_parties_refused():
    with pytest.raises(InsecureParametersError, match="33 hospitals exceed max_parties=32"):
        PRECISE.check_federation(33, 33)
    with pytest.raises(InsecureParametersError, match="11 hospitals exceed max_parties=10"):
        TEST_PARAMS.check_federation(11, 6)


def test_seven_of_twelve_overflows_precise_noise_primes():
    with pytest.raises(
        InsecureParametersError, match=r"7-of-12 decryption noise needs .* noise primes hold 118"
    ):
        PRECISE.check_federation(12, 7)
    PRECISE.check_federation(12, 12)  # n-of-n has no Lagrange blow-up
    PRECISE.check_federation(11, 6)  # fewer hospitals fit


def test_unknown_preset_refused():
    with pytest.raises(InsecureParametersError, match=r"unknown HE preset 'fast'.*\['compact', 'precise'\]"):
        preset("fast")
    assert preset("precise") is PRECISE


# -- encrypted updates on the wire ------------------------------------------------------------


@pytest.fixture(scope="module")
def encrypted(federation5):
    """A fresh encrypted update (2 arrays) and its bytes."""
    updates, counts = random_updates(TEST_PARAMS, 1, (50, 7), seed=11)
    update, clipped = UpdateEncryptor(federation5.ctx, federation5.public_key).encrypt(updates[0], counts[0])
    assert clipped == 0
    return update, update.to_bytes(federation5.ctx)


def test_encrypted_update_round_trip(test_ctx, encrypted):
    update, blob = encrypted
    back = EncryptedUpdate.from_bytes(test_ctx, blob, "h1")
    assert back.layout == update.layout
    assert back.contributors == 1
    assert np.array_equal(back.polys, update.polys)


def test_foreign_ciphertext_refused(test_ctx, encrypted):
    _, blob = encrypted
    other = HEContext(params(name="test-other", clip=32.0))  # same primes, other parameters
    assert np.array_equal(other.data_moduli, test_ctx.data_moduli)
    with pytest.raises(
        CiphertextError,
        match="encrypted update from h7: made under other HE parameters "
        r"\(fingerprint [0-9a-f]{32}, expected",
    ):
        EncryptedUpdate.from_bytes(other, blob, "h7")
    total = CiphertextSum(other)
    with pytest.raises(CiphertextError, match=r"h7.*fingerprint"):
        total.add("h7", blob)
    assert total.contributors == []


def _flip_last_residue(blob: bytes, value: int) -> bytes:
    """Set the frame's last residue (values past the 60-bit wire width saturate to 2^60-1)."""
    pair = wire.unpack_residues(blob[-15:], 2)
    pair[1] = min(value, (1 << wire.RESIDUE_BITS) - 1)
    return blob[:-15] + wire.pack_residues(pair)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda b: _flip_last_residue(b, (1 << 64) - 1), "residues out of range for their primes"),
        (lambda b: b[:-1], "residue block of"),
        (lambda b: b[:-8 * 4096], "residue block of"),
        (lambda b: b + b"\0" * 8, "residue block of"),
        (lambda b: b[:20], "too short for a fedquorum frame"),
        (lambda b: b"", "too short"),
        (lambda b: b"FQHX" + b[4:], "bad magic or version"),
        (lambda b: b[:4] + bytes([wire.VERSION + 1]) + b[5:], "bad magic or version"),
        (lambda b: b[:5] + bytes([wire.Kind.DECRYPTION_SHARE]) + b[6:], "ENCRYPTED_UPDATE frame, got kind 3"),
        (lambda b: b[:26] + b"x" + b[27:], "unreadable frame metadata"),
    ],
    ids=["u64-max", "truncated-1", "truncated-poly", "extended", "header-only", "empty",
         "bad-magic", "bad-version", "wrong-kind", "bad-json"],
)  # fmt: skip
def test_corrupt_encrypted_update_refused(test_ctx, encrypted, corrupt, message):
    _, blob = encrypted
    with pytest.raises(CiphertextError, match=message):
        EncryptedUpdate.from_bytes(test_ctx, corrupt(blob), "h3")
    total = CiphertextSum(test_ctx)
    with pytest.raises(CiphertextError, match="h3"):
        total.add("h3", corrupt(blob))


def test_residue_equal_to_prime_refused(test_ctx, encrypted):
    _, blob = encrypted
    q_last = int(test_ctx.data_moduli[-1])
    with pytest.raises(CiphertextError, match="out of range"):
        EncryptedUpdate.from_bytes(test_ctx, _flip_last_residue(blob, q_last), "h3")
    EncryptedUpdate.from_bytes(test_ctx, _flip_last_residue(blob, q_last - 1), "h3")  # q-1 is valid


def _reframe(update: EncryptedUpdate, ctx, meta: dict, polys: np.ndarray | None = None) -> bytes:
    return wire.pack(
        wire.Kind.ENCRYPTED_UPDATE, ctx.fingerprint, meta, update.polys if polys is None else polys
    )


def test_bad_metadata_refused(test_ctx, encrypted):
    update, _ = encrypted
    layout = update.layout.to_json()
    cases = [
        ({"contributors": 1}, "lacks a valid layout"),
        ({"layout": layout}, "lacks a valid layout or contributor count"),
        ({"layout": layout, "contributors": "x"}, "contributor count"),
        ({"layout": "nonsense", "contributors": 1}, "layout"),
        ({"layout": layout, "contributors": 0}, "expected"),
        ({"layout": {**layout, "clip": -1.0}, "contributors": 1}, "lacks a valid layout"),
        (
            {"layout": {"shapes": [[100000]], "clip": 1.0}, "contributors": 1},
            r"shape \(1, 2, 4, 4096\), expected \(13, 2, 4, 4096\)",
        ),
    ]
    for meta, message in cases:
        with pytest.raises(CiphertextError, match=message):
            EncryptedUpdate.from_bytes(test_ctx, _reframe(update, test_ctx, meta), "h2")
    doubled = np.concatenate([update.polys, update.polys])
    with pytest.raises(CiphertextError, match="expected"):
        EncryptedUpdate.from_bytes(
            test_ctx, _reframe(update, test_ctx, {"layout": layout, "contributors": 1}, doubled), "h2"
        )
    # residues framed for 3 primes instead of 4
    with pytest.raises(CiphertextError, match="expected 4 primes"):
        EncryptedUpdate.from_bytes(
            test_ctx,
            _reframe(update, test_ctx, {"layout": layout, "contributors": 1}, update.polys[:, :, :3]),
            "h2",
        )


def test_wrong_layout_in_sum_names_contributor_and_keeps_sum(federation5, encrypted):
    ctx = federation5.ctx
    update, blob = encrypted
    encryptor = UpdateEncryptor(ctx, federation5.public_key)
    other, _ = encryptor.encrypt([np.zeros(50), np.zeros(8)], 10)  # 58 values instead of 57
    total = CiphertextSum(ctx)
    total.add("hospital-a", blob)
    with pytest.raises(
        CiphertextError, match=r"from hospital-b: layout \(\(50,\), \(8,\)\) with clip 64.0 differs"
    ):
        total.add("hospital-b", other.to_bytes(ctx))
    narrower, _ = encryptor.encrypt([np.zeros(50), np.zeros(7)], 10, clip=0.5)
    with pytest.raises(CiphertextError, match=r"with clip 0.5 differs from the round's"):
        total.add("hospital-c", narrower.to_bytes(ctx))
    assert total.contributors == ["hospital-a"]
    assert total.result.contributors == 1
    assert np.array_equal(total.result.polys, update.polys)


def test_duplicate_contributor_refused(test_ctx, encrypted):
    update, blob = encrypted
    total = CiphertextSum(test_ctx)
    total.add("hospital-a", blob)
    with pytest.raises(CiphertextError, match="from hospital-a: a second update this round"):
        total.add("hospital-a", blob)
    assert total.contributors == ["hospital-a"]
    assert np.array_equal(total.result.polys, update.polys)


def test_empty_sum_has_no_result(test_ctx):
    with pytest.raises(CiphertextError, match="no valid encrypted update"):
        _ = CiphertextSum(test_ctx).result


# -- encoding ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encryptor(federation5):
    return UpdateEncryptor(federation5.ctx, federation5.public_key)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_update_refused(encryptor, bad):
    values = np.zeros(20)
    values[13] = bad
    with pytest.raises(EncodingError, match="update array 1 contains NaN or Inf"):
        encryptor.encrypt([np.zeros(3), values], 10)


@pytest.mark.parametrize("arrays", [[], [np.array(["a", "b"])]], ids=["empty", "strings"])
def test_non_numeric_or_empty_update_refused(encryptor, arrays):
    with pytest.raises(EncodingError):
        encryptor.encrypt(arrays, 10)


@pytest.mark.parametrize("count", [0, -1, TEST_PARAMS.max_samples_per_party + 1, 2**70, True, 3.0, "5"])
def test_num_examples_out_of_range_refused(encryptor, count):
    with pytest.raises(EncodingError, match="num_examples"):
        encryptor.encrypt([np.zeros(4)], count)


def test_num_examples_at_the_bounds_accepted(encryptor):
    for count in (1, TEST_PARAMS.max_samples_per_party, np.int64(7)):
        encryptor.encrypt([np.zeros(4)], count)


def test_clipped_values_are_counted(encryptor):
    _, clipped = encryptor.encrypt([np.array([0.0, 64.0, 64.5, -65.0, -1e9])], 1)
    assert clipped == 3


# -- key shares, secret shares and decryption shares on the wire ---------------------------------


def test_public_key_share_round_trip_and_corruption(federation5):
    ctx = federation5.ctx
    share = federation5.key_shares[0]
    blob = share.to_bytes(ctx)
    assert np.array_equal(keygen.PublicKeyShare.from_bytes(ctx, blob, "h1").p0, share.p0)
    with pytest.raises(CiphertextError, match="key share of h1: residue block"):
        keygen.PublicKeyShare.from_bytes(ctx, blob[:-8], "h1")
    with pytest.raises(CiphertextError, match="key share of h1: residues out of range"):
        keygen.PublicKeyShare.from_bytes(ctx, _flip_last_residue(blob, int(ctx.key_moduli[-1])), "h1")
    two = wire.pack(wire.Kind.PUBLIC_KEY_SHARE, ctx.fingerprint, {}, np.stack([share.p0, share.p0]))
    with pytest.raises(CiphertextError, match="expected one key-level polynomial"):
        keygen.PublicKeyShare.from_bytes(ctx, two, "h1")
    with pytest.raises(CiphertextError, match="expected a PUBLIC_KEY_SHARE frame"):
        keygen.PublicKeyShare.from_bytes(
            ctx, keygen.secret_share_to_bytes(ctx, federation5.shamir(3)[1]), "h1"
        )
    # data-level residues (one prime short) are refused as a key share
    data_level = wire.pack(wire.Kind.PUBLIC_KEY_SHARE, ctx.fingerprint, {}, share.p0[None, :-1])
    with pytest.raises(CiphertextError, match="expected 5 primes"):
        keygen.PublicKeyShare.from_bytes(ctx, data_level, "h1")


def test_secret_share_round_trip_and_corruption(federation5):
    ctx = federation5.ctx
    dealt = keygen.deal_secret_shares(ctx, federation5.secrets[0], 3, federation5.points)
    for j, share in dealt.items():
        blob = keygen.secret_share_to_bytes(ctx, share)
        assert np.array_equal(keygen.secret_share_from_bytes(ctx, blob, f"h{j}"), share)
    blob = keygen.secret_share_to_bytes(ctx, dealt[2])
    with pytest.raises(CiphertextError, match="secret share from h2: residue block"):
        keygen.secret_share_from_bytes(ctx, blob[:-1], "h2")
    with pytest.raises(CiphertextError, match="secret share from h2: residues out of range"):
        keygen.secret_share_from_bytes(ctx, _flip_last_residue(blob, (1 << 64) - 1), "h2")
    with pytest.raises(CiphertextError, match="expected a SECRET_SHARE frame"):
        keygen.secret_share_from_bytes(ctx, federation5.key_shares[0].to_bytes(ctx), "h2")
    two = wire.pack(wire.Kind.SECRET_SHARE, ctx.fingerprint, {}, np.stack([dealt[1], dealt[2]]))
    with pytest.raises(CiphertextError, match="expected one data-level polynomial"):
        keygen.secret_share_from_bytes(ctx, two, "h2")
    other = HEContext(params(name="test-other", max_parties=9))
    with pytest.raises(CiphertextError, match="fingerprint"):
        keygen.secret_share_from_bytes(other, blob, "h2")


@pytest.fixture(scope="module")
def decryption_round(federation5):
    updates, counts = random_updates(TEST_PARAMS, 5, (30,), seed=12)
    aggregate = federation5.encrypt_all(updates, counts)
    return aggregate, federation5.decryption_shares(aggregate, [1, 2, 3], 3, round_id=4)


def test_decryption_share_round_trip_and_corruption(test_ctx, decryption_round):
    _, shares = decryption_round
    share = shares[1]
    blob = share.to_bytes(test_ctx)
    back = DecryptionShare.from_bytes(test_ctx, blob, "h2")
    assert (back.party, back.round_id) == (2, 4)
    assert np.array_equal(back.polys, share.polys)
    with pytest.raises(CiphertextError, match="decryption share from h2: residue block"):
        DecryptionShare.from_bytes(test_ctx, blob[:-16], "h2")
    with pytest.raises(CiphertextError, match="decryption share from h2: residues out of range"):
        DecryptionShare.from_bytes(test_ctx, _flip_last_residue(blob, (1 << 63)), "h2")
    no_party = wire.pack(wire.Kind.DECRYPTION_SHARE, test_ctx.fingerprint, {"round": 4}, share.polys)
    with pytest.raises(CiphertextError, match="lacks party or round"):
        DecryptionShare.from_bytes(test_ctx, no_party, "h2")
    with pytest.raises(CiphertextError, match="expected a DECRYPTION_SHARE frame"):
        DecryptionShare.from_bytes(test_ctx, keygen.secret_share_to_bytes(test_ctx, share.polys[0]), "h2")


def test_mismatched_decryption_shares_refused(test_ctx, decryption_round):
    aggregate, shares = decryption_round
    with pytest.raises(ShareMismatchError, match=r"distinct integers in \[1, 5\], got \[1, 2, 2\]"):
        combine(test_ctx, aggregate, [shares[0], shares[1], shares[1]], 5, 3)
    outside = DecryptionShare(6, 4, shares[2].polys)
    with pytest.raises(ShareMismatchError, match=r"got \[1, 2, 6\]"):
        combine(test_ctx, aggregate, [shares[0], shares[1], outside], 5, 3)
    zero = DecryptionShare(0, 4, shares[2].polys)
    with pytest.raises(ShareMismatchError, match=r"got \[1, 2, 0\]"):
        combine(test_ctx, aggregate, [shares[0], shares[1], zero], 5, 3)
    wrong_shape = DecryptionShare(3, 4, np.concatenate([shares[2].polys, shares[2].polys]))
    with pytest.raises(ShareMismatchError, match="decryption share of party 3: shape"):
        combine(test_ctx, aggregate, [shares[0], shares[1], wrong_shape], 5, 3)


def test_crs_contributions_must_be_32_bytes():
    with pytest.raises(ShareMismatchError, match="32 bytes"):
        keygen.crs_seed([keygen.fresh_contribution(), b"short"])
    with pytest.raises(ShareMismatchError):
        keygen.crs_seed([])


# -- no secret in any error message --------------------------------------------------------------

# Residues under the 60-bit primes are >= 2^32 with overwhelming probability and print as 10+
# digit numbers; the 18-bit special-prime row of a secret is not checked (any 5-digit number,
# e.g. inside a hex fingerprint, would match one of its residues by chance).
BIG_NUMBER = re.compile(r"\d{10,}")


def _errors_about_secrets(fed) -> list[BaseException]:
    """Every refusal that can be triggered with secret material as the input."""
    ctx = fed.ctx
    shamir = fed.shamir(3)[1]
    blob = keygen.secret_share_to_bytes(ctx, shamir)
    bad_inputs = [
        lambda: keygen.secret_share_from_bytes(ctx, blob[:-8], "h1"),
        lambda: keygen.secret_share_from_bytes(ctx, _flip_last_residue(blob, (1 << 64) - 1), "h1"),
        lambda: keygen.secret_share_from_bytes(ctx, blob[:8] + blob[9:], "h1"),
        lambda: keygen.secret_share_from_bytes(
            ctx, wire.pack(wire.Kind.SECRET_SHARE, ctx.fingerprint, {}, np.stack([shamir, shamir])), "h1"
        ),
        lambda: keygen.secret_share_from_bytes(
            HEContext(params(name="test-other", clip=1.0)), blob, "h1"
        ),
        lambda: keygen.PublicKeyShare.from_bytes(ctx, blob, "h1"),
        lambda: EncryptedUpdate.from_bytes(ctx, blob, "h1"),
        lambda: DecryptionShare.from_bytes(
            ctx, wire.pack(wire.Kind.DECRYPTION_SHARE, ctx.fingerprint, {"party": "x"}, shamir[None]), "h1"
        ),
        lambda: wire.unpack(
            wire.pack(wire.Kind.SECRET_SHARE, ctx.fingerprint, {}, fed.secrets[0].residues[None]),
            wire.Kind.SECRET_SHARE, ctx.fingerprint, ctx.data_moduli, "secret key",
        ),
    ]  # fmt: skip
    errors = []
    for bad in bad_inputs:
        with pytest.raises(HEError) as info:
            bad()
        errors.append(info.value)
    return errors


def leaked(text: str, secret_values: set[int]) -> set[int]:
    return {int(m) for m in BIG_NUMBER.findall(text)} & secret_values


def test_error_messages_never_contain_secret_residues(federation5):
    secret_values = set()
    for sk in federation5.secrets:
        secret_values |= set(sk.residues.ravel().tolist())
    for share in federation5.shamir(3).values():
        secret_values |= set(share.ravel().tolist())
    secret_values = {v for v in secret_values if v >= 1 << 32}
    assert len(secret_values) > 10_000
    errors = _errors_about_secrets(federation5)
    assert len(errors) == 9
    for err in errors:
        texts = [str(err), repr(err)]
        cause = err.__cause__
        while cause is not None:
            texts += [str(cause), repr(cause)]
            cause = cause.__cause__
        for text in texts:
            assert len(text) < 400, text  # nothing like a dump of an array
            assert not leaked(text, secret_values), text
    some_secret = max(secret_values)
    assert leaked(f"share residue {some_secret} out of range", secret_values) == {some_secret}
    assert repr(federation5.secrets[0]) == "SecretKeyShare(<secret>)"
    assert str(federation5.secrets[0].residues[0, 5]) not in repr(federation5.secrets[0])
    assert "residues" not in repr(federation5.secrets[0])


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


def test_aggregate_c1_frame_round_trips_and_refuses_foreign_or_corrupt(test_ctx, encrypted) -> None:
    from he.ciphertext import c1_from_bytes, c1_to_bytes

    update, _ = encrypted
    frame = c1_to_bytes(test_ctx, update)
    assert np.array_equal(c1_from_bytes(test_ctx, frame, "server"), update.c1)
    with pytest.raises(CiphertextError, match=r"aggregate from server.*out of range"):
        c1_from_bytes(test_ctx, _flip_last_residue(frame, (1 << 64) - 1), "server")
    other = HEContext(dataclasses.replace(test_ctx.params, clip=1.0))
    with pytest.raises(CiphertextError, match="fingerprint"):
        c1_from_bytes(other, frame, "server")
    with pytest.raises(CiphertextError, match="expected a CIPHERTEXT_SUM frame"):
        c1_from_bytes(test_ctx, update.to_bytes(test_ctx), "server")


def test_round_clip_may_only_narrow_the_presets(test_ctx) -> None:
    from he.encoding import UpdateEncoder

    encoder = UpdateEncoder(test_ctx.params, test_ctx.num_payload)
    rng = np.random.default_rng(0)
    for bad in (0.0, -1.0, test_ctx.params.clip * 2):
        with pytest.raises(EncodingError, match=r"clip must be in \(0, 64.0\]"):
            encoder.encode([np.zeros(3)], 5, rng, clip=bad)


def test_a_narrower_round_clip_shrinks_the_quantization_error() -> None:
    from he.encoding import UpdateEncoder
    from he.params import preset

    params = preset("compact")
    encoder = UpdateEncoder(params, len(params.payload_prime_bits))
    values = np.random.default_rng(1).uniform(-0.04, 0.04, 5000)
    errors = {}
    for clip in (params.clip, 0.05):
        encoded = encoder.encode([values], 500, np.random.default_rng(2), clip=clip)
        (decoded,), _ = encoder.decode(encoded.fields, encoded.layout, 1)
        errors[clip] = np.max(np.abs(decoded - values))
    assert errors[0.05] < errors[params.clip] / 10

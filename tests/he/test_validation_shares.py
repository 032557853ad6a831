"""One negative test per refusal about key and decryption shares: corrupt dealt secret shares,
bad thresholds and Shamir points, decryption shares that are corrupt, for another round or
attempt, of the wrong shape, not exactly from the decryption set or altered on a noise prime,
and shares that cannot be generated; and no secret (residue, seed) in any error message or repr.

Parameters and encodings are in ``test_validation_params.py``; malformed encrypted updates and
wire frames in ``test_validation_wire.py``.
The refusals of ``he.roster``, ``he.identity`` and ``he.transcript`` are in ``test_roster.py``,
``test_identity.py`` and ``test_transcript.py``; those of ``he.channel`` in ``test_channel.py``.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from he_federation import TEST_PARAMS, _set_last_residue, params, random_updates

from he import keygen, wire
from he.ciphertext import EncryptedUpdate, SecretKeyEncryptor
from he.context import HEContext
from he.decrypt import DecryptionShare, combine, gen_decryption_share, pairwise_masks, sample_smudging_noise
from he.errors import CiphertextError, HEError, ShareMismatchError
from he.threshold import lagrange_coefficient, sum_shares, validate_points

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
    shape = rf"\(2, 4, {request.coefficients}\)"
    with pytest.raises(ShareMismatchError, match=rf"decryption share of party 3: shape {shape}"):
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
    see docs/security.md and test_attacks_coordinator.test_tampered_shares.)"""
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
    c1 = np.zeros((aggregate.num_ciphertexts, len(ctx.data_moduli), ctx.n), dtype=np.uint64)
    key = fed.key_share(5, fed.parties)
    masks = pairwise_masks(ctx, 1, fed.mask_keys(1, [1, 2, 3, 4]), request)
    with pytest.raises(ShareMismatchError, match=r"party 5 is not in the decryption set \[1, 2, 3, 4\]"):
        gen_decryption_share(ctx, request, 5, c1, key, masks, fed.smudging_bits)
    with pytest.raises(ShareMismatchError, match="do not match the request"):
        gen_decryption_share(ctx, request, 1, np.concatenate([c1, c1]), key, masks, fed.smudging_bits)
    beyond = dataclasses.replace(request, coefficients=ctx.n + 2)
    with pytest.raises(ShareMismatchError, match=f"a request for {ctx.n + 2} coefficients; a ciphertext has"):
        gen_decryption_share(ctx, beyond, 1, c1, key, masks, fed.smudging_bits)
    with pytest.raises(ShareMismatchError, match=r"no pairwise mask key with keyholders \[3, 4\]"):
        pairwise_masks(ctx, 1, fed.mask_keys(1, [1, 2]), request)
    with pytest.raises(ValueError, match="smudging of 121 bits exceeds the 120 bits"):
        sample_smudging_noise(ctx, 1, ctx.n, 121)


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

"""End-to-end threshold protocol v2, aggregation and decryption: who can decrypt a round, what it
decrypts to, and how much noise it carries.

Every quorum-valid decryption set of a 3-of-5 committee decrypts (in any order of arrival, to
identical field sums), as do 8 and 10 of a 6-of-10 and a committee smaller than the federation;
a set below the quorum minimum is refused by the rule (the algebra alone would decrypt it);
t_K - 1 keyholders, a missing member, the wrong label or another contributor set fail the
noise bound instead of decoding garbage. The measured decryption and encryption noise stay
within their documented bounds; the pairwise masks of a decryption set cancel while one masked
share hides the key product; one 3-of-5 round each under the real ``precise``, ``compact`` and
``small`` presets decrypts within the quantization tolerance; the compact preset decodes exactly
at ``max_parties`` contributors; and the quantization error stays within its bound,
stochastic rounding unbiased.

Most tests run under the insecure fast ``TEST_PARAMS`` (``tests/he_federation.py``). Key
set-up, the seeded ``c1``, the PRF and the noise samplers are in ``test_protocol_keys.py``.
"""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest
from he_federation import (
    TEST_PARAMS,
    average_tolerance,
    build_federation,
    centered,
    context,
    crt_centered,
    max_abs_error,
    oracle_plaintext,
    random_updates,
    weighted_average,
)

from he.ciphertext import CiphertextLabel, seeded_c1
from he.decrypt import DecryptionRequest, combine, decrypt_update, pairwise_masks
from he.encoding import UpdateEncoder, weight_scale_for
from he.errors import RosterError, ShareMismatchError
from he.modarith import addmod, mulmod, submod
from he.params import ENCRYPTION_NOISE_BOUND
from he.threshold import lagrange_residues

SIZES = (700, 33, 5000)  # three arrays, 5733 values: one ciphertext under TEST_PARAMS


# -- helpers -----------------------------------------------------------------------------------


def phase(ctx, aggregate, shares) -> np.ndarray:
    """``C0 + sum_k d_k`` (coefficient form, like the shares): message plus total noise, ``[m, L, k]``."""
    total = aggregate.c0
    for share in shares:
        total = addmod(total, share.polys, ctx.data_moduli)
    return total


def noise_of(ctx, coefficients: np.ndarray) -> np.ndarray:
    """The signed noise read off the noise primes (the message is zero there)."""
    rows = [coefficients[:, ctx.num_payload + k] for k in range(len(ctx.noise_moduli))]
    return crt_centered(rows, [int(q) for q in ctx.noise_moduli])


def expected_fields(params, updates, counts) -> np.ndarray:
    """The exact sum of the packed fields (round-to-nearest is deterministic), as Python ints."""
    encoder = UpdateEncoder(params, len(params.payload_prime_bits))
    return sum(
        encoder.encode(u, c, np.random.default_rng()).fields.astype(object)
        for u, c in zip(updates, counts, strict=True)
    )


def tolerance(params, updates, counts) -> tuple[list[np.ndarray], float]:
    """The plaintext FedAvg answer, and the error ``average_tolerance`` allows for it."""
    return weighted_average(updates, counts), average_tolerance(params, counts)


# -- correctness -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def round5(federation5):
    """A 3-of-5 round: every hospital contributes; the aggregate and the plaintext answer."""
    updates, counts = random_updates(TEST_PARAMS, 5, SIZES, seed=2)
    aggregate = federation5.encrypt_all(updates, counts)
    want, tol = tolerance(TEST_PARAMS, updates, counts)
    assert tol < 1e-9  # 54-bit fields: the error budget is far below float32 resolution
    return aggregate, updates, counts, want, tol


ALLOWED_SETS_3_OF_5 = [
    subset for size in (4, 5) for subset in itertools.combinations(range(1, 6), size)
]  # quorum minimum ceil((5 + 3) / 2) = 4


def test_allowed_sets_are_exactly_those_of_four_or_five(federation5):
    quorum = federation5.quorum
    assert quorum.min_decryption_set == 4
    everything = [s for size in range(1, 6) for s in itertools.combinations(range(1, 6), size)]
    allowed = []
    for subset in everything:
        with contextlib.suppress(RosterError):
            allowed.append(quorum.check_decryption_set(list(reversed(subset))))
    assert allowed == ALLOWED_SETS_3_OF_5
    assert len(allowed) == 6


@pytest.mark.parametrize("keyholders", ALLOWED_SETS_3_OF_5, ids=str)
def test_every_allowed_three_of_five_decryption_set_decrypts(federation5, round5, keyholders):
    aggregate, _, counts, want, tol = round5
    ctx = federation5.ctx
    request = federation5.request(aggregate, federation5.parties, keyholders)
    shares = federation5.shares(request)[::-1]  # the order of arrival must not matter
    arrays, total = decrypt_update(
        ctx, aggregate, combine(ctx, aggregate, shares, request, federation5.noise_bits)
    )
    assert max_abs_error(arrays, want) <= tol
    assert total == sum(counts)  # the counts travel exactly


def test_two_decryption_sets_give_identical_field_sums(federation5, round5):
    """Decoding is exact: the flooding and the masks vanish, so T = {1,2,3,4} and {2,3,4,5}
    (and a second attempt of the first) reveal the same integers, which are the packed sums."""
    aggregate, updates, counts, _, _ = round5
    ctx = federation5.ctx
    results = []
    for keyholders, attempt in [((1, 2, 3, 4), 1), ((2, 3, 4, 5), 1), ((1, 2, 3, 4), 2)]:
        request = federation5.request(aggregate, federation5.parties, keyholders, attempt=attempt)
        results.append(combine(ctx, aggregate, federation5.shares(request), request, federation5.noise_bits))
    assert np.array_equal(results[0], results[1])
    assert np.array_equal(results[0], results[2])
    assert np.array_equal(results[0].astype(object), expected_fields(TEST_PARAMS, updates, counts))


def test_six_of_ten_decrypts_with_eight_and_with_ten(federation10):
    updates, counts = random_updates(TEST_PARAMS, 10, SIZES, seed=1)
    aggregate = federation10.encrypt_all(updates, counts)
    assert aggregate.contributors == 10
    want, tol = tolerance(TEST_PARAMS, updates, counts)
    assert federation10.quorum.min_decryption_set == 8
    for keyholders in ([2, 3, 4, 5, 7, 8, 9, 10], federation10.parties):
        arrays, total = federation10.decrypt(aggregate, federation10.parties, keyholders)
        assert max_abs_error(arrays, want) <= tol
        assert total == sum(counts)


def test_committee_smaller_than_federation_and_partial_contributors(test_ctx):
    """Seven hospitals, a 2-of-4 committee (quorum 3); five hospitals contribute, including
    non-keyholders, and a keyholder that did not contribute helps decrypt."""
    fed = build_federation(test_ctx, 7, threshold=2, committee_size=4)
    assert fed.quorum.committee == (1, 2, 3, 4)
    assert fed.quorum.min_decryption_set == 3
    contributors = [1, 3, 4, 6, 7]
    updates, counts = random_updates(TEST_PARAMS, 5, (400,), seed=8)
    aggregate = fed.encrypt_all(updates, counts, contributors=contributors)
    want, tol = tolerance(TEST_PARAMS, updates, counts)
    arrays, _ = fed.decrypt(aggregate, contributors, fed.quorum.check_decryption_set([4, 2, 1]))
    assert max_abs_error(arrays, want) <= tol


def test_decryption_set_below_the_quorum_minimum_is_refused(federation5, round5):
    """{1,3,5} holds t_K = 3 shares, enough for the algebra, but two such sets could be disjoint
    in honest keyholders: the quorum rule refuses it, it is not the threshold that does."""
    aggregate, _, _, want, tol = round5
    with pytest.raises(RosterError, match=r"3 keyholders is below the quorum-intersection minimum .* = 4"):
        federation5.quorum.check_decryption_set([1, 3, 5])
    arrays, _ = federation5.decrypt(aggregate, federation5.parties, [1, 3, 5])
    assert max_abs_error(arrays, want) <= tol  # hence the rule must be (and is) a separate check


@pytest.mark.parametrize("keyholders", [(1, 2), (2, 5), (3, 4)], ids=str)
def test_fewer_than_threshold_keyholders_cannot_decrypt(federation5, round5, keyholders):
    """t_K - 1 = 2 keyholders, their shares weighted with the Lagrange coefficients of their
    own pair (as if the threshold were 2): the result is not the message, and ``combine``
    refuses it on the noise bound instead of decoding garbage."""
    aggregate, _, _, _, _ = round5
    ctx = federation5.ctx
    request = federation5.request(aggregate, federation5.parties, keyholders)
    with pytest.raises(ShareMismatchError, match=r"decryption noise of 2\^\d+\.\d exceeds its bound"):
        combine(ctx, aggregate, federation5.shares(request), request, federation5.noise_bits)
    # The oracle agrees: two points of a degree-2 Shamir polynomial do not give s_U.
    moduli = ctx.data_moduli
    s_u = federation5.secret_sum(federation5.parties)
    for points, recovered in [(keyholders, False), ((*keyholders, 3 if 3 not in keyholders else 1), True)]:
        total = np.zeros_like(s_u)
        for k in points:
            share = federation5.key_share(k, federation5.parties)
            total = addmod(
                total,
                mulmod(share, np.broadcast_to(lagrange_residues(k, points, moduli), share.shape), moduli),
                moduli,
            )
        assert np.array_equal(total, s_u) == recovered


def test_missing_member_of_the_decryption_set_is_refused(federation5, round5):
    aggregate, _, _, _, _ = round5
    ctx = federation5.ctx
    request = federation5.request(aggregate, federation5.parties, (1, 2, 3, 4))
    shares = federation5.shares(request)
    with pytest.raises(ShareMismatchError, match=r"every member of T=\[1, 2, 3, 4\], got \[1, 2, 4\]"):
        combine(ctx, aggregate, [shares[0], shares[1], shares[3]], request, federation5.noise_bits)
    # Relabelling the three answers as a request for T = {1, 2, 4} does not help: their masks
    # and Lagrange weights were made for the set of four, so the noise bound refuses them.
    smaller = federation5.request(aggregate, federation5.parties, (1, 2, 4))
    with pytest.raises(ShareMismatchError, match="exceeds its bound"):
        combine(ctx, aggregate, [shares[0], shares[1], shares[3]], smaller, federation5.noise_bits)


@pytest.mark.parametrize(
    "other",
    [
        {"round_id": 2},
        {"run_id": b"another-run-id"},
        {"kind": "statistics"},
        {"federation_id": "another-federation"},
    ],
    ids=["round", "run", "kind", "federation"],
)
def test_decryption_under_the_wrong_label_fails_the_noise_bound(federation5, round5, other):
    aggregate, _, _, _, _ = round5
    fed = federation5
    label = fed.label()
    wrong = CiphertextLabel(
        other.get("federation_id", label.federation_id),
        other.get("run_id", label.run_id),
        other.get("kind", label.kind),
        other.get("round_id", label.round_id),
    )
    request = fed.request(aggregate, fed.parties, (1, 2, 3, 4), label=wrong)
    with pytest.raises(ShareMismatchError, match="exceeds its bound"):
        combine(fed.ctx, aggregate, fed.shares(request), request, fed.noise_bits)


def test_decryption_for_another_contributor_set_fails_the_noise_bound(federation5):
    """The aggregate of U = {1,2,3} only decrypts under s_U: a request naming {1,2,3,4} (or
    {1,2}) makes keyholders use another key, and the result is refused, not decoded."""
    fed = federation5
    updates, counts = random_updates(TEST_PARAMS, 3, (100,), seed=9)
    aggregate = fed.encrypt_all(updates, counts, contributors=[1, 2, 3])
    want, tol = tolerance(TEST_PARAMS, updates, counts)
    arrays, _ = fed.decrypt(aggregate, [3, 2, 1], (2, 3, 4, 5))
    assert max_abs_error(arrays, want) <= tol
    for contributors in ([1, 2, 3, 4], [1, 2]):
        with pytest.raises(ShareMismatchError, match="exceeds its bound"):
            fed.decrypt(aggregate, contributors, (2, 3, 4, 5))


# -- measured noise -------------------------------------------------------------------------------


def test_measured_decryption_noise_within_documented_bound(federation5, round5):
    """Read the total noise E + sum_k F_k off the noise primes: below 2^noise_bits and of the
    size of the flooding; the payload minus that noise is exactly the packed sums and what
    ``combine`` returns."""
    aggregate, updates, counts, _, _ = round5
    fed = federation5
    ctx = fed.ctx
    request = fed.request(aggregate, fed.parties, (1, 2, 4, 5))
    shares = fed.shares(request)
    coefficients = phase(ctx, aggregate, shares)
    noise = noise_of(ctx, coefficients)
    measured = max(abs(int(v)) for v in noise.ravel())
    assert measured <= 4 * 2**fed.smudging_bits + 5 * ENCRYPTION_NOISE_BOUND  # four floods plus E
    assert measured <= 2**fed.noise_bits
    assert measured > 2 ** (fed.smudging_bits - 1)  # the flooding is really there
    fields = combine(ctx, aggregate, shares, request, fed.noise_bits)
    want = expected_fields(TEST_PARAMS, updates, counts)
    k = aggregate.coefficients
    assert k < ctx.n and not want[..., k:].any() and not fields[..., k:].any()  # no field beyond k
    for row, q in enumerate(ctx.payload_moduli.tolist()):
        stripped = (coefficients[:, row].astype(object) - noise) % q
        assert np.array_equal(stripped, fields[:, row, :k].astype(object))
        assert np.array_equal(stripped, want[:, row, :k] % q)
    # the check is live: a bound below the flooding refuses this very decryption
    with pytest.raises(ShareMismatchError, match="exceeds its bound"):
        combine(ctx, aggregate, shares, request, fed.smudging_bits - 1)


def test_measured_encryption_noise_of_ten_encryptions(federation10):
    """Decrypt with the test oracle s_U: C0 + c1*s_U = M + E with |E| <= 10 * 19, the same
    integer under both noise primes, and the payload residues are exactly M + E."""
    fed = federation10
    ctx = fed.ctx
    updates, counts = random_updates(TEST_PARAMS, 10, SIZES, seed=3)
    aggregate = fed.encrypt_all(updates, counts)
    coefficients = oracle_plaintext(ctx, aggregate, fed.secret_sum(fed.parties), fed.label())
    noise = [centered(coefficients[:, ctx.num_payload + k], int(q)) for k, q in enumerate(ctx.noise_moduli)]
    assert np.array_equal(noise[0], noise[1])
    measured = int(np.max(np.abs(noise[0])))
    assert 0 < measured <= 10 * ENCRYPTION_NOISE_BOUND < 2**TEST_PARAMS.ciphertext_noise_bits
    want = expected_fields(TEST_PARAMS, updates, counts)
    for row, q in enumerate(ctx.payload_moduli.tolist()):
        got = (coefficients[:, row].astype(object) - noise[0].astype(object)) % q
        assert np.array_equal(got, want[:, row, : aggregate.coefficients] % q)


# -- masks ---------------------------------------------------------------------------------------


def test_pairwise_masks_of_the_decryption_set_sum_to_zero(federation5):
    fed = federation5
    ctx = fed.ctx
    keyholders = (1, 3, 4, 5)
    request = DecryptionRequest(fed.label(), 1, tuple(fed.parties), keyholders, 2, ctx.n)
    masks = {k: pairwise_masks(ctx, k, fed.mask_keys(k, list(keyholders)), request) for k in keyholders}
    total = np.zeros_like(masks[1])
    for mask in masks.values():
        assert mask.shape == (2, len(ctx.data_moduli), ctx.n)
        assert np.mean(mask == 0) < 0.01  # each mask alone is uniform-looking, not zero
        total = addmod(total, mask, ctx.data_moduli)
    assert not total.any()
    # without one member the rest do not cancel
    partial = addmod(addmod(masks[1], masks[3], ctx.data_moduli), masks[4], ctx.data_moduli)
    assert np.mean(partial == 0) < 0.01
    # another attempt or another decryption set gives other masks
    for other in (
        DecryptionRequest(fed.label(), 2, tuple(fed.parties), keyholders, 2, ctx.n),
        DecryptionRequest(fed.label(), 1, tuple(fed.parties[:4]), keyholders, 2, ctx.n),
        DecryptionRequest(fed.label(), 1, tuple(fed.parties), keyholders, 2, ctx.n - 2),
    ):
        again = pairwise_masks(ctx, 1, fed.mask_keys(1, list(keyholders)), other)
        assert np.mean(again == masks[1][..., : other.coefficients]) < 0.01
    with pytest.raises(ShareMismatchError, match=r"no pairwise mask key with keyholders \[5\]"):
        pairwise_masks(ctx, 1, fed.mask_keys(1, [1, 3, 4]), request)


def test_a_decryption_share_alone_hides_the_key_product(federation5, round5):
    """One masked share is not lambda*[s_U]_k*c1 plus small noise: the mask covers it."""
    aggregate, _, _, _, _ = round5
    fed = federation5
    ctx = fed.ctx
    request = fed.request(aggregate, fed.parties, (1, 2, 3, 4))
    share = fed.share(2, request)
    c1 = seeded_c1(ctx, request.label, request.num_ciphertexts)
    key = fed.key_share(2, fed.parties)
    weighted = mulmod(
        key,
        np.broadcast_to(lagrange_residues(2, request.keyholders, ctx.data_moduli), key.shape),
        ctx.data_moduli,
    )
    product = ctx.intt(mulmod(c1, np.broadcast_to(weighted, c1.shape), ctx.data_moduli))
    difference = submod(share.polys, product[..., : request.coefficients], ctx.data_moduli)
    lifted = crt_centered([difference[:, 0], difference[:, 1]], [int(q) for q in ctx.data_moduli[:2]])
    assert max(abs(int(v)) for v in lifted.ravel()) > 2 ** (fed.smudging_bits + 20)  # far above the flooding


# -- real presets ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["precise", "compact", "small"])
def test_real_preset_three_of_five(name):
    ctx = context(name)
    fed = build_federation(ctx, 5, threshold=3)
    updates, counts = random_updates(ctx.params, 5, (300, 45), seed=5)
    aggregate = fed.encrypt_all(updates, counts)
    request = fed.request(aggregate, fed.parties, fed.quorum.check_decryption_set([5, 1, 3, 4]))
    shares = fed.shares(request)
    fields = combine(ctx, aggregate, shares, request, fed.noise_bits)
    arrays, total = decrypt_update(ctx, aggregate, fields)
    want, tol = tolerance(ctx.params, updates, counts)
    assert max(counts) > ctx.params.default_weight_scale > min(counts)  # weights above 1 and below
    assert tol < (1e-9 if name == "precise" else 2e-2)
    assert max_abs_error(arrays, want) <= tol
    assert total == sum(counts)  # the counts travel exactly, uncapped
    # the measured noise of this decryption against the preset's documented bound
    measured = max(abs(int(v)) for v in noise_of(ctx, phase(ctx, aggregate, shares)).ravel())
    assert 2 ** (fed.smudging_bits - 1) < measured <= 2**fed.noise_bits
    assert fed.noise_bits + 2 <= ctx.params.noise_modulus_bits


def test_compact_headroom_limit_decodes_exactly():
    """max_parties updates all at +clip (first half) and -clip (second half), all of weight 1.

    Each hospital's offset is then ``o = H`` and every packed value field of the aggregate sits
    at its extreme: max_parties * 2H = max_parties * (2^b - 2), or 0. The sum must decode
    exactly (no carry into a neighbouring field, no wrap modulo the prime). A 2-of-2 committee
    keeps the dealing cheap; every hospital still has its own secret.
    """
    ctx = context("compact")
    p = ctx.params
    assert p.max_parties == 128
    fed = build_federation(ctx, p.max_parties, threshold=2, committee_size=2)
    encoder = UpdateEncoder(p, ctx.num_payload)
    chunks = encoder.count_chunks
    size = p.values_per_ciphertext - 2 * chunks  # with the counts: every field of one ciphertext
    signs = np.where(np.arange(size) < size // 2, 1.0, -1.0)
    # beyond the clip range (clipped to exactly +-clip); counts at the weight scale: w = 1
    count = p.default_weight_scale
    updates = [[signs * p.clip * (1 + k / 10)] for k in range(p.max_parties)]
    aggregate = fed.encrypt_all(updates, [count] * p.max_parties)
    assert len(aggregate.c0) == 1 and aggregate.contributors == p.max_parties
    p.check_contributors(aggregate.contributors)
    request = fed.request(aggregate, fed.parties, (1, 2))
    fields = combine(ctx, aggregate, fed.shares(request), request, fed.noise_bits)
    half = encoder.half_range
    top = p.max_parties * 2 * half  # max_parties * (2^b - 2)
    assert top <= encoder.field_limit < 1 << p.slot_bits  # the headroom is used up to its last bit
    assert top >= 1 << (p.slot_bits - 1)
    unpacked = encoder._unpack(fields)
    assert np.array_equal(unpacked[:size], np.where(signs > 0, top, 0).astype(np.uint64))
    # the exact count and offset chunks: every hospital's, times max_parties
    assert unpacked[size : size + chunks].tolist() == [p.max_parties * c for c in encoder._chunks(count)]
    assert unpacked[size + chunks : size + 2 * chunks].tolist() == [
        p.max_parties * c for c in encoder._chunks(half)
    ]
    arrays, total = decrypt_update(ctx, aggregate, fields)
    # exact up to the float64 rounding of clip / H in the final scaling
    np.testing.assert_allclose(arrays[0], signs * p.clip, rtol=1e-12, atol=0)
    assert total == p.max_parties * count


# -- quantization ----------------------------------------------------------------------------------


def test_compact_quantization_error_within_bound():
    """Decoding the plaintext sum (no encryption) stays within ``average_tolerance``, at the
    weight scale the server picks from the previous round's exact total: the same total, or
    one that has since grown 1.9-fold (the scale leaves half the field headroom for growth)."""
    p = context("compact").params
    encoder = UpdateEncoder(p, len(p.payload_prime_bits))
    rng = np.random.default_rng(6)
    for trial in range(20):
        n = int(rng.integers(2, p.max_parties + 1))
        updates, counts = random_updates(p, n, (2000,), seed=100 + trial)
        previous_total = sum(counts) if trial % 2 else int(sum(counts) / 1.9)
        scale = weight_scale_for(previous_total, p)
        encoded = [
            encoder.encode(u, c, rng, weight_scale=scale) for u, c in zip(updates, counts, strict=True)
        ]
        fields = sum(e.fields for e in encoded)
        arrays, total = encoder.decode(fields, encoded[0].layout, n)
        assert total == sum(counts)
        want = weighted_average(updates, counts)
        assert max_abs_error(arrays, want) <= average_tolerance(p, counts, scale)


def test_stochastic_rounding_is_unbiased():
    """Mean error over many draws of one off-grid value is ~0; round-to-nearest is biased."""
    p = context("compact").params
    encoder = UpdateEncoder(p, len(p.payload_prime_bits))
    half = (1 << (p.value_bits - 1)) - 1
    step = p.clip / half
    value = (half // 3 + 0.4) * step  # 0.4 of a step above a grid point inside the range
    draws = 200_000
    update = [np.full(draws, value)]
    # weight 1.0 is exactly representable, so only the values are rounded
    encoded = encoder.encode(update, p.default_weight_scale, np.random.default_rng(7))
    arrays, _ = encoder.decode(encoded.fields, encoded.layout, 1)
    errors = (arrays[0] - value) / step
    assert set(np.round(errors, 6).tolist()) == {-0.4, 0.6}  # rounds down or up by one step
    # mean of Bernoulli(0.4) - 0.4: sigma = 0.49 / sqrt(200000) ~ 0.0011 steps
    assert abs(float(np.mean(errors))) < 0.01
    # round-to-nearest on the same value errs by -0.4 step every time
    deterministic = UpdateEncoder(TEST_PARAMS, 2)
    v = (1234 + 0.4) * (TEST_PARAMS.clip / ((1 << 53) - 1))
    enc = deterministic.encode([np.full(10, v)], TEST_PARAMS.default_weight_scale, np.random.default_rng())
    out, _ = deterministic.decode(enc.fields, enc.layout, 1)
    assert np.all(out[0] < v)

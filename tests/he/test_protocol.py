"""End-to-end threshold protocol: keys, encryption, aggregation, t-of-n decryption, decoding.

Most tests run under the insecure fast ``TEST_PARAMS`` (see conftest); one run each uses the
real ``precise`` and ``compact`` presets.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    TEST_PARAMS,
    average_tolerance,
    build_federation,
    context,
    max_abs_error,
    random_updates,
    weighted_average,
)

import he
from he import keygen
from he.decrypt import combine, decrypt_update
from he.encoding import UpdateEncoder
from he.errors import EncodingError, NotEnoughPartiesError
from he.modarith import addmod, mulmod
from he.threshold import integer_lagrange_weights

SIZES = (700, 33, 5000)  # three arrays, 5733 values: one ciphertext under TEST_PARAMS


def centered(residues: np.ndarray, q: int) -> np.ndarray:
    """Residues mod q lifted to (-q/2, q/2] as Python-int-exact int64 (q < 2^61)."""
    r = residues.astype(np.int64)
    return np.where(r > q // 2, r - np.int64(q), r)


# -- correctness -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def round10(federation10):
    updates, counts = random_updates(TEST_PARAMS, 10, SIZES, seed=1)
    return federation10.encrypt_all(updates, counts), updates, counts


@pytest.mark.parametrize("t", [10, 6], ids=["10-of-10", "6-of-10"])
def test_ten_parties_decrypt_to_weighted_average(federation10, round10, t):
    aggregate, updates, counts = round10
    assert aggregate.contributors == 10
    parties = federation10.points if t == 10 else [2, 3, 5, 7, 8, 10]
    arrays, total = federation10.decrypt(aggregate, parties, t)
    want = weighted_average(updates, counts)
    tol = average_tolerance(TEST_PARAMS, counts, max(float(np.max(np.abs(w))) for w in want))
    assert tol < 1e-9  # 54-bit fields: the error budget is far below float32 resolution
    assert max_abs_error(arrays, want) <= tol
    assert total == pytest.approx(sum(counts), rel=1e-12)


@pytest.fixture(scope="module")
def round5(federation5):
    """A 3-of-5 round: the aggregate and partial decryptions from all five parties."""
    updates, counts = random_updates(TEST_PARAMS, 5, SIZES, seed=2)
    aggregate = federation5.encrypt_all(updates, counts)
    shares = {s.party: s for s in federation5.decryption_shares(aggregate, federation5.points, 3)}
    want = weighted_average(updates, counts)
    tol = average_tolerance(TEST_PARAMS, counts, max(float(np.max(np.abs(w))) for w in want))
    return aggregate, shares, want, tol


@pytest.mark.parametrize("subset", list(itertools.combinations(range(1, 6), 3)), ids=str)
def test_every_three_of_five_subset_decrypts(test_ctx, round5, subset):
    aggregate, shares, want, tol = round5
    chosen = [shares[j] for j in reversed(subset)]  # order of arrival must not matter
    arrays, _ = decrypt_update(test_ctx, aggregate, combine(test_ctx, aggregate, chosen, 5, 3))
    assert max_abs_error(arrays, want) <= tol


@pytest.mark.parametrize("subset", [(1, 2, 4, 5), (1, 2, 3, 4, 5), (5, 3, 1, 4)], ids=str)
def test_superset_of_threshold_decrypts(test_ctx, round5, subset):
    aggregate, shares, want, tol = round5
    arrays, _ = decrypt_update(
        test_ctx, aggregate, combine(test_ctx, aggregate, [shares[j] for j in subset], 5, 3)
    )
    assert max_abs_error(arrays, want) <= tol


def test_fewer_than_threshold_refused_and_garbage(test_ctx, round5):
    aggregate, shares, want, tol = round5
    two = [shares[1], shares[4]]
    with pytest.raises(NotEnoughPartiesError, match="2 decryption shares received, 3 needed"):
        combine(test_ctx, aggregate, two, 5, 3)
    # Bypass the check: interpolate the degree-2 Shamir polynomial through only 2 points (as if
    # the threshold were 2). The result must be unusable, not a slightly noisy average.
    fields = combine(test_ctx, aggregate, two, 5, 2)
    try:
        arrays, _ = decrypt_update(test_ctx, aggregate, fields)
    except EncodingError:
        return  # decoded total weight not positive: garbage detected
    assert max_abs_error(arrays, want) > max(1e3 * tol, 1.0)


def test_n_of_n_with_a_missing_share_refused(federation5, test_ctx):
    updates, counts = random_updates(TEST_PARAMS, 5, (10,), seed=3)
    aggregate = federation5.encrypt_all(updates, counts)
    shares = federation5.decryption_shares(aggregate, [1, 2, 3, 4], 5)
    with pytest.raises(NotEnoughPartiesError, match="needs all 5 shares, got 4"):
        combine(test_ctx, aggregate, shares, 5, 5)
    # and with all five it works (the refusal above is not an artefact of the setup)
    shares += federation5.decryption_shares(aggregate, [5], 5)
    arrays, _ = decrypt_update(test_ctx, aggregate, combine(test_ctx, aggregate, shares, 5, 5))
    want = weighted_average(updates, counts)
    assert max_abs_error(arrays, want) <= average_tolerance(TEST_PARAMS, counts, 1.0)


def test_lagrange_weights_are_integers_interpolating_at_zero():
    """sum_j (Delta*lambda_j) * f(j) = Delta * f(0) for a degree-(t-1) integer polynomial."""
    rng = np.random.default_rng(4)
    for n, t in [(5, 3), (10, 6), (7, 7), (4, 1)]:
        coefficients = [int(c) for c in rng.integers(-1000, 1000, t)]

        def f(x, coefficients=coefficients):
            return sum(c * x**k for k, c in enumerate(coefficients))

        delta = 1
        for k in range(1, n):
            delta *= k
        for subset in itertools.combinations(range(1, n + 1), t):
            weights = integer_lagrange_weights(list(subset), n, t)
            assert all(isinstance(w, int) for w in weights.values())
            assert sum(w * f(j) for j, w in weights.items()) == delta * f(0)


# -- keys --------------------------------------------------------------------------------------


def _key_level_error(fed, pk0: np.ndarray, secret: np.ndarray) -> np.ndarray:
    """Coefficients of ``pk0 + a*secret`` on the data-level primes, centered; [L, N] int64."""
    ctx = fed.ctx
    ntt = addmod(pk0, mulmod(fed.crp, secret, ctx.key_moduli), ctx.key_moduli)[:-1]
    coefficients = ctx.intt(ntt[None])[0]
    return np.stack([centered(row, int(q)) for row, q in zip(coefficients, ctx.data_moduli, strict=True)])


def test_collective_public_key_is_rlwe_key_of_sum_of_secrets(federation10):
    """pk0 + pk1 * sum_i s_i = sum_i e_i: small, and the same integers under every prime."""
    pk0, pk1 = federation10.public_key
    assert np.array_equal(pk1, federation10.crp)
    error = _key_level_error(federation10, pk0, federation10.collective_secret())
    assert all(np.array_equal(error[0], row) for row in error[1:])
    # SEAL's clipped Gaussian: |e_i| <= 6 * 3.2 per coefficient, so |sum of 10| <= 192.
    assert 0 < np.max(np.abs(error)) <= 10 * 6 * 3.2
    # Each key share is an RLWE sample of its own secret too.
    for share, sk in zip(federation10.key_shares, federation10.secrets, strict=True):
        assert np.max(np.abs(_key_level_error(federation10, share.p0, sk.residues))) <= 6 * 3.2
    # Leaving out one secret gives a uniform-looking result (the check above can fail).
    partial = federation10.secrets[0].residues
    for sk in federation10.secrets[1:-1]:
        partial = addmod(partial, sk.residues, federation10.ctx.key_moduli)
    assert np.max(np.abs(_key_level_error(federation10, pk0, partial))) > 2**50


SECRET_ATTRIBUTES = {"residues", "data_level"}
SUMMING_CALLS = {"addmod", "sum", "add", "combine_received_shares", "aggregate_public_key_shares"}


def _is_secret(node: ast.AST) -> bool:
    """``x.residues`` / ``x.data_level`` (possibly sliced), or a list/comprehension of them."""
    while isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Attribute):
        return node.attr in SECRET_ATTRIBUTES
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return any(_is_secret(e) for e in node.elts)
    if isinstance(node, ast.ListComp | ast.GeneratorExp | ast.SetComp):
        return _is_secret(node.elt)
    return False


def secret_sums(source: str) -> list[int]:
    """Line numbers where a secret-key attribute is directly an operand of an addition.

    What it checks: ``a.residues + b``, ``total += sk.data_level``, and calls named addmod /
    sum / np.sum / np.add / combine_received_shares / aggregate_public_key_shares with an
    argument that is ``X.residues`` or ``X.data_level`` (or a list/comprehension of them).
    Those attributes are exactly how a ``SecretKeyShare`` exposes key material. What it does
    not check: aliasing (``r = sk.residues; addmod(total, r, q)``) or data flow in general; it
    is a syntactic tripwire for the obvious way to form ``sum_i s_i``, not a proof.
    Multiplying a secret by something (``mulmod(crp, s.residues)``) is not flagged.
    """
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            operands = [node.left, node.right]
        elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add):
            operands = [node.target, node.value]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            operands = list(node.args) if name in SUMMING_CALLS else []
        else:
            continue
        if any(_is_secret(op) for op in operands):
            hits.append(node.lineno)
    return hits


@pytest.mark.parametrize(
    "snippet",
    [
        "s = addmod(a.residues, b.residues, q)",
        "s = a.data_level + b.data_level",
        "t = addmod(t, sk.residues, q)",
        "total += sk.data_level[0]",
        "s = sum(sk.residues for sk in sks)",
        "s = np.sum([sk.data_level for sk in sks], axis=0)",
    ],
)
def test_secret_sum_detector_flags_sums(snippet):
    assert secret_sums(snippet) == [1]


def test_no_module_in_he_sums_secret_keys():
    """Static check (see ``secret_sums``): nothing under he/ adds secret-key residues."""
    assert secret_sums("p = submod(e, mulmod(crp, secret.residues, q), q)") == []  # products pass
    package = Path(he.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert len(modules) >= 10
    offenders = {m.name: secret_sums(m.read_text()) for m in modules}
    assert {name: lines for name, lines in offenders.items() if lines} == {}


def test_crs_seed_binds_every_contribution():
    contributions = [keygen.fresh_contribution() for _ in range(6)]
    seed = keygen.crs_seed(contributions)
    assert len(seed) == 64
    for permutation in itertools.islice(itertools.permutations(contributions), 1, 50, 7):
        assert keygen.crs_seed(list(permutation)) == seed
    assert keygen.crs_seed(list(reversed(contributions))) == seed
    for k in range(len(contributions)):
        changed = list(contributions)
        changed[k] = bytes([changed[k][0] ^ 1]) + changed[k][1:]
        assert keygen.crs_seed(changed) != seed
    assert keygen.crs_seed(contributions[:-1]) != seed


def test_crp_is_deterministic_in_the_seed(test_ctx):
    seed = keygen.crs_seed([keygen.fresh_contribution() for _ in range(3)])
    a = keygen.sample_crp(test_ctx, seed)
    assert np.array_equal(a, keygen.sample_crp(test_ctx, seed))
    assert a.shape == (len(test_ctx.key_moduli), test_ctx.n)
    assert np.all(a < test_ctx.key_moduli.reshape(-1, 1))
    other = keygen.sample_crp(test_ctx, bytes([seed[0] ^ 1]) + seed[1:])
    assert np.mean(a == other) < 0.01


# -- ciphertext noise --------------------------------------------------------------------------


def test_measured_noise_of_ten_fresh_encryptions_within_documented_bound(federation10, round10):
    """Decrypt the sum of 10 encryptions with sum(s_i) (test oracle) and read the noise primes."""
    ctx = federation10.ctx
    aggregate, updates, counts = round10
    secret = federation10.collective_secret()[:-1]
    phase = addmod(
        aggregate.c0,
        mulmod(aggregate.c1, np.broadcast_to(secret, aggregate.c1.shape), ctx.data_moduli),
        ctx.data_moduli,
    )
    coefficients = ctx.intt(phase)  # [m, L, N]: message + noise, per prime
    noise = [centered(coefficients[:, ctx.num_payload + k], int(q)) for k, q in enumerate(ctx.noise_moduli)]
    assert np.array_equal(noise[0], noise[1])  # one small integer noise, seen under both primes
    measured = int(np.max(np.abs(noise[0])))
    assert 0 < measured < 2**TEST_PARAMS.ciphertext_noise_bits
    # Payload primes: message + the same noise, where the message is the sum of the packed fields
    # (round-to-nearest is deterministic, so the encoding can be recomputed here).
    encoder = UpdateEncoder(TEST_PARAMS, ctx.num_payload)
    fields = sum(
        encoder.encode(u, c, np.random.default_rng()).fields.astype(object)
        for u, c in zip(updates, counts, strict=True)
    )
    for row, q in enumerate(ctx.payload_moduli.tolist()):
        got = (coefficients[:, row].astype(object) - noise[0].astype(object)) % q
        assert np.array_equal(got, fields[:, row] % q)


# -- real presets ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["precise", "compact"])
def test_real_preset_three_of_five(name):
    ctx = context(name)
    fed = build_federation(ctx, 5)
    updates, counts = random_updates(ctx.params, 5, (300, 45), seed=5)
    aggregate = fed.encrypt_all(updates, counts)
    arrays, total = fed.decrypt(aggregate, [5, 1, 3], 3)
    want = weighted_average(updates, counts)
    tol = average_tolerance(ctx.params, counts, max(float(np.max(np.abs(w))) for w in want))
    assert tol < (1e-9 if name == "precise" else 2e-2)
    assert max_abs_error(arrays, want) <= tol
    # the weight is quantized like the values: each of 5 weights errs by < 1/H of max_samples
    half = (1 << (ctx.params.value_bits - 1)) - 1
    assert total == pytest.approx(sum(counts), abs=5 * ctx.params.max_samples_per_party / half + 1e-9)
    if name == "precise":  # also the measured noise against the preset's documented bound
        secret = fed.collective_secret()[:-1]
        phase = addmod(
            aggregate.c0,
            mulmod(aggregate.c1, np.broadcast_to(secret, aggregate.c1.shape), ctx.data_moduli),
            ctx.data_moduli,
        )
        noise_row = ctx.intt(phase)[:, ctx.num_payload]
        measured = int(np.max(np.abs(centered(noise_row, int(ctx.noise_moduli[0])))))
        assert 0 < measured < 2**ctx.params.ciphertext_noise_bits


def test_compact_headroom_limit_decodes_exactly():
    """max_parties updates all at +clip (first half) and -clip (second half), weights maximal.

    Every packed field of the aggregate then sits at its extreme: max_parties * (2^b - 2) or 0.
    The sum must decode exactly (no carry into a neighbouring field, no wrap modulo the prime).
    """
    ctx = context("compact")
    p = ctx.params
    fed = build_federation(ctx, p.max_parties)
    size = p.values_per_ciphertext - 1  # with the weight: every field of one ciphertext is used
    signs = np.where(np.arange(size) < size // 2, 1.0, -1.0)
    # beyond the clip range (clipped to exactly +-clip), counts at max_samples_per_party: w = 1
    updates = [[signs * p.clip * (1 + k / 10)] for k in range(p.max_parties)]
    counts = [p.max_samples_per_party] * p.max_parties
    aggregate = fed.encrypt_all(updates, counts)
    assert len(aggregate.polys) == 1
    shares = fed.decryption_shares(aggregate, fed.points, p.max_parties)
    fields = combine(ctx, aggregate, shares, p.max_parties, p.max_parties)
    half = (1 << (p.value_bits - 1)) - 1
    top = p.max_parties * 2 * half  # max_parties * (2^b - 2)
    assert top < 1 << p.slot_bits  # the headroom is really used up to its last bit
    assert top >= 1 << (p.slot_bits - 1)
    unpacked = UpdateEncoder(p, ctx.num_payload)._unpack(fields)
    assert np.array_equal(unpacked[:size], np.where(signs > 0, top, 0).astype(np.uint64))
    assert unpacked[size] == top  # the weight fields, all at 1.0
    arrays, total = decrypt_update(ctx, aggregate, fields)
    # exact up to the float64 rounding of clip / H in the final scaling
    np.testing.assert_allclose(arrays[0], signs * p.clip, rtol=1e-12, atol=0)
    assert total == p.max_parties * p.max_samples_per_party


def test_compact_quantization_error_within_bound():
    """Decoding the plaintext sum (no encryption) stays within ``average_tolerance``."""
    p = context("compact").params
    encoder = UpdateEncoder(p, len(p.payload_prime_bits))
    rng = np.random.default_rng(6)
    for trial in range(20):
        n = int(rng.integers(1, p.max_parties + 1))
        updates, counts = random_updates(p, n, (2000,), seed=100 + trial)
        fields = sum(encoder.encode(u, c, rng).fields for u, c in zip(updates, counts, strict=True))
        arrays, _ = encoder.decode(fields, encoder.encode(updates[0], counts[0], rng).layout, n)
        want = weighted_average(updates, counts)
        tol = average_tolerance(p, counts, float(np.max(np.abs(want[0]))))
        assert max_abs_error(arrays, want) <= tol


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
    encoded = encoder.encode(update, p.max_samples_per_party, np.random.default_rng(7))
    arrays, _ = encoder.decode(encoded.fields, encoded.layout, 1)
    errors = (arrays[0] - value) / step
    assert set(np.round(errors, 6).tolist()) == {-0.4, 0.6}  # rounds down or up by one step
    # mean of Bernoulli(0.4) - 0.4: sigma = 0.49 / sqrt(200000) ~ 0.0011 steps
    assert abs(float(np.mean(errors))) < 0.01
    # round-to-nearest on the same value errs by -0.4 step every time
    deterministic = UpdateEncoder(TEST_PARAMS, 2)
    v = (1234 + 0.4) * (TEST_PARAMS.clip / ((1 << 53) - 1))
    enc = deterministic.encode([np.full(10, v)], TEST_PARAMS.max_samples_per_party, np.random.default_rng())
    out, _ = deterministic.decode(enc.fields, enc.layout, 1)
    assert np.all(out[0] < v)

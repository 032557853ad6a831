"""Threshold protocol v2, key set-up and the randomness around it, each part on its own.

Per-run secrets are fresh ternary polynomials; a Shamir dealing lies on one polynomial of
degree t - 1 through the secret, so any t points interpolate to it and no t - 1 do (with
``t = n`` and ``t = 2`` at the edges, the first t - 1 keyholders sent seeds); a channel mask key
is shared by its pair only. The label-seeded ``c1`` and the PRF are deterministic, uniform and
bound to their label or context; the encryption noise sampler draws SEAL's clipped normal and
the smudging sampler is uniform in its range. A static check (a syntactic tripwire, not a
proof) shows that no module under ``he/`` adds secret-key residues to form ``s_U``.

Under the insecure fast ``TEST_PARAMS`` (``tests/he_federation.py``). Aggregation and
decryption of whole rounds are in ``test_protocol_decryption.py``.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import numpy as np
import pytest
from he_federation import centered, crt_centered

from he import channel, keygen
from he import params as he_params
from he.ciphertext import CiphertextLabel, sample_encryption_noise, seeded_c1
from he.decrypt import prf_uniform, sample_smudging_noise
from he.modarith import addmod, mulmod
from he.params import ENCRYPTION_NOISE_BOUND
from he.threshold import interpolate_at, lagrange_residues

# -- noise samplers ---------------------------------------------------------------------------


def test_encryption_noise_is_seals_clipped_normal(test_ctx):
    """The documented per-coefficient bound |e| <= 19 behind ``ciphertext_noise_bits``."""
    noise = test_ctx.intt(sample_encryption_noise(test_ctx, 8))
    lifted = [centered(noise[:, row], int(q)) for row, q in enumerate(test_ctx.data_moduli)]
    assert all(np.array_equal(lifted[0], other) for other in lifted[1:])
    assert int(np.max(np.abs(lifted[0]))) <= ENCRYPTION_NOISE_BOUND
    # sigma 3.2, truncated toward zero: E[trunc(x)^2] ~ sigma^2 - E|x| + 1/3, so sd ~ 2.83
    assert 2.7 < float(np.std(lifted[0])) < 2.95
    assert abs(float(np.mean(lifted[0]))) < 0.05
    assert not np.array_equal(lifted[0][0], lifted[0][1])  # a fresh draw per ciphertext
    again = test_ctx.intt(sample_encryption_noise(test_ctx, 1))
    assert not np.array_equal(again[0], noise[0])  # not derived from anything repeatable


def test_smudging_noise_is_uniform_in_its_range(test_ctx):
    bits = 81  # above one 60-bit prime: exercises the two-word assembly
    residues = sample_smudging_noise(test_ctx, 2, test_ctx.n, bits)
    moduli = [int(q) for q in test_ctx.data_moduli]
    values = crt_centered([residues[:, 0], residues[:, 1]], moduli[:2])
    for row, q in enumerate(moduli[2:], start=2):  # one integer under every prime
        assert np.array_equal(values % q, residues[:, row].astype(object))
    floats = values.astype(float) / 2.0**bits
    assert floats.min() >= -1 and floats.max() < 1
    assert floats.min() < -0.99 and floats.max() > 0.99
    assert abs(float(np.mean(floats))) < 0.03  # uniform on [-1, 1): sd of the mean ~ 0.006
    with pytest.raises(ValueError, match="exceeds the 120 bits"):
        sample_smudging_noise(test_ctx, 1, test_ctx.n, 121)


# -- seeded c1 and PRF ----------------------------------------------------------------------------


def test_seeded_c1_is_deterministic_and_bound_to_its_label(test_ctx):
    label = CiphertextLabel("fed", b"run", "train", 3)
    c1 = seeded_c1(test_ctx, label, 2)
    assert c1.shape == (2, len(test_ctx.data_moduli), test_ctx.n)
    assert np.all(c1 < test_ctx.data_moduli.reshape(-1, 1))
    assert np.array_equal(c1, seeded_c1(test_ctx, label, 2))
    assert np.array_equal(c1[:1], seeded_c1(test_ctx, label, 1))  # c1_j depends on j, not the count
    assert np.mean(c1[0] == c1[1]) < 0.01
    others = [
        CiphertextLabel("fed", b"run", "statistics", 3),  # statistics vs train, same round
        CiphertextLabel("fed", b"run", "train", 4),
        CiphertextLabel("fed", b"run2", "train", 3),
        CiphertextLabel("fed2", b"run", "train", 3),
    ]
    for other in others:
        assert np.mean(seeded_c1(test_ctx, other, 2) == c1) < 0.01, other
    mean = float(np.mean(c1[0] / test_ctx.data_moduli.reshape(-1, 1).astype(float)))
    assert abs(mean - 0.5) < 0.01


def test_prf_uniform_is_deterministic_uniform_and_context_bound(test_ctx):
    moduli = test_ctx.data_moduli
    key = bytes(range(32))
    a = prf_uniform(key, b"context-1", moduli, test_ctx.n)
    assert a.shape == (len(moduli), test_ctx.n) and a.dtype == np.uint64
    assert np.array_equal(a, prf_uniform(key, b"context-1", moduli, test_ctx.n))
    assert np.mean(a == prf_uniform(key, b"context-2", moduli, test_ctx.n)) < 0.01
    assert np.mean(a == prf_uniform(bytes(32), b"context-1", moduli, test_ctx.n)) < 0.01
    assert np.all(a < moduli.reshape(-1, 1))
    assert not np.array_equal(a[0], a[1])  # every prime row has its own stream
    ratios = a / moduli.reshape(-1, 1).astype(float)
    for row in ratios:  # uniform on [0, 1): mean 0.5 (sd 0.0045), quarters equally full
        assert abs(float(np.mean(row)) - 0.5) < 0.02
        quarters = np.histogram(row, bins=4, range=(0, 1))[0] / len(row)
        assert np.all(np.abs(quarters - 0.25) < 0.03)


# -- secrets and dealing --------------------------------------------------------------------------


def test_gen_secret_is_a_fresh_ternary_polynomial(test_ctx):
    first, second = keygen.gen_secret(test_ctx), keygen.gen_secret(test_ctx)
    for secret in (first, second):
        coefficients = test_ctx.intt(secret.residues[None])[0]
        lifted = [centered(row, int(q)) for row, q in zip(coefficients, test_ctx.data_moduli, strict=True)]
        assert set(np.unique(lifted[0]).tolist()) <= {-1, 0, 1}
        assert all(np.array_equal(lifted[0], row) for row in lifted[1:])
        assert 0.5 < np.mean(lifted[0] != 0) < 0.85
    assert not np.array_equal(first.residues, second.residues)
    assert repr(first) == "SecretKeyShare(<secret>)"


def test_dealt_shares_reconstruct_with_any_t_points_only(test_ctx):
    """Shares of one dealing lie on one polynomial of degree t-1 through s_i: any t of them
    interpolate to s_i, no t-1 of them do. The first t-1 keyholders get 64-byte seeds."""
    moduli = test_ctx.data_moduli
    secret = keygen.gen_secret(test_ctx)
    dealt = keygen.deal_secret_shares(test_ctx, secret, 3, [5, 3, 1, 2, 4])
    assert sorted(dealt) == [1, 2, 3, 4, 5]
    assert [k for k, d in sorted(dealt.items()) if d.seed is not None] == [1, 2]
    assert all(len(dealt[k].seed) == keygen.SEED_BYTES and dealt[k].residues is None for k in (1, 2))
    assert all(dealt[k].residues is not None and dealt[k].seed is None for k in (3, 4, 5))
    shares = {k: d.expand(test_ctx) for k, d in dealt.items()}
    assert np.array_equal(shares[1], keygen.sample_uniform(test_ctx, dealt[1].seed))

    def interpolate(points):
        total = np.zeros_like(secret.residues)
        for k in points:
            weight = np.broadcast_to(lagrange_residues(k, points, moduli), shares[k].shape)
            total = addmod(total, mulmod(shares[k], weight, moduli), moduli)
        return total

    for points in itertools.combinations(range(1, 6), 3):
        assert np.array_equal(interpolate(points), secret.residues)
    assert np.array_equal(interpolate((1, 2, 3, 4, 5)), secret.residues)
    for points in itertools.combinations(range(1, 6), 2):
        assert np.mean(interpolate(points) == secret.residues) < 0.01
    # the same through he.threshold.interpolate_at, at 0 and at another keyholder's point
    assert np.array_equal(interpolate_at(0, {k: shares[k] for k in (2, 4, 5)}, moduli), secret.residues)
    assert np.array_equal(interpolate_at(3, {k: shares[k] for k in (1, 4, 5)}, moduli), shares[3])
    # a share alone looks nothing like the ternary secret; two dealings of one secret differ
    assert all(np.mean(share == secret.residues) < 0.01 for share in shares.values())
    redealt = keygen.deal_secret_shares(test_ctx, secret, 3, [1, 2, 3, 4, 5])
    assert all(np.mean(redealt[k].expand(test_ctx) == shares[k]) < 0.01 for k in shares)
    assert "<secret>" in repr(dealt[1]) and dealt[1].seed.hex() not in repr(dealt[1])


def test_n_of_n_and_two_of_n_dealings(test_ctx):
    """The edge thresholds: t = n (n-1 seeds, one full share) and t = 2 (one seed)."""
    moduli = test_ctx.data_moduli
    secret = keygen.gen_secret(test_ctx)
    for threshold, seeds in [(4, 3), (2, 1)]:
        dealt = keygen.deal_secret_shares(test_ctx, secret, threshold, [1, 2, 3, 4])
        assert sum(d.seed is not None for d in dealt.values()) == seeds
        known = {k: dealt[k].expand(test_ctx) for k in list(dealt)[-threshold:]}
        assert np.array_equal(interpolate_at(0, known, moduli), secret.residues)


def test_mask_keys_are_shared_by_the_pair_only(federation5):
    fed = federation5
    keys_1 = fed.mask_keys(1, fed.parties)
    keys_2 = fed.mask_keys(2, fed.parties)
    assert keys_1[2] == keys_2[1]
    assert len({*keys_1.values(), *(v for k, v in keys_2.items() if k != 1)}) == 7
    outsider = channel.ChannelKeyPair.generate()
    assert channel.mask_key(outsider, fed.channels[2].public_bytes(), fed.run_id) != keys_1[2]


# -- no module sums secret keys ------------------------------------------------------------------

SECRET_ATTRIBUTES = {"residues"}
SUMMING_CALLS = {"addmod", "sum", "add", "sum_shares"}
PASS_THROUGH_CALLS = {"broadcast_to", "asarray", "array", "copy", "astype"}


def _is_secret(node: ast.AST) -> bool:
    """``x.residues`` (possibly sliced, copied or broadcast), or a list/comprehension of them."""
    while True:
        if isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in PASS_THROUGH_CALLS:
                return False
            if isinstance(func, ast.Attribute) and _is_secret(func.value):
                return True  # sk.residues.copy()
            if not node.args:
                return False
            node = node.args[0]  # np.broadcast_to(sk.residues, shape)
        else:
            break
    if isinstance(node, ast.Attribute):
        return node.attr in SECRET_ATTRIBUTES
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return any(_is_secret(e) for e in node.elts)
    if isinstance(node, ast.ListComp | ast.GeneratorExp | ast.SetComp):
        return _is_secret(node.elt)
    return False


def secret_sums(source: str) -> list[int]:
    """Line numbers where a secret key's residues are directly an operand of an addition.

    What it checks: ``a.residues + b``, ``total += sk.residues``, and calls named addmod / sum /
    np.sum / np.add / sum_shares with an argument that is ``X.residues`` (sliced, copied or
    broadcast) or a list/comprehension of them. ``.residues`` is exactly how a
    ``SecretKeyShare`` exposes the per-run secret ``s_i``. What it does not check: aliasing
    (``r = sk.residues; addmod(total, r, q)``) or data flow in general; it is a syntactic
    tripwire for the obvious way to form ``s_U = sum_i s_i``, not a proof. Multiplying a secret
    (``mulmod(c1, sk.residues)``) and Shamir-dealing it are not flagged; adding dealt shares
    (``sum_shares``) is the keyholders' job and involves no ``.residues``.
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
        "s = a.residues + b.residues",
        "t = addmod(t, sk.residues, q)",
        "total += sk.residues[0]",
        "s = sum(sk.residues for sk in sks)",
        "s = np.sum([sk.residues for sk in sks], axis=0)",
        "s = sum_shares([a.residues, b.residues], q)",
        "t = addmod(t, np.broadcast_to(sk.residues, shape), q)",
        "t = addmod(t, sk.residues.copy(), q)",
    ],
)
def test_secret_sum_detector_flags_sums(snippet):
    assert secret_sums(snippet) == [1]


def test_secret_sum_detector_finds_the_test_oracle():
    """The detector catches the one place that forms s_U on purpose: he_federation's oracle."""
    source = (Path(__file__).parents[1] / "he_federation.py").read_text()
    hits = secret_sums(source)
    oracle_lines = [
        i for i, line in enumerate(source.splitlines(), 1) if "addmod(total, self.secrets" in line
    ]
    assert oracle_lines and set(oracle_lines) <= set(hits)


def test_no_module_in_he_sums_secret_keys():
    """Static check (see ``secret_sums``): nothing under he/ adds secret-key residues."""
    assert secret_sums("c0 = submod(p, mulmod(c1, np.broadcast_to(sk.residues, s), q), q)") == []
    assert secret_sums("known = {0: secret.residues} | seeded") == []
    # (``he.__file__`` is None under pytest: tests/he shadows the package as a namespace portion)
    package = Path(he_params.__file__).parent
    assert (package / "__init__.py").is_file() and package.name == "he"
    modules = sorted(package.glob("*.py"))
    assert len(modules) >= 15
    assert any(".residues" in m.read_text() for m in modules)  # the check has something to look at
    offenders = {m.name: secret_sums(m.read_text()) for m in modules}
    assert {name: lines for name, lines in offenders.items() if lines} == {}

"""The rational-mu coalition attack on protocol v2, run against the real code: it must fail.

Threat model (``he.roster``, ``he.decrypt``): a coordinator that lies, plus up to t_K - 1
colluding hospitals. The coalition weighs an honest keyholder's decryption share by a rational
``mu = a/b`` (its Lagrange coefficient in T times the basis that the colluders' key shares leave
open) to read the aggregate's encryption noise E modulo b, and from E the contributors' secret
sum ``s_U``. The tests establish that such plans exist under the quorum rule (3-of-5, 6-of-10,
11-of-16); that the attack, written out as the coalition would run it, recovers E and ``s_U``
from unmasked shares (the control, so the test can fail); that on the real, pairwise-masked
shares every guess is at chance; and that the quorum rule refuses the one attackable set of a
2-of-3 committee.

The coordinator's other attacks (two decryption sets, injected polynomials, nonce reuse,
tampered shares) are in ``test_attacks_coordinator.py``.

Notation: U contributors, ``s_U = sum_{i in U} s_i``, ``C0`` the server's sum of the uploaded
``c0``, ``c1`` the seeded polynomial of the round's label, ``M`` and ``E`` the sums of the
contributors' messages and encryption noises (``C0 + c1*s_U = M + E``; ``M = 0`` on the noise
primes), K the committee, t_K its threshold, C the colluding keyholders, T a decryption set,
``F_k`` keyholder k's flooding (uniform in ``[-2^B, 2^B)``).

Under the insecure ``TEST_PARAMS`` (N=4096), with an update that fills all N coefficients of its
ciphertext, so that every coefficient is decrypted (the worst case: a smaller update sends and
decrypts only its leading coefficients). Shares and ``C0`` travel in coefficient form; the
coalition moves them to NTT form, where ``c1 * s_U`` is a pointwise product.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
from he_federation import (
    TEST_PARAMS,
    Federation,
    build_federation,
    random_updates,
    signed_coefficients,
    times,
)

from he.ciphertext import CiphertextLabel, EncryptedUpdate, seeded_c1
from he.context import HEContext
from he.decrypt import DecryptionRequest, prf_uniform, sample_smudging_noise
from he.errors import RosterError
from he.modarith import addmod, mul_scalar, mulmod, negmod, submod
from he.params import ENCRYPTION_NOISE_BOUND
from he.roster import Quorum
from he.threshold import lagrange_coefficient, lagrange_residues

# -- exact integer views of NTT-form residues (the shared ones are in he_federation) -------------


def from_integers(ctx, values: list[int]) -> np.ndarray:
    """The NTT-form residues ``[L, N]`` of a polynomial with integer coefficients ``values``."""
    rows = [[v % int(q) for v in values] for q in ctx.data_moduli.tolist()]
    return ctx.ntt(np.array(rows, dtype=np.uint64)[None])[0]


def noise_modulus(ctx) -> int:
    return math.prod(int(q) for q in ctx.noise_moduli.tolist())


def inverse_poly(poly: np.ndarray, moduli: np.ndarray) -> np.ndarray:
    """Pointwise inverse of an NTT-form polynomial (a uniform ``c1`` is invertible w.p. 1 - 2^-47)."""
    rows = [
        [pow(int(x), -1, int(q)) for x in row.tolist()] for row, q in zip(poly, moduli.tolist(), strict=True)
    ]
    return np.array(rows, dtype=np.uint64)


SIZES = (8000, 188)  # with the 4 count fields, 8192: one ciphertext, all N = 4096 coefficients full


def ntt_form(ctx, coefficients: np.ndarray) -> np.ndarray:
    """One coefficient-form polynomial ``[L, N]`` (a share, a mask, ``C0``) in NTT form."""
    return ctx.ntt(coefficients[None])[0]


def aggregate_noise(fed: Federation, aggregate: EncryptedUpdate, contributors, label) -> list[int]:
    """TEST ORACLE: the true encryption-noise sum E, from ``C0 + c1*s_U = M + E`` on the noise primes."""
    moduli = fed.ctx.data_moduli
    c1 = seeded_c1(fed.ctx, label, 1)[0]
    c0 = ntt_form(fed.ctx, aggregate.c0[0])
    plain = addmod(c0, mulmod(c1, fed.secret_sum(list(contributors)), moduli), moduli)
    return signed_coefficients(fed.ctx, plain)


# == The rational-mu coalition attack ==============================================================
def lagrange_basis(node: int, nodes: tuple[int, ...], point: int) -> Fraction:
    """``L_node(point)``: the interpolation basis over ``nodes`` (degree ``len(nodes) - 1``)."""
    numerator = math.prod(point - m for m in nodes if m != node)
    return Fraction(numerator, math.prod(node - m for m in nodes if m != node))


def honest_weights(keyholders: tuple[int, ...], colluders: tuple[int, ...]) -> dict[int, Fraction]:
    """``mu_k = lambda_k^T * L0(k)`` for every honest k in T.

    The coalition knows ``[s_U]_c`` for c in C: t_K - 1 values of the degree-(t_K - 1) sharing
    polynomial. With the unknown ``f_U(0) = s_U`` they fix it, so ``[s_U]_k = L0(k)*s_U +
    sum_c Lc(k)*[s_U]_c`` (basis over the nodes {0} and C), and ``d_k`` multiplies ``c1*s_U`` by
    ``mu_k``. The mu of the honest members of T add up to exactly 1.
    """
    nodes = (0, *colluders)
    return {
        k: lagrange_coefficient(k, keyholders) * lagrange_basis(0, nodes, k)
        for k in keyholders
        if k not in colluders
    }


def exploitable(mu: Fraction, smudging_bits: int, modulus: int, contributors: int) -> bool:
    """``b*(d_k - known') = a*E + b*F_k`` stays an exact centered integer modulo the noise primes."""
    worst = abs(mu.numerator) * ENCRYPTION_NOISE_BOUND * contributors + mu.denominator * 2**smudging_bits
    return mu.denominator >= 2 and worst < modulus // 2


@dataclass(frozen=True)
class Plan:
    """The coalition's choice: colluding keyholders C, and one decryption set T per attempt."""

    colluders: tuple[int, ...]
    decryption_sets: tuple[tuple[int, ...], ...]

    def leak_modulus(self, usable) -> int:
        """``E`` is learnt modulo the lcm of every usable honest denominator over the attempts."""
        denominators = [
            mu.denominator
            for keyholders in self.decryption_sets
            for mu in honest_weights(keyholders, self.colluders).values()
            if usable(mu)
        ]
        return math.lcm(1, *denominators)


def find_plan(
    quorum: Quorum, usable, target: int, attempts: int, colluder_sets: int, seed: int
) -> Plan | None:
    """Search colluder sets C (|C| = t_K - 1; all of them, or ``colluder_sets`` random ones) and
    quorum-valid decryption sets T with at least two honest members, one of which has a usable
    mu with denominator >= 3. For each C, take the T that leaks E modulo the largest number and,
    while that is not above ``target``, add decryption sets for further attempts of the round
    (same U, same C) that raise it. Return the plan with the largest modulus."""
    valid_sets = [
        quorum.check_decryption_set(chosen)
        for size in range(quorum.min_decryption_set, len(quorum.committee) + 1)
        for chosen in itertools.combinations(quorum.committee, size)
    ]
    candidates = list(itertools.combinations(quorum.committee, quorum.threshold - 1))
    if len(candidates) > colluder_sets:
        candidates = random.Random(seed).sample(candidates, colluder_sets)
    best, best_modulus = None, 1
    for colluders in candidates:
        moduli = {}  # attackable T -> the modulus it leaks E by
        for keyholders in valid_sets:
            weights = honest_weights(keyholders, colluders)
            if len(weights) >= 2 and any(usable(mu) and mu.denominator >= 3 for mu in weights.values()):
                moduli[keyholders] = Plan(colluders, (keyholders,)).leak_modulus(usable)
        if not moduli:
            continue
        chosen = [max(moduli, key=moduli.get)]
        modulus = moduli[chosen[0]]
        while modulus <= target and len(chosen) < attempts:
            extra = max(moduli, key=lambda t: math.lcm(modulus, moduli[t]))
            if math.lcm(modulus, moduli[extra]) == modulus:
                break
            chosen, modulus = [*chosen, extra], math.lcm(modulus, moduli[extra])
        if modulus > best_modulus:
            best, best_modulus = Plan(colluders, tuple(chosen)), modulus
    return best


def unmasked_share(fed: Federation, request: DecryptionRequest, k: int) -> np.ndarray:
    """CONTROL ONLY: the share without pairwise masks, ``lambda_k^T [s_U]_k c1 + F_k``."""
    ctx, moduli = fed.ctx, fed.ctx.data_moduli
    weighted = mulmod(
        fed.key_share(k, list(request.contributors)),
        np.broadcast_to(lagrange_residues(k, request.keyholders, moduli), (len(moduli), ctx.n)),
        moduli,
    )
    product = mulmod(seeded_c1(ctx, request.label, 1)[0], weighted, moduli)
    flooding = sample_smudging_noise(ctx, 1, ctx.n, fed.smudging_bits)[0]
    return addmod(product, ntt_form(ctx, flooding), moduli)


@dataclass
class CoalitionView:
    """What the server and the colluding keyholders C hold after the attempts of one round.

    Public: the label (so ``c1``), U, each T, the aggregate ``C0``. The colluders' own key
    shares ``[s_U]_c`` and their pairwise mask keys ``K_ck`` with every keyholder. The honest
    keyholders' answers ``d_k`` per attempt. Not: any honest key share, flooding or honest-honest
    mask key.
    """

    ctx: HEContext
    plan: Plan
    label: CiphertextLabel
    contributors: tuple[int, ...]
    c0: np.ndarray  # [L, N], the aggregate's first ciphertext (NTT form)
    colluder_key_shares: dict[int, np.ndarray]
    colluder_mask_keys: dict[int, dict[int, bytes]]
    answers: dict[int, dict[int, np.ndarray]]  # attempt -> honest k -> d_k (first ciphertext, NTT form)


@dataclass
class Leak:
    """What the attack got out of one round."""

    residues: list[tuple[int, list[int]]]  # (b, E mod b per coefficient) for each exploited share
    noise: list[int] | None  # E, if the residues agree and fix it
    secret: list[int] | None  # s_U, recovered from E


def rational_mu_attack(view: CoalitionView, usable, shares_are_masked: bool) -> Leak:
    """The coalition's computation, per attempt and honest k in T with ``mu_k = a/b``, b >= 2:

    1. ``known = lambda_k * sum_c Lc(k) [s_U]_c * c1`` plus, for masked shares, the masks k shares
       with the colluders in T (the colluders know those keys);
    2. ``d_k - known = mu_k * c1 * s_U + F_k (+ honest-honest masks)``, and ``c1*s_U = E - C0`` on
       the noise primes, so ``y = d_k - known + mu_k*C0 = mu_k*E + F_k (+ masks)``;
    3. ``b*y = a*E + b*F_k`` exactly as a centered integer modulo the noise primes' product (the
       caller chose T so that it is below half of it), hence ``E = a^-1 * (b*y) mod b``.

    Then E modulo the lcm of the b's (CRT); if that exceeds ``2*max|E|``, E itself, and
    ``s_U = (E - C0) / c1`` on the noise primes.
    """
    ctx, plan, moduli = view.ctx, view.plan, view.ctx.data_moduli
    c1 = seeded_c1(ctx, view.label, 1)[0]
    residues = []
    for attempt, keyholders in enumerate(plan.decryption_sets, start=1):
        request = DecryptionRequest(view.label, attempt, view.contributors, keyholders, 1, ctx.n)
        nodes = (0, *plan.colluders)
        for k, mu in honest_weights(keyholders, plan.colluders).items():
            if not usable(mu):
                continue
            lam = lagrange_coefficient(k, keyholders)
            known_key = np.zeros_like(c1)
            for c in plan.colluders:
                known_key = addmod(
                    known_key,
                    times(view.colluder_key_shares[c], lam * lagrange_basis(c, nodes, k), moduli),
                    moduli,
                )
            known = mulmod(c1, known_key, moduli)
            if shares_are_masked:
                for c in (c for c in plan.colluders if c in keyholders):
                    mask = prf_uniform(view.colluder_mask_keys[c][k], request.mask_context(0), moduli, ctx.n)
                    mask = ntt_form(ctx, mask)
                    known = addmod(known, mask if k < c else negmod(mask, moduli), moduli)
            y = addmod(submod(view.answers[attempt][k], known, moduli), times(view.c0, mu, moduli), moduli)
            a, b = mu.numerator, mu.denominator
            scaled = signed_coefficients(ctx, mul_scalar(y, b, moduli))  # a*E + b*F_k
            residues.append((b, [v * pow(a, -1, b) % b for v in scaled]))
    noise = combine_residues(residues)
    if noise is None:
        return Leak(residues, None, None)
    candidate = mulmod(submod(from_integers(ctx, noise), view.c0, moduli), inverse_poly(c1, moduli), moduli)
    return Leak(residues, noise, signed_coefficients(ctx, candidate))


def combine_residues(residues: list[tuple[int, list[int]]]) -> list[int] | None:
    """E from ``E mod b_i`` (generalized CRT, centered), or None if the residues contradict."""
    if not residues:
        return None
    modulus, values = 1, [0] * len(residues[0][1])
    for b, guess in residues:
        g = math.gcd(modulus, b)
        merged = []
        for r1, r2 in zip(values, guess, strict=True):
            if (r2 - r1) % g:
                return None
            step = (r2 - r1) // g * pow(modulus // g, -1, b // g) % (b // g)
            merged.append(r1 + modulus * step)
        modulus, values = modulus * b // g, merged
    return [v - modulus if v > modulus // 2 else v for v in values]


CONFIGURATIONS = [(5, 3, 3), (10, 6, 10), (16, 11, 16)]  # |K|, t_K, |U| (hospitals = |K|)


@pytest.fixture(scope="module", params=CONFIGURATIONS, ids=lambda c: f"{c[1]}-of-{c[0]}")
def coalition_round(request, test_ctx):
    """One round of a federation of |K| hospitals, the coalition's plan, and the oracles."""
    committee, threshold, num_contributors = request.param
    fed = build_federation(test_ctx, committee, threshold=threshold)
    contributors = tuple(range(1, num_contributors + 1))
    modulus = noise_modulus(test_ctx)

    def usable(mu: Fraction) -> bool:
        return exploitable(mu, fed.smudging_bits, modulus, num_contributors)

    # The coalition aims at E exactly: a modulus above twice 7 standard deviations of E.
    target = 2 * 7 * 3.2 * math.sqrt(num_contributors)
    plan = find_plan(fed.quorum, usable, target, attempts=3, colluder_sets=20, seed=committee)
    assert plan is not None, f"no attackable configuration for {threshold}-of-{committee}"
    updates, counts = random_updates(TEST_PARAMS, num_contributors, SIZES, seed=committee)
    aggregate = fed.encrypt_all(updates, counts, list(contributors))
    assert len(aggregate.c0) == 1 and aggregate.coefficients == test_ctx.n
    label = fed.label()
    noise = aggregate_noise(fed, aggregate, contributors, label)
    secret = signed_coefficients(test_ctx, fed.secret_sum(list(contributors)))
    return fed, plan, usable, contributors, aggregate, noise, secret


def coalition_view(fed: Federation, plan: Plan, contributors, aggregate, masked: bool) -> CoalitionView:
    """Run the plan's attempts: the honest members of each T answer (masked: the real
    ``Federation.share``; unmasked: the control share)."""
    label = fed.label()
    answers = {}
    for attempt, keyholders in enumerate(plan.decryption_sets, start=1):
        request = DecryptionRequest(label, attempt, contributors, keyholders, 1, fed.ctx.n)
        honest = [k for k in keyholders if k not in plan.colluders]
        answers[attempt] = {
            k: ntt_form(fed.ctx, fed.share(k, request).polys[0])
            if masked
            else unmasked_share(fed, request, k)
            for k in honest
        }
    return CoalitionView(
        fed.ctx,
        plan,
        label,
        contributors,
        ntt_form(fed.ctx, aggregate.c0[0]),
        {c: fed.key_share(c, list(contributors)) for c in plan.colluders},
        {c: fed.mask_keys(c, list(fed.quorum.committee)) for c in plan.colluders},
        answers,
    )


def test_plans_are_quorum_valid_with_two_honest_members_and_a_denominator_of_three(coalition_round):
    fed, plan, *_ = coalition_round
    assert len(plan.colluders) == fed.quorum.threshold - 1
    assert len(plan.decryption_sets) <= 3  # MAX_ATTEMPTS of the test federation
    for keyholders in plan.decryption_sets:
        assert fed.quorum.check_decryption_set(keyholders) == keyholders
        weights = honest_weights(keyholders, plan.colluders)
        assert len(weights) >= 2
        assert sum(weights.values()) == 1  # only the sum over T is meaningful
    assert max(mu.denominator for mu in honest_weights(plan.decryption_sets[0], plan.colluders).values()) >= 3


def test_rational_mu_attack_recovers_noise_and_secret_from_unmasked_shares(coalition_round):
    """CONTROL: without masks the attack reads E mod b through any flooding, and with the lcm of
    the denominators above 2*max|E| it recovers E and the contributors' secret sum s_U."""
    fed, plan, usable, contributors, aggregate, noise, secret = coalition_round
    view = coalition_view(fed, plan, contributors, aggregate, masked=False)
    leak = rational_mu_attack(view, usable, shares_are_masked=False)
    assert leak.residues and any(b >= 3 for b, _ in leak.residues)
    for b, guess in leak.residues:
        correct = np.mean([g == e % b for g, e in zip(guess, noise, strict=True)])
        assert correct >= 0.99, f"E mod {b} recovered on {correct:.3f} of the coefficients"
    assert plan.leak_modulus(usable) > 2 * max(abs(e) for e in noise)
    assert leak.noise == noise
    assert leak.secret == secret
    assert max(abs(s) for s in secret) <= len(contributors)  # a sum of |U| ternary secrets


@pytest.mark.parametrize("subtract_known_masks", [True, False], ids=["known-masks-removed", "as-unmasked"])
def test_rational_mu_attack_learns_nothing_from_masked_shares(coalition_round, subtract_known_masks):
    """The same attack on the real shares, whether the coalition removes the masks its colluders
    share with k or treats the shares as unmasked: every E mod b guess is at chance, s_U is not
    found."""
    fed, plan, usable, contributors, aggregate, noise, secret = coalition_round
    view = coalition_view(fed, plan, contributors, aggregate, masked=True)
    leak = rational_mu_attack(view, usable, shares_are_masked=subtract_known_masks)
    assert leak.residues and len(noise) >= 2000
    for b, guess in leak.residues:
        correct = np.mean([g == e % b for g, e in zip(guess, noise, strict=True)])
        assert correct <= 1 / b + 0.05, f"E mod {b} guessed on {correct:.3f} of the coefficients"
    assert leak.secret != secret
    if leak.noise is not None:  # coprime denominators always "agree"; the result is noise
        assert np.mean([g == e for g, e in zip(leak.noise, noise, strict=True)]) <= 0.05
        assert max(abs(s) for s in leak.secret) > 2**40  # not a small polynomial, let alone s_U


def test_quorum_rule_refuses_the_attackable_two_of_three_set():
    """2-of-3: T = {1, 2} with colluder 3 would give the honest keyholders mu = 4/3 and -1/3, but
    it is below the quorum minimum ceil((3 + 2)/2) = 3; the one valid T has mu of denominator <= 2."""
    quorum = Quorum((1, 2, 3), 2)
    assert honest_weights((1, 2), (3,)) == {1: Fraction(4, 3), 2: Fraction(-1, 3)}
    with pytest.raises(RosterError, match="quorum-intersection"):
        quorum.check_decryption_set([1, 2])
    assert quorum.check_decryption_set([3, 1, 2]) == (1, 2, 3)
    for colluder in (1, 2, 3):
        assert all(mu.denominator <= 2 for mu in honest_weights((1, 2, 3), (colluder,)).values())
    assert find_plan(quorum, lambda mu: True, 100, attempts=3, colluder_sets=3, seed=0) is None

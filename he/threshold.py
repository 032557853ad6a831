"""Shamir secret sharing of RNS polynomials and integer Lagrange combination (t-of-n).

Hospital i shares its secret ``s_i`` with a random degree-(t-1) polynomial ``f_i`` per prime and
coefficient; hospital j keeps ``S_j = sum_i f_i(j)``, a share of ``s = sum_i s_i`` that nobody
forms. Decryption shares ``c1*S_j + e_j`` do *not* depend on who else answers: the server
combines any t of them with the integers ``Delta*lambda_j`` (``Delta=(n-1)!``, so no modular
inverse multiplies the flooding noise; Shoup, EUROCRYPT 2000). Hence a hospital that drops out
during decryption costs no extra message phase, and nobody ever decrypts twice per round.
The smudging noise is sized for the ``Delta`` scaling (see ``he.params``).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from functools import cache

import numpy as np

from he.errors import NotEnoughPartiesError, ShareMismatchError
from he.modarith import addmod, mulmod


def validate_party_points(points: list[int], num_shareholders: int) -> None:
    """Evaluation points are the distinct hospital indices 1..n (never 0: f(0) is the secret)."""
    if len(set(points)) != len(points) or not all(1 <= p <= num_shareholders for p in points):
        raise ShareMismatchError(
            f"party points must be distinct integers in [1, {num_shareholders}], got {points}"
        )


def gen_shamir_shares(
    secret: np.ndarray,
    random_coefficients: list[np.ndarray],
    points: list[int],
    moduli: np.ndarray,
) -> dict[int, np.ndarray]:
    """Evaluate ``f(x) = secret + sum_k r_k x^k`` at each point, per prime row (Horner).

    ``random_coefficients`` are t-1 uniform residue arrays shaped like ``secret`` (sampled by
    SEAL in ``he.keygen``); ``secret`` is ``[L, N]`` residues, ``moduli`` the L primes.
    """
    shares = {}
    for x in points:
        acc = np.zeros_like(secret)
        for coefficient in [*reversed(random_coefficients), secret]:
            scaled = mulmod(acc, np.full_like(acc, x), moduli) if acc.any() else acc
            acc = addmod(scaled, coefficient, moduli)
        shares[x] = acc
    return shares


def combine_received_shares(shares: list[np.ndarray], moduli: np.ndarray) -> np.ndarray:
    """``S_j = sum_i f_i(j)``: hospital j's share of the collective secret."""
    total = shares[0]
    for share in shares[1:]:
        total = addmod(total, share, moduli)
    return total


def integer_lagrange_weights(points: list[int], num_shareholders: int, threshold: int) -> dict:
    """``Delta * lambda_j`` (interpolation at 0) for the first ``threshold`` of ``points``.

    Returns integers (possibly negative); Delta = (n-1)! clears every denominator because
    ``prod |m - j|`` over distinct points divides (j-1)!(n-j)!, which divides (n-1)!.
    """
    if len(points) < threshold:
        raise NotEnoughPartiesError(f"{len(points)} decryption shares received, {threshold} needed")
    chosen = sorted(points)[:threshold]
    validate_party_points(chosen, num_shareholders)
    delta = math.factorial(num_shareholders - 1)
    weights = {}
    for j in chosen:
        lam = Fraction(1)
        for m in chosen:
            if m != j:
                lam *= Fraction(m, m - j)
        scaled = delta * lam
        assert scaled.denominator == 1, "Delta=(n-1)! clears every Lagrange denominator"
        weights[j] = int(scaled)
    return weights


@cache
def max_lagrange_weight(num_shareholders: int, threshold: int) -> int:
    """Worst-case ``sum_j |Delta*lambda_j|`` over every set of ``threshold`` hospitals."""
    if threshold == num_shareholders:
        return num_shareholders  # n-of-n: plain sum, every weight is 1
    return max(
        sum(abs(w) for w in integer_lagrange_weights(list(s), num_shareholders, threshold).values())
        for s in itertools.combinations(range(1, num_shareholders + 1), threshold)
    )

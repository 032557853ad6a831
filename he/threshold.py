"""Shamir secret sharing of RNS polynomials, and Lagrange coefficients modulo each prime.

Hospital i deals its secret ``s_i`` to the keyholder committee K with a random polynomial
``f_i`` of degree t_K - 1 per prime and coefficient (``f_i(0) = s_i``); keyholder k keeps
``f_i(k)`` from every dealer. For a round whose contributors are U, keyholder k's share of
``s_U = sum_{i in U} s_i`` is ``[s_U]_k = sum_{i in U} f_i(k)``, and any decryption set T of at
least t_K keyholders recovers it as ``sum_{k in T} lambda_k^T [s_U]_k`` with the Lagrange
coefficients below, reduced modulo each prime (they are never applied to noise in the clear:
``he.decrypt`` masks every share, so a coalition only ever sees the sum over T, in which the
coefficients add up to exactly 1; see docs/security.md).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from he.errors import ShareMismatchError
from he.modarith import addmod, mulmod


def validate_points(points: list[int] | tuple[int, ...]) -> None:
    """Evaluation points are distinct positive party indices (never 0: f(0) is the secret)."""
    if len(set(points)) != len(points) or not all(isinstance(p, int) and p >= 1 for p in points):
        raise ShareMismatchError(f"party points must be distinct integers >= 1, got {list(points)}")


def interpolate_at(x: int, known: dict[int, np.ndarray], moduli: np.ndarray) -> np.ndarray:
    """``f(x)`` of the degree-(len(known)-1) polynomial through ``known`` (point -> residues),
    with each Lagrange basis value reduced modulo each prime."""
    points = tuple(known)
    total = np.zeros_like(next(iter(known.values())))
    for point, values in known.items():
        basis = Fraction(1)
        for other in points:
            if other != point:
                basis *= Fraction(x - other, point - other)
        column = fraction_residues(basis, moduli)
        total = addmod(total, mulmod(values, np.broadcast_to(column, values.shape), moduli), moduli)
    return total


def sum_shares(shares: list[np.ndarray], moduli: np.ndarray) -> np.ndarray:
    """``[s_U]_k = sum_{i in U} f_i(k)``: a keyholder's share of the contributors' secret."""
    if not shares:
        raise ShareMismatchError("no dealt shares to add: the contributor set is empty")
    total = shares[0]
    for share in shares[1:]:
        total = addmod(total, share, moduli)
    return total


def lagrange_coefficient(point: int, points: tuple[int, ...] | list[int]) -> Fraction:
    """``lambda_point`` for interpolation at 0 over ``points`` (a rational number)."""
    validate_points(points)
    if point not in points:
        raise ShareMismatchError(f"point {point} is not among {list(points)}")
    value = Fraction(1)
    for other in points:
        if other != point:
            value *= Fraction(other, other - point)
    return value


def lagrange_residues(point: int, points: tuple[int, ...] | list[int], moduli: np.ndarray) -> np.ndarray:
    """``lambda_point`` modulo each prime, as a ``[L, 1]`` column."""
    return fraction_residues(lagrange_coefficient(point, points), moduli)


def fraction_residues(value: Fraction, moduli: np.ndarray) -> np.ndarray:
    """A rational number modulo each prime (numerator times inverse denominator), ``[L, 1]``."""
    column = [
        value.numerator % int(q) * pow(value.denominator % int(q), -1, int(q)) % int(q)
        for q in moduli.tolist()
    ]
    return np.array(column, dtype=np.uint64).reshape(-1, 1)

"""Exact sampling of the discrete Gaussian ``N_Z(0, sigma^2)`` over the integers.

Algorithm 3 of Canonne, Kamath, Steinke, "The Discrete Gaussian for Differential Privacy"
(NeurIPS 2020): rejection from a discrete Laplace, every coin a Bernoulli with a *rational*
parameter (``fractions.Fraction``) drawn by comparing a uniform integer, so the output follows
the distribution exactly: no floating point touches a probability, and the noise carries no
rounding artefact an attacker could exploit (Mironov, CCS 2012). ``sigma^2`` is a Fraction
(a float converts exactly). Randomness comes from ``source``: the OS CSPRNG by default; tests
pass a seeded ``random.Random``.
"""

from __future__ import annotations

import math
import random
import secrets
from fractions import Fraction

Source = random.Random  # anything with randrange(n); secrets.SystemRandom is one


def system_source() -> Source:
    """The noise source of a real run: ``os.urandom`` behind ``random.Random``'s interface."""
    return secrets.SystemRandom()


def _bernoulli(p: Fraction, source: Source) -> bool:
    return source.randrange(p.denominator) < p.numerator


def _bernoulli_exp(gamma: Fraction, source: Source) -> bool:
    """True with probability ``exp(-gamma)`` for rational ``gamma >= 0`` (CKS Algorithm 1)."""
    while gamma > 1:  # exp(-gamma) = exp(-1)^floor(gamma) * exp(-(gamma - floor(gamma)))
        if not _bernoulli_exp(Fraction(1), source):
            return False
        gamma -= 1
    k = 1
    while _bernoulli(gamma / k, source):
        k += 1
    return k % 2 == 1


def _discrete_laplace(t: int, source: Source) -> int:
    """``P(y) ∝ exp(-|y|/t)`` for a positive integer ``t`` (CKS Algorithm 2 with s = 1)."""
    while True:
        u = source.randrange(t)
        if not _bernoulli_exp(Fraction(u, t), source):
            continue
        v = 0
        while _bernoulli_exp(Fraction(1), source):
            v += 1
        magnitude = u + t * v
        negative = source.randrange(2) == 1
        if negative and magnitude == 0:
            continue
        return -magnitude if negative else magnitude


def discrete_gaussian(sigma2: Fraction, source: Source) -> int:
    """One draw of ``N_Z(0, sigma2)``: ``P(y) ∝ exp(-y^2 / (2 sigma2))`` (CKS Algorithm 3)."""
    if sigma2 <= 0:
        raise ValueError(f"sigma^2 must be positive, got {sigma2}")
    t = math.isqrt(sigma2.numerator // sigma2.denominator) + 1  # floor(sigma) + 1
    while True:
        y = _discrete_laplace(t, source)
        excess = abs(y) - sigma2 / t
        if _bernoulli_exp(excess * excess / (2 * sigma2), source):
            return y


def discrete_gaussian_vector(sigma2: Fraction, size: int, source: Source) -> list[int]:
    """``size`` independent draws, as Python integers."""
    return [discrete_gaussian(sigma2, source) for _ in range(size)]

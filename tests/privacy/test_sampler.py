"""The exact discrete Gaussian sampler against the distribution it must follow."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from scipy import stats

from privacy.sampler import discrete_gaussian, discrete_gaussian_vector, system_source

DRAWS = 20_000
ALPHA = 1e-6  # a correct sampler fails a test once in a million runs


def exact_pmf(sigma2: float, support: range) -> dict[int, float]:
    weights = {y: math.exp(-(y * y) / (2 * sigma2)) for y in range(-200, 201)}
    total = math.fsum(weights.values())
    return {y: weights[y] / total for y in support}


def chi_square_p(draws: list[int], sigma2: float) -> float:
    """p-value of the draws under ``N_Z(0, sigma2)``, the tails |y| > 6 pooled."""
    support = range(-6, 7)
    pmf = exact_pmf(sigma2, support)
    observed = [sum(1 for d in draws if d == y) for y in support] + [sum(1 for d in draws if abs(d) > 6)]
    expected = [pmf[y] * len(draws) for y in support] + [(1 - math.fsum(pmf.values())) * len(draws)]
    return float(stats.chisquare(observed, expected).pvalue)


@pytest.fixture(scope="module")
def draws() -> list[int]:
    return discrete_gaussian_vector(Fraction(2), DRAWS, random.Random(7))


def test_draws_are_python_integers_from_the_exact_pmf(draws) -> None:
    assert all(type(d) is int for d in draws)
    assert chi_square_p(draws, 2.0) > ALPHA


def test_the_same_test_rejects_a_wrong_variance(draws) -> None:
    assert chi_square_p(draws, 2.5) < ALPHA
    assert chi_square_p(draws, 1.6) < ALPHA


def test_large_sigma_and_the_os_source() -> None:
    sigma2 = Fraction(2**50)  # sigma = 2^25, the size of a real noise share
    sample = [discrete_gaussian(sigma2, system_source()) for _ in range(4000)]
    ratio = sum(d * d for d in sample) / len(sample) / float(sigma2)
    assert abs(ratio - 1) < 6 * math.sqrt(2 / len(sample))


def test_non_positive_variance_is_refused() -> None:
    with pytest.raises(ValueError):
        discrete_gaussian(Fraction(0), random.Random(0))

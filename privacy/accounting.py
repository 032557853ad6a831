"""The ε of the distributed discrete Gaussian, composed with ``dp-accounting``'s RDP accountant.

``dp-accounting`` has no event for the distributed discrete Gaussian, so one round is the
paper's bound written as the library's ``ZCDpEvent``: Kairouz, Liu, Steinke (ICML 2021),
Proposition 14 (first term) — ``n`` independent ``N_Z(0, sigma^2)`` shares added to an integer
vector of L2 norm at most ``Δ2`` give, for every order ``α > 1``, Rényi DP

    ε(α) = α Δ2² / (2 n sigma²) + τ d,   τ = 10 Σ_{k=1}^{n-1} exp(-2π² sigma² k/(k+1)),

i.e. (ξ, ρ)-zCDP with ``ρ = Δ2² / (2 n sigma²)`` and ``ξ = τ d``. The library composes it over
the rounds and converts RDP to (ε, δ). ``Δ2`` is the inflated bound of conditional randomized
rounding (their Theorem 1 setting, ``β = exp(-1/2)``), so the ε covers the integers we encrypt,
not the real-valued update.
"""

from __future__ import annotations

import math

import dp_accounting
from dp_accounting.rdp import RdpAccountant

BETA = math.exp(-0.5)  # conditional rounding: a draw is refused with probability at most β


def rounded_l2_bound(units: float, dim: int) -> float:
    """L2 bound after conditional randomized rounding of a vector of norm ``units`` (KLS21 Thm 1)."""
    spread = math.sqrt(2 * math.log(1 / BETA)) * (units + math.sqrt(dim) / 2)
    return min(units + math.sqrt(dim), math.sqrt(units**2 + dim / 4 + spread))


def tau(sigma2: float, shares: int) -> float:
    """The discrete-Gaussian sum's distance from a discrete Gaussian (KLS21 Prop. 14)."""
    return 10 * sum(math.exp(-2 * math.pi**2 * sigma2 * k / (k + 1)) for k in range(1, shares))


def round_event(l2_bound: float, sigma2: float, shares: int, dim: int) -> dp_accounting.ZCDpEvent:
    """One round: ``shares`` noise shares of variance ``sigma2`` on a sum of sensitivity ``l2_bound``."""
    return dp_accounting.ZCDpEvent(rho=l2_bound**2 / (2 * shares * sigma2), xi=tau(sigma2, shares) * dim)


def epsilon(event: dp_accounting.DpEvent, rounds: int, delta: float) -> float:
    """ε after ``rounds`` rounds of ``event`` at ``delta`` (RDP composition, then conversion)."""
    if rounds == 0:
        return 0.0
    accountant = RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(accountant.get_epsilon(delta))


def gaussian_reference_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """The library's own ε for the continuous Gaussian mechanism with the same noise multiplier
    and no rounding: the number our discrete, rounded mechanism should come close to."""
    return epsilon(dp_accounting.GaussianDpEvent(noise_multiplier), rounds, delta)


def calibrate(event_for, rounds: int, target_epsilon: float, delta: float) -> float:
    """The smallest noise multiplier whose ``event_for(z)`` composed ``rounds`` times has
    ε <= ``target_epsilon`` (the library's calibration: bracketed root finding, rounded up)."""
    return float(
        dp_accounting.calibrate_dp_mechanism(
            RdpAccountant,
            lambda z: dp_accounting.SelfComposedDpEvent(event_for(z), rounds),
            target_epsilon,
            delta,
            dp_accounting.ExplicitBracketInterval(1e-3, 1e4),
            tol=1e-6,
        )
    )

"""The ε of the distributed discrete Gaussian against the library's and a reference computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.settings import RunSettings
from he.params import preset
from privacy import accounting
from privacy.config import DpConfig
from privacy.mechanism import plan_for
from strategies.fedavg import FedAvg

DELTA = 1e-5
ROUNDS = 5
# docs/privacy.md quotes these: z = 1, m = 3 shares, 1058 values (the breast-cancer MLP), precise
GAUSSIAN_REFERENCE = 12.30169148  # dp-accounting's GaussianDpEvent(1.0), 5 rounds, δ = 1e-5


def plan(**changes):
    values = {"clip_norm": 0.5, "noise_multiplier": 1.0, "target_epsilon": 0.0, "delta": DELTA}
    config = DpConfig(**values | {"min_contributors": 3, "rounds": ROUNDS} | changes)
    return plan_for(config, preset("precise"), 1058)


def reference_epsilon(rho: float, xi: float, rounds: int, delta: float) -> float:
    """(ε, δ) from (ξ, ρ)-zCDP composed ``rounds`` times, minimised over a fine grid of orders
    (the conversion of Canonne, Kamath, Steinke 2020, Prop. 12), independently of the library."""
    alpha = np.linspace(1.001, 200, 400_000)
    rdp = rounds * (xi + rho * alpha)
    eps = rdp + np.log1p(-1 / alpha) - (math.log(delta) + np.log(alpha)) / (alpha - 1)
    return float(np.min(eps))


def test_library_gaussian_reference_value() -> None:
    reference = accounting.gaussian_reference_epsilon(1.0, ROUNDS, DELTA)
    assert reference == pytest.approx(GAUSSIAN_REFERENCE, rel=1e-8)


def test_discrete_mechanism_matches_the_reference_computation() -> None:
    p = plan()
    event = p.event
    ours = p.epsilon(ROUNDS, DELTA)
    assert ours == pytest.approx(reference_epsilon(event.rho, event.xi, ROUNDS, DELTA), rel=5e-3)
    # the rounding inflates the sensitivity by l2_bound/units: a hair above the continuous Gaussian
    assert GAUSSIAN_REFERENCE < ours < GAUSSIAN_REFERENCE * (p.l2_bound / p.units) ** 2 * 1.001
    assert event.xi == 0.0  # τ underflows for shares of std ~10^7 units


def test_fewer_units_cost_epsilon() -> None:
    """The inflated bound matters when units are few: ε of a coarse encoding is larger."""
    units, dim = 4 * math.sqrt(1058), 1058  # 16 times fewer than any plan may have
    coarse = accounting.round_event(accounting.rounded_l2_bound(units, dim), units**2 / 3, 3, dim)
    assert accounting.epsilon(coarse, ROUNDS, DELTA) > plan().epsilon(ROUNDS, DELTA) * 1.01


@pytest.mark.parametrize("target", [1.0, 3.0, 8.0])
def test_noise_solved_for_a_target_epsilon_spends_at_most_it(target) -> None:
    p = plan(noise_multiplier=0.0, target_epsilon=target)
    assert target * 0.99 < p.epsilon(ROUNDS, DELTA) <= target
    assert p.epsilon(ROUNDS - 1, DELTA) < p.epsilon(ROUNDS, DELTA)


def test_a_fixed_noise_run_stops_before_passing_its_target() -> None:
    weights = [np.zeros((30, 32)), np.zeros(32), np.zeros((32, 2)), np.zeros(2)]  # 1058 values
    dp = {"dp": "distributed", "dp_noise_multiplier": 1.0, "dp_min_contributors": 3, "he_preset": "precise"}
    one_round = plan().epsilon(1, DELTA)
    strategy = FedAvg(RunSettings(num_rounds=5, dp_target_epsilon=one_round * 1.01, **dp))
    assert not strategy.over_privacy_budget(1, weights)
    assert strategy.over_privacy_budget(2, weights)
    assert not FedAvg(RunSettings(num_rounds=5, **dp)).over_privacy_budget(5, weights)  # no target

"""The hospital's DP encoding: clip, conditional rounding, noise shares, and their aggregate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from he.context import HEContext
from he.encoding import UpdateEncoder
from he.params import preset
from privacy import sampler
from privacy.config import DpConfig
from privacy.hospital import TooFewContributors, require_contributors
from privacy.mechanism import TAIL, DpConfigError, plan_for

PRECISE = preset("precise")
SHARES = 2  # m: hospitals whose noise shares make the aggregate's


def dp_config(**changes) -> DpConfig:
    values = {"clip_norm": 0.5, "noise_multiplier": 1.0, "target_epsilon": 0.0, "delta": 1e-5}
    return DpConfig(**values | {"min_contributors": SHARES, "rounds": 5} | changes)


@pytest.fixture(scope="module")
def encoder() -> UpdateEncoder:
    return UpdateEncoder(PRECISE, HEContext(PRECISE).num_payload)


def encode(encoder, plan, arrays, rng):
    return encoder.encode(arrays, 1, rng, plan.layout_clip, plan.weight_scale, plan.privatize)


def aggregate_noise(encoder, plan, hospitals: int, dim: int, rng) -> np.ndarray:
    """The integer noise of a decrypted aggregate of all-zero updates (exactly what HE sums)."""
    encoded = [encode(encoder, plan, [np.zeros(dim)], rng) for _ in range(hospitals)]
    fields = sum(e.fields for e in encoded)
    (mean,), count = encoder.decode(fields, encoded[0].layout, hospitals)
    assert count == hospitals  # weight 1 each: the decrypted "count" is the contributors, no more
    return np.rint(mean * hospitals * plan.units / plan.clip_norm)


def test_aggregate_noise_has_the_configured_variance_and_not_another(encoder) -> None:
    dim = 2000
    plan = plan_for(dp_config(), PRECISE, dim)
    rng = np.random.default_rng(1)
    noise = np.concatenate([aggregate_noise(encoder, plan, SHARES, dim, rng) for _ in range(8)])
    target = SHARES * float(plan.sigma2)  # = (noise_multiplier * units)^2: m shares make the target
    assert math.sqrt(target) == pytest.approx(plan.noise_multiplier * plan.units)
    ratio = float(np.mean(noise**2)) / target
    tolerance = 6 * math.sqrt(2 / noise.size)  # 6 standard errors of a variance estimate: 6.7%
    assert abs(ratio - 1) < tolerance
    wrong = (SHARES + 1) * float(plan.sigma2)  # e.g. one share too many
    assert abs(float(np.mean(noise**2)) / wrong - 1) > tolerance
    assert abs(float(np.mean(noise))) < 6 * math.sqrt(target / noise.size)
    assert stats.kstest(noise / math.sqrt(target), "norm").pvalue > 1e-6
    assert stats.kstest(noise / math.sqrt(wrong), "norm").pvalue < 1e-6


def test_each_contribution_is_clipped_to_clip_norm(encoder, monkeypatch) -> None:
    monkeypatch.setattr(sampler, "discrete_gaussian_vector", lambda sigma2, size, source: [0] * size)
    plan = plan_for(dp_config(), PRECISE, 3)
    update = [np.array([30.0, -40.0, 0.0])]  # L2 norm 50, a hundred times clip_norm

    def decoded(arrays):
        encoded = encode(encoder, plan, arrays, np.random.default_rng(0))
        return encoder.decode(encoded.fields, encoded.layout, 1)[0][0]

    bound = plan.clip_norm * plan.l2_bound / plan.units  # clip_norm, inflated by rounding only
    assert float(np.linalg.norm(decoded(update))) <= bound  # the encoder's hook alone bounds it
    clipped = plan.clip(update)  # what client.app encodes: the direction kept
    np.testing.assert_allclose(clipped[0], [0.3, -0.4, 0.0])
    np.testing.assert_allclose(decoded(clipped), [0.3, -0.4, 0.0], atol=2 * plan.clip_norm / plan.units)


def test_conditional_rounding_is_bounded_and_unbiased() -> None:
    plan = plan_for(dp_config(), PRECISE, 400)
    rng = np.random.default_rng(2)
    values = rng.normal(size=400)
    values *= plan.units / np.linalg.norm(values)  # on the clip sphere: rounding may push out
    rounds = np.array([plan.round(values, rng) for _ in range(300)])
    assert all(sum(int(v) ** 2 for v in r) <= plan.l2_bound**2 for r in rounds)
    assert float(np.max(np.abs(rounds.mean(axis=0) - values))) < 0.2


def test_noisy_values_fit_each_contributions_field_range() -> None:
    plan = plan_for(dp_config(noise_multiplier=3.0), PRECISE, 1000)
    half_range = (1 << (PRECISE.value_bits - 1)) - 1
    offset = -(-half_range // plan.weight_scale)
    assert plan.l2_bound + TAIL * math.sqrt(float(plan.sigma2)) <= offset
    assert plan.layout_clip <= PRECISE.clip


def test_compact_preset_is_refused_for_dp() -> None:
    with pytest.raises(DpConfigError, match="precise"):
        plan_for(dp_config(), preset("compact"), 1000)


def test_a_roster_admitting_fewer_than_m_contributors_is_refused() -> None:
    plan = plan_for(dp_config(min_contributors=3), PRECISE, 10)
    with pytest.raises(TooFewContributors, match="fewer than the 3"):
        require_contributors(plan, 2)
    require_contributors(plan, 3)

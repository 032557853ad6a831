"""Regression and survival: the pooled metrics from summed integer vectors equal those of the
concatenated test sets within each module's stated bound; the Cox loss matches a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pooled_metrics import add_sums
from models.regression import LARGEST_TOTAL
from models.survival import cox_loss, harrell_c
from models.tasks import EvaluationSettings, get_task


def pooled(task, layout, sites):
    total = None
    for targets, predictions, loss_total in sites:
        sums = task.local_sums(layout, targets, predictions, loss_total)
        total = sums if total is None else add_sums(total, sums)
    return task.from_sums(layout, total)


def regression_sites(rng, sizes, offset, scale):
    sites = []
    for n in sizes:
        y = offset + scale * rng.normal(size=n)
        y_hat = y + scale * rng.normal(scale=0.5, size=n)
        sites.append((y, y_hat, math.fsum((y - y_hat) ** 2)))
    return sites


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(2, 300), min_size=1, max_size=6),
    offset=st.sampled_from([0.0, -3.0, 7.5, 1000.0]),
    scale=st.sampled_from([1e-3, 1.0, 40.0]),
)
def test_pooled_regression_metrics_are_those_of_the_pooled_predictions_within_the_bound(
    seed, sizes, offset, scale
):
    task = get_task("regression")
    sites = regression_sites(np.random.default_rng(seed), sizes, offset, scale)
    y = np.concatenate([s[0] for s in sites])
    y_hat = np.concatenate([s[1] for s in sites])
    result = pooled(task, task.layout(EvaluationSettings()), sites)
    metrics, bounds = result.metrics(), result.bounds()
    exact = {
        "eval_mse": math.fsum((y - y_hat) ** 2) / len(y),
        "eval_mae": math.fsum(np.abs(y - y_hat)) / len(y),
        "eval_r2": 1 - math.fsum((y - y_hat) ** 2) / math.fsum((y - y.mean()) ** 2),
    }
    assert metrics["eval_examples"] == len(y)
    sst = math.fsum((y - y.mean()) ** 2)
    # what rounding can move Σy² - (Σy)²/n by: fixed point of Σy² and of Σy (times 2·mean), float64
    resolution = len(sizes) * 2**-33 * (1 + 4 * abs(y.mean())) + 2**-50 * math.fsum(y * y)
    for name, value in exact.items():
        if bounds[name] == math.inf:  # a target constant to within its rounding, or Σy² past 2^30
            assert name == "eval_r2" and (sst < 100 * resolution or math.fsum(y * y) >= LARGEST_TOTAL)
            continue
        assert abs(metrics[name] - value) <= bounds[name], (name, metrics[name], value, bounds[name])
    assert bounds["eval_mse"] <= len(sizes) * 2**-32 / len(y) + 1e-15 * exact["eval_mse"]
    if sst > 1e8 * resolution and math.fsum(y * y) < LARGEST_TOTAL:  # past it the pooled Σy² saturates
        assert bounds["eval_r2"] < 1e-6


def test_a_regression_total_beyond_the_fixed_point_range_is_refused_naming_it():
    task = get_task("regression")
    y = np.full(10, 20_000.0)  # Σy² = 4e9 > 2^30
    with pytest.raises(ValueError, match=r"y_squared.*rescale the target"):
        task.local_sums(task.layout(EvaluationSettings()), y, y, 0.0)


def weibull_sites(rng, sizes, censoring=0.3):
    """Per hospital: (time, event), a risk score correlated with the hazard, and the Cox loss total."""
    sites = []
    for n in sizes:
        x = rng.normal(size=n)
        time = rng.weibull(1.5, n) * np.exp(-0.8 * x)  # higher x: earlier events
        censor = rng.exponential(np.quantile(time, 0.9) / censoring, n)
        observed = np.minimum(time, censor)
        event = (time <= censor).astype(float)
        risk = 0.8 * x + rng.normal(scale=0.7, size=n)
        targets = np.column_stack([observed, event])
        loss = float(cox_loss(torch.tensor(risk), torch.tensor(observed), torch.tensor(event))) * event.sum()
        sites.append((targets, risk, loss))
    return sites


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("time_bins", "risk_bins"), [(5, 10), (20, 100), (100, 1000)])
def test_pooled_c_index_is_harrells_c_of_the_pooled_predictions_within_the_bound(seed, time_bins, risk_bins):
    rng = np.random.default_rng(seed)
    sites = weibull_sites(rng, sizes=rng.integers(20, 200, size=rng.integers(2, 6)))
    targets = np.concatenate([s[0] for s in sites])
    risk = np.concatenate([s[1] for s in sites])
    exact = harrell_c(targets[:, 0], targets[:, 1], risk)
    task = get_task("survival")
    horizon = float(np.quantile(targets[:, 0], 0.95))
    layout = task.layout(EvaluationSettings(bins=risk_bins, time_bins=time_bins, horizon=horizon))
    metrics = pooled(task, layout, sites).metrics()
    assert metrics["eval_examples"] == len(risk)
    assert metrics["eval_events"] == targets[:, 1].sum()
    assert abs(metrics["eval_c_index"] - exact) <= metrics["eval_c_index_bound"] + 1e-12
    assert 0.5 < exact < 0.9  # an informative risk: the test is not of a trivial C


def test_the_c_index_bound_shrinks_with_finer_bins_and_is_what_coarse_bins_need():
    rng = np.random.default_rng(11)
    sites = weibull_sites(rng, sizes=[300, 500, 200])
    targets = np.concatenate([s[0] for s in sites])
    exact = harrell_c(targets[:, 0], targets[:, 1], np.concatenate([s[1] for s in sites]))
    task, horizon = get_task("survival"), float(np.quantile(targets[:, 0], 0.99))
    results = [
        pooled(task, task.layout(EvaluationSettings(bins=m, time_bins=t, horizon=horizon)), sites).metrics()
        for t, m in ((2, 3), (20, 100), (200, 1000))
    ]
    bounds = [r["eval_c_index_bound"] for r in results]
    assert bounds[0] > bounds[1] > bounds[2]
    assert abs(results[0]["eval_c_index"] - exact) > 0.01  # coarse bins visibly miss ...
    assert abs(results[0]["eval_c_index"] - exact) <= bounds[0]  # ... within their bound
    assert bounds[2] < 0.05


def test_cox_loss_is_the_breslow_partial_likelihood_computed_by_hand():
    # subjects: (time, event, risk); times 1, 2, 2, 3 with a tie at 2 of an event and a censoring
    time = torch.tensor([2.0, 1.0, 2.0, 3.0])
    event = torch.tensor([1.0, 1.0, 0.0, 1.0])
    risk = torch.tensor([0.3, 0.5, -0.2, 0.1], dtype=torch.float64, requires_grad=True)
    e = np.exp([0.3, 0.5, -0.2, 0.1])
    by_hand = (
        -(
            (0.5 - np.log(e.sum()))  # t=1: everyone at risk
            + (0.3 - np.log(e[0] + e[2] + e[3]))  # t=2: the tied censoring is still at risk
            + (0.1 - np.log(e[3]))  # t=3: alone
        )
        / 3
    )
    loss = cox_loss(risk, time, event)
    assert loss.item() == pytest.approx(by_hand, abs=1e-12)
    loss.backward()
    assert risk.grad is not None and torch.all(torch.isfinite(risk.grad))


def test_cox_loss_with_tied_events_gives_each_the_whole_tie_group_breslow():
    time = torch.tensor([1.0, 1.0, 2.0])
    event = torch.tensor([1.0, 1.0, 1.0])
    risk = torch.tensor([0.4, -0.3, 0.2], dtype=torch.float64)
    e = np.exp([0.4, -0.3, 0.2])
    by_hand = -((0.4 - np.log(e.sum())) + (-0.3 - np.log(e.sum())) + (0.2 - np.log(e[2]))) / 3
    assert float(cox_loss(risk, time, event)) == pytest.approx(by_hand, abs=1e-12)
    assert float(cox_loss(risk, time, torch.zeros(3))) == 0.0  # no event: nothing to explain


def test_survival_refuses_record_level_dp_and_the_others_allow_it():
    with pytest.raises(ValueError, match="task=survival cannot train with record-level DP"):
        get_task("survival").check_record_dp()
    get_task("regression").check_record_dp()
    get_task("classification").check_record_dp()


def test_an_unknown_task_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"one of \('classification', 'regression', 'survival'\)"):
        get_task("ranking")


def test_a_survival_layout_needs_a_horizon():
    with pytest.raises(ValueError, match="time horizon > 0"):
        get_task("survival").layout(EvaluationSettings(time_bins=10, horizon=0.0))

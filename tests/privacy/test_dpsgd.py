"""Record-level DP (DP-SGD): per-example clipping, the noise, the accounting and the budget."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from opacus.accountants import RDPAccountant
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from client.local_data import TaskConfig
from common.settings import RunSettings
from experiments.run_config import to_settings
from models.training import get_weights, train
from privacy.config import KEYS, DpConfig, RecordDpConfig, RecordDpConfigError
from privacy.dpsgd import make_private
from privacy.dpsgd_budget import (
    DpSgdPlan,
    PrivacyBudgetExceeded,
    noise_multiplier_for,
    plan_from_round_config,
    sampling,
)

DP = RecordDpConfig(clip_norm=1.0, noise_multiplier=1.1, target_epsilon=0.0, delta=1e-5, rounds=3)


def loader_of(features: torch.Tensor, batch_size: int = 8) -> DataLoader:
    labels = torch.zeros(len(features), dtype=torch.long)
    return DataLoader(TensorDataset(features, labels), batch_size=batch_size)


def test_each_examples_gradient_is_clipped_to_clip_norm() -> None:
    """One example whose raw gradient is far above the clip contributes at most clip_norm."""
    torch.manual_seed(0)
    model = nn.Linear(5, 2)
    loader = loader_of(torch.full((10, 5), 100.0))
    plan = DpSgdPlan.for_hospital(DP, 10, 8, 1)
    private, optimizer, _ = make_private(plan, model, torch.optim.SGD(model.parameters(), lr=1.0), loader)
    for batch in (1, 3):
        optimizer.zero_grad()
        inputs, labels = loader.dataset[:batch]
        nn.functional.cross_entropy(private(inputs), labels).backward()
        raw = math.sqrt(sum(float(p.grad_sample[0].square().sum()) for p in model.parameters()))
        optimizer.clip_and_accumulate()
        summed = math.sqrt(sum(float(p.summed_grad.square().sum()) for p in model.parameters()))
        assert raw > 10 * DP.clip_norm
        assert summed <= batch * DP.clip_norm + 1e-5
        assert summed == pytest.approx(batch * DP.clip_norm, rel=1e-4)  # identical examples add up


def test_noise_has_std_noise_multiplier_times_clip_over_expected_batch() -> None:
    """With zero gradients, one SGD step (lr 1) moves each weight by the noise / batch size."""
    dp = RecordDpConfig(clip_norm=0.5, noise_multiplier=2.0, target_epsilon=0.0, delta=1e-5, rounds=1)
    model = nn.Linear(500, 100)  # 50100 draws: the std within 3% is 10 standard errors
    before = np.concatenate([w.ravel() for w in get_weights(model)])
    loader = loader_of(torch.zeros(100, 500), batch_size=10)
    plan = DpSgdPlan.for_hospital(dp, 100, 10, 1)
    private, optimizer, _ = make_private(plan, model, torch.optim.SGD(model.parameters(), lr=1.0), loader)
    inputs, _ = loader.dataset[:10]
    (0.0 * private(inputs).sum()).backward()
    optimizer.step()
    moved = np.concatenate([w.ravel() for w in get_weights(model)]) - before
    assert np.std(moved) == pytest.approx(2.0 * 0.5 / 10, rel=0.03)
    assert abs(np.mean(moved)) < 0.003


@pytest.mark.parametrize(("sample_rate", "steps", "sigma"), [(0.01, 1000, 1.1), (0.05, 120, 0.8)])
def test_accountant_matches_opacus(sample_rate: float, steps: int, sigma: float) -> None:
    dp = RecordDpConfig(clip_norm=1.0, noise_multiplier=sigma, target_epsilon=0.0, delta=1e-5, rounds=1)
    ours = DpSgdPlan(dp, sample_rate, steps).epsilon(1)
    opacus = RDPAccountant()
    opacus.history = [(sigma, sample_rate, steps)]
    assert ours == pytest.approx(opacus.get_epsilon(1e-5), rel=1e-3)


def test_the_run_counts_every_local_step_of_every_round() -> None:
    assert sampling(100, 10, 2) == (0.1, 20)
    plan = DpSgdPlan.for_hospital(DP, 100, 10, 2)
    rounds = [plan.epsilon(r) for r in range(4)]
    assert rounds[0] == 0 and rounds[1] < rounds[2] < rounds[3]
    assert rounds[3] == pytest.approx(DpSgdPlan(DP, 0.1, 60).epsilon(1))


def test_plan_from_round_config_reads_the_round_config() -> None:
    config = RunSettings(dp="record", dp_noise_multiplier=1.1, num_rounds=3, batch_size=10, local_epochs=2)
    expected = DpSgdPlan.for_hospital(DP, 100, 10, 2).epsilon(2)
    assert plan_from_round_config(config.task_config(), 100).epsilon(2) == pytest.approx(expected)
    assert plan_from_round_config(RunSettings().task_config(), 100) is None


def test_a_run_over_its_budget_is_refused_before_training() -> None:
    model = nn.Linear(5, 2)
    before = get_weights(model)
    over = RecordDpConfig(clip_norm=1.0, noise_multiplier=0.5, target_epsilon=1.0, delta=1e-5, rounds=5)
    with pytest.raises(PrivacyBudgetExceeded, match=r"above dp\.target_epsilon = 1;"):
        train(model, loader_of(torch.randn(50, 5)), 1, 0.1, seed=0, dp=over)
    assert all(np.array_equal(a, b) for a, b in zip(before, get_weights(model), strict=True))


def test_a_run_within_its_budget_trains_and_leaves_a_plain_model() -> None:
    model = nn.Linear(5, 2)
    within = RecordDpConfig(clip_norm=1.0, noise_multiplier=1.0, target_epsilon=50.0, delta=1e-5, rounds=1)
    before = get_weights(model)
    loss = train(model, loader_of(torch.randn(50, 5)), 1, 0.1, seed=0, dp=within)
    assert math.isfinite(loss)
    assert not all(np.array_equal(a, b) for a, b in zip(before, get_weights(model), strict=True))
    assert not model._forward_hooks and not model._backward_hooks  # Opacus's hooks are gone


@pytest.mark.parametrize("noise", [0.0, -1.0, math.inf])
def test_a_noise_multiplier_that_gives_no_guarantee_is_refused(noise: float) -> None:
    with pytest.raises(RecordDpConfigError, match="positive finite noise_multiplier"):
        RecordDpConfig(clip_norm=1.0, noise_multiplier=noise, target_epsilon=0.0, delta=1e-5, rounds=1)
    with pytest.raises(RecordDpConfigError):  # the run refuses it up front, not in round 1
        RunSettings(dp="record", dp_noise_multiplier=noise)


def test_record_mode_gives_no_distributed_plan() -> None:
    """dp=record leaves the encrypted aggregation as it is (no noise shares, no DP layout)."""
    config = RunSettings(dp="record", dp_noise_multiplier=1.0, num_rounds=2).dp_config()
    assert config[KEYS["dp"]] == "record"
    assert DpConfig.from_config(config) is None
    assert RecordDpConfig.from_config(config) == RecordDpConfig(1.0, 1.0, 0.0, 1e-5, 2)


def test_the_calibrated_noise_meets_the_target_and_no_less_does() -> None:
    z = noise_multiplier_for(3.0, 1e-5, 5, 0.05, 20)
    at = RecordDpConfig(clip_norm=1.0, noise_multiplier=z, target_epsilon=3.0, delta=1e-5, rounds=5)
    assert DpSgdPlan(at, 0.05, 20).epsilon(5) == pytest.approx(3.0, rel=1e-3)
    DpSgdPlan.for_hospital(at, 320, 16, 1)  # 320 records, batches of 16: the same sampling
    below = RecordDpConfig(clip_norm=1.0, noise_multiplier=0.99 * z, target_epsilon=3.0, delta=1e-5, rounds=5)
    with pytest.raises(PrivacyBudgetExceeded):
        DpSgdPlan.for_hospital(below, 320, 16, 1)


def test_record_dp_reaches_the_hospitals_config_from_hydra() -> None:
    with initialize_config_dir(config_dir=str(Path(__file__).parents[2] / "conf"), version_base=None):
        cfg = compose("config", overrides=["dp=record", "dp.noise_multiplier=1.3", "dp.target_epsilon=4"])
    settings, _ = to_settings(cfg)
    again = RunSettings.from_run_config(settings.to_run_config())  # deployment: flwr run config
    assert TaskConfig.from_config(again.task_config()).record_dp == RecordDpConfig(
        1.0, 1.3, 4.0, 1e-5, settings.num_rounds
    )

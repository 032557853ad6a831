"""The regression and survival examples run encrypted in Flower's Simulation Engine; encrypted
regression equals plaintext FedAvg (the tolerance of test_simulation)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from sim_helpers import WEIGHT_TOLERANCE, simulate

from client import app as hospital
from examples.regression.__main__ import overrides as regression_overrides
from examples.survival.__main__ import overrides as survival_overrides
from experiments.run_config import to_settings

CONF = Path(__file__).resolve().parents[2] / "conf"


def example_settings(overrides: list[str]):
    """The example's own run, shortened to 2 rounds, with the preset and threshold of
    test_simulation's equivalence test."""
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        shorter = [*overrides, "num_rounds=2", "he=precise", "he.threshold=2"]
        cfg = compose(config_name="config", overrides=shorter)
    return to_settings(cfg)[0]


@pytest.mark.slow
def test_task_examples_run_encrypted_and_regression_equals_plaintext_fedavg(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write their hospitals' tables under outputs/
    regression = example_settings(regression_overrides())
    encrypted = simulate(regression, hospital.app, 3)
    plain = simulate(replace(regression, strategy="fedavg"), hospital.app, 3)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(encrypted.weights, plain.weights, strict=True))
    assert diff < WEIGHT_TOLERANCE
    for name in ("eval_mse", "eval_mae", "eval_r2"):
        assert encrypted.final_metrics[name] == pytest.approx(plain.final_metrics[name], rel=1e-4)
    assert encrypted.final_metrics["eval_r2"] > 0.3  # it learned the stay from the admission data

    survival = simulate(example_settings(survival_overrides()), hospital.app, 3)
    metrics = survival.final_metrics
    assert 0.55 < metrics["eval_c_index"] <= 1.0 and 0 < metrics["eval_c_index_bound"] < 0.05
    assert metrics["eval_events"] > 0 and len(survival.history) == 2

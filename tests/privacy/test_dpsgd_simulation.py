"""Record-level DP (DP-SGD) end to end in Flower's Simulation Engine, encrypted (3 hospitals)."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).parents[1] / "integration"))
from sim_helpers import hospital_app, simulate, stopped_runs

from common.settings import RunSettings

RECORD = {"dp": "record", "dp_clip_norm": 1.0, "dp_noise_multiplier": 1.0, "dp_delta": 1e-5}
COMMON = {"strategy": "encrypted_fedavg", "threshold": 2, "seed": 4, "min_train_nodes": 2, **RECORD}


@pytest.mark.slow
def test_an_encrypted_dp_sgd_run_trains_every_round() -> None:
    result = simulate(RunSettings(num_rounds=2, dp_target_epsilon=20.0, **COMMON), hospital_app(), 3)
    assert len(result.history) == 2
    assert 0.5 < result.final_metrics["eval_accuracy"] <= 1.0
    assert math.isfinite(result.final_metrics["eval_auc"])


@pytest.mark.slow
def test_hospitals_refuse_a_run_over_their_budget(caplog) -> None:
    """ε = 0.1 over 3 rounds is out of reach at noise multiplier 1: every hospital refuses before
    training, so nothing is encrypted and the run stops."""
    settings = RunSettings(num_rounds=3, dp_target_epsilon=0.1, **COMMON)
    with caplog.at_level(logging.WARNING):
        errors = stopped_runs(settings, 3)
    assert len(errors) == 1 and "0 valid encrypted contributions" in str(errors[0])
    assert "above dp.target_epsilon = 0.1; refusing to train" in caplog.text

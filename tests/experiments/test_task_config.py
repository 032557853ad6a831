"""The task reaches the run from the Hydra config: the examples' overrides make valid settings,
and a task that cannot run fails before any process starts, naming what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_model_config import settings_of

from common.settings import RunSettings
from examples.regression.__main__ import overrides as regression_overrides
from examples.survival.__main__ import overrides as survival_overrides
from experiments.run_config import ConfigError


def test_the_examples_overrides_make_encrypted_runs_of_their_tasks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write their hospitals' tables under outputs/
    regression = settings_of(*regression_overrides())
    assert (regression.task, regression.target_column, regression.num_outputs) == (
        "regression",
        "length_of_stay",
        1,
    )
    survival = settings_of(*survival_overrides())
    assert (survival.task, survival.time_horizon, survival.time_bins, survival.num_outputs) == (
        "survival",
        60.0,
        60,
        1,
    )
    for settings in (regression, survival):
        assert settings.encrypted and len(settings.data_paths.split(",")) == 3
        assert all(Path(p).is_relative_to(tmp_path / "outputs") for p in settings.data_paths.split(","))
        assert settings.task_config()["task"] == settings.task  # what the hospitals receive


def test_classification_of_a_csv_still_needs_its_number_of_classes(tmp_path):
    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for path in paths:
        path.write_text("x,target\n1,0\n")
    csv = ["dataset=csv", f"dataset.paths=[{paths[0]},{paths[1]}]", "dataset.num_features=1"]
    with pytest.raises(ConfigError, match=r"task=classification needs dataset\.num_classes"):
        settings_of(*csv, "federation.num_hospitals=2")


def test_survival_without_a_horizon_or_with_record_level_dp_is_refused():
    with pytest.raises(ValueError, match=r"time horizon > 0 \(evaluation.time_horizon\)"):
        RunSettings(task="survival")
    with pytest.raises(ValueError, match="task=survival cannot train with record-level DP"):
        RunSettings(task="survival", time_horizon=60.0, dp="record", dp_noise_multiplier=1.0)
    RunSettings(task="regression", dp="record", dp_noise_multiplier=1.0)  # a per-example loss: allowed


def test_an_unknown_task_is_refused_before_the_run():
    with pytest.raises(ValueError, match="task must be one of"):
        RunSettings(task="ranking")

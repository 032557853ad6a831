"""The ``dp`` group: Hydra config -> RunSettings -> Flower run config -> what hospitals read."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from common.settings import RunSettings
from experiments.run_config import ConfigError, to_settings
from privacy.config import DpConfig

CONF = str(Path(__file__).parents[2] / "conf")


def composed(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose("config", overrides=list(overrides))


def test_dp_is_off_by_default() -> None:
    settings, _ = to_settings(composed())
    assert settings.dp == "off"
    assert DpConfig.from_config(settings.task_config()) is None


def test_distributed_dp_reaches_the_hospitals_config() -> None:
    settings, _ = to_settings(composed("dp=distributed", "he=precise", "dp.target_epsilon=8"))
    again = RunSettings.from_run_config(settings.to_run_config())  # deployment: flwr run config
    dp = DpConfig.from_config(again.task_config())
    assert dp == DpConfig(0.5, 0.0, 8.0, 1e-5, 2, settings.num_rounds)


def test_m_above_the_rounds_minimum_is_refused_before_the_run() -> None:
    with pytest.raises(ConfigError, match=r"min_contributors=3 exceeds strategy\.min_train_nodes=2"):
        to_settings(composed("dp=distributed", "he=precise", "dp.min_contributors=3"))


def test_invalid_dp_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="noise_multiplier or a positive finite target_epsilon"):
        RunSettings(dp="distributed", dp_target_epsilon=0.0)
    with pytest.raises(ValueError, match="delta"):
        RunSettings(dp="distributed", dp_noise_multiplier=1.0, dp_delta=0.0)

"""The ``model`` config group reaches the run: a preset, an import path with its arguments,
pretrained weights; bad models fail before any process starts; MLflow records the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from common.settings import RunSettings
from experiments.run_config import ConfigError, to_settings
from models.registry import build_model
from models.training import get_weights
from server.app import initial_weights

ROOT = Path(__file__).resolve().parents[2]
NET = "examples.tabular_net.TabularNet"


def settings_of(*overrides: str) -> RunSettings:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides))
    return to_settings(cfg)[0]


def test_a_preset_travels_as_its_name() -> None:
    settings = settings_of("model=mlp", "model.hidden=8")
    assert (settings.model, settings.hidden, settings.model_args, settings.model_weights) == (
        "mlp",
        8,
        "",
        "",
    )


def test_an_import_path_travels_with_its_arguments_to_every_hospital() -> None:
    settings = settings_of("model=custom", f"model._target_={NET}", "+model.width=8", "+model.blocks=1")
    assert settings.model == NET
    assert json.loads(settings.model_args) == {"blocks": 1, "width": 8}
    config = settings.task_config()
    assert config["model"] == NET and json.loads(config["model-args"]) == {"blocks": 1, "width": 8}
    assert RunSettings.from_run_config(settings.to_run_config()) == settings  # deployment's path


def test_the_run_starts_from_the_pretrained_weights_it_names(tmp_path: Path) -> None:
    torch.manual_seed(7)
    pretrained = build_model(NET, 30, 2, width=8)
    path = tmp_path / "pretrained.pt"
    torch.save(pretrained.state_dict(), path)
    settings = settings_of("model=custom", f"model._target_={NET}", "+model.width=8", f"model.weights={path}")
    assert settings.model_weights == str(path)
    for got, expected in zip(initial_weights(settings), get_weights(pretrained), strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (["model=custom", "model._target_=os.system"], "'os' is not a package in the app's root"),
        (["model=custom", "model._target_=models.training.train"], "must name a torch.nn.Module subclass"),
        (
            ["model=custom", "model._target_=tests.models.byo_models.WithBatchNorm"],
            "norm.num_batches_tracked (torch.int64)",
        ),
        (["model=custom", f"model._target_={NET}", "+model.depth=2"], "cannot be built with arguments"),
        (["model.weights=/nonexistent/weights.pt"], "model.weights=/nonexistent/weights.pt: no such file"),
        (["model=resnet18"], "does not fit dataset=breast_cancer"),
    ],
)
def test_invalid_models_fail_before_any_process_starts(overrides: list[str], reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings_of(*overrides)
    assert reason in str(err.value)


def test_mlflow_records_the_model_class_its_parameter_count_and_the_task(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from server.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for settings, model_class, count in (
        (
            RunSettings(model=NET, model_args='{"width": 8}'),
            NET,
            30 * 8 + 8 + 2 * (2 * 8 + 2 * 72) + 2 * 8 + 18,
        ),
        (RunSettings(), "models.tabular.MLP", 30 * 32 + 32 + 32 * 2 + 2),
        (RunSettings(task="regression", num_features=5), "models.tabular.MLP", 5 * 32 + 32 + 32 + 1),
    ):
        with MlflowTracker(uri, "fedquorum") as tracker:
            tracker.log_model_params(settings)
        params = MlflowClient(uri).get_run(tracker.run_id).data.params
        assert params == {"model_class": model_class, "model_parameters": str(count), "task": settings.task}

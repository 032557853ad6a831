"""The Flower app as deployed: run config defaults in pyproject, and what the FAB holds."""

from __future__ import annotations

import io
import tomllib
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_files
from flwr.cli.utils import collect_files
from flwr.common.constant import FAB_MAX_SIZE

from common.settings import RunSettings

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_run_config_is_the_settings_defaults() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert RunSettings.from_run_config(config) == RunSettings()
    assert set(config) == set(RunSettings().to_run_config())  # every setting can be overridden


def test_run_config_errors_name_the_key() -> None:
    assert RunSettings.from_run_config({"server-lr": 1, "num-rounds": 2.0}).server_lr == 1.0
    with pytest.raises(ValueError, match=r"unknown run-config key 'num-server-rounds'"):
        RunSettings.from_run_config({"num-server-rounds": 3})
    with pytest.raises(ValueError, match=r"'num-rounds' must be an integer, got 2.5"):
        RunSettings.from_run_config({"num-rounds": 2.5})
    with pytest.raises(ValueError, match=r"'mlflow-tracking-uri' must be a string"):
        RunSettings.from_run_config({"mlflow-tracking-uri": 1})


def test_fab_holds_only_the_app_code(tmp_path: Path) -> None:
    # stray files a deployment leaves in the working tree must never be bundled
    fab, _ = build_fab_from_files(collect_files(ROOT))
    names = [info.filename for info in zipfile.ZipFile(io.BytesIO(fab)).infolist()]
    assert len(fab) < FAB_MAX_SIZE / 10
    assert {
        "server/app.py",
        "client/app.py",
        "client/audit.py",
        "common/protocol.py",
        "pyproject.toml",
    } <= set(names)
    assert {"examples/tabular_net/model.py", "models/registry.py"} <= set(names)  # models by import path
    top = {name.split("/")[0] for name in names}
    app = {
        "pyproject.toml",
        "common",
        "he",
        "strategies",
        "server",
        "client",
        "models",
        "privacy",
        "examples",
        ".info",
    }
    assert top <= app, top
    assert not [n for n in names if n.endswith(".md")]  # the example's README stays out
    assert not [n for n in names if n.endswith((".key", ".crt", ".pub", ".db", ".jsonl", ".csv", ".npz"))]

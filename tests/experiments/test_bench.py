"""The head-to-head benchmark's quick mode runs to the end and writes its outputs (no timings asserted).

It is the CI run that keeps ``experiments.bench`` from rotting: every arm (Flower FedAvg, our
plaintext FedAvg, fedquorum compact and precise, Flower SecAgg+) must finish its rounds.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_benchmark_completes_and_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = os.environ | {"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.bench",
            "bench=quick",
            f"hydra.run.dir={out}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ("bench.csv", "bench.json", "bench.png", "bench.md"):
        assert (out / name).stat().st_size > 0, name
    rows = json.loads((out / "bench.json").read_text())
    assert {r["arm"] for r in rows} == {"flower_fedavg", "fedavg", "compact", "precise", "secaggplus"}
    assert all(r["status"] == "ok" for r in rows), [(r["arm"], r["status"]) for r in rows]
    with (out / "bench.csv").open() as source:
        assert len(list(csv.DictReader(source))) == len(rows)
    assert "MLflow run:" in done.stdout


def test_deployment_scenario_is_in_the_full_benchmark_only() -> None:
    """``deploy-5`` (the Deployment Engine: a pilot on 127.0.0.1) runs in ``bench=full``; CI's quick
    benchmark stays in simulation."""
    from omegaconf import OmegaConf

    full = OmegaConf.load(REPO_ROOT / "conf" / "bench" / "full.yaml")
    quick = OmegaConf.load(REPO_ROOT / "conf" / "bench" / "quick.yaml")
    deployed = [s for s in full.scenarios if s.get("engine") == "deployment"]
    assert [s.name for s in deployed] == ["deploy-5"]
    assert set(deployed[0].arms) == {"flower_fedavg", "secaggplus", "small"}
    assert deployed[0].hospitals == 5 and deployed[0].data == "breast_cancer"
    assert not [s for s in quick.scenarios if s.get("engine", "simulation") != "simulation"]


def test_a_deployment_scenario_pins_the_preset_of_its_encrypted_arm() -> None:
    from experiments.bench_deploy import pilot_preset

    assert pilot_preset(["flower_fedavg", "small", "secaggplus"]) == "small"
    assert pilot_preset(["flower_fedavg", "fedavg"]) == "compact"  # no encrypted arm: the default
    with pytest.raises(ValueError, match=r"one HE preset.*\['compact', 'small'\]"):
        pilot_preset(["compact", "small"])


def test_deployment_bundle_names_the_bench_apps(tmp_path: Path) -> None:
    import tomllib

    from flwr.common.config import parse_config_args

    from experiments import bench_deploy

    bundle = bench_deploy.write_bundle(tmp_path / "app")
    project = tomllib.loads((bundle / "pyproject.toml").read_text())
    components = project["tool"]["flwr"]["app"]["components"]
    assert components == {
        "serverapp": "experiments.bench_deploy:app",
        "clientapp": "experiments.bench_hospitals:hospital",
    }
    assert set(project["tool"]["flwr"]["app"]["config"]) == {"bench-spec", "bench-result"}
    for package in (*bench_deploy.PACKAGES, "experiments"):
        assert list((bundle / package).glob("*.py")), package
    assert (bundle / "experiments" / "bench_arms.py").is_file()
    config = parse_config_args([bench_deploy.node_config(tmp_path / "pilot", "hospital-2", 1, 5)])
    assert config["partition-id"] == 1 and config["num-partitions"] == 5
    assert config["hospital"] == "hospital-2"
    assert config["signing-key"] == str(tmp_path / "pilot" / "hospitals" / "hospital-2" / "signing.key")


def test_the_resnet18_scenario_is_an_11m_image_network_that_fits_the_compact_preset(tmp_path: Path) -> None:
    """The full benchmark's ResNet-18-sized arm: MONAI's ResNet-18 on generated 28x28 images; its
    11.2M values fit ``compact`` (at most 64 ciphertexts per update), not ``precise``."""
    from omegaconf import OmegaConf

    from experiments.bench import parameter_count, scenario_settings
    from he.params import preset

    full = OmegaConf.load(REPO_ROOT / "conf" / "bench" / "full.yaml")
    (scenario,) = [s for s in full.scenarios if s.get("model") == "resnet18"]
    cfg = OmegaConf.create({"bench": {"seed": 0}})
    settings = scenario_settings(scenario, cfg, tmp_path)
    assert settings["model"] == "resnet18" and settings["dataset"] == "npz"
    assert len(settings["data_paths"].split(",")) == scenario.hospitals
    values = parameter_count(settings)
    assert 11_000_000 < values < 11_300_000
    assert "compact" in scenario.arms and "precise" not in scenario.arms
    for name, fits in (("compact", True), ("precise", False)):
        params = preset(name)
        assert (-(-values // params.values_per_ciphertext) <= params.max_ciphertexts) == fits, name

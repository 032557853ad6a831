"""End-to-end: the Hydra runner simulates a federation and records it in MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_ok(db: Path, out_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """A run of ``overrides`` tracked in ``db``, Hydra's output in ``out_dir``; it must succeed."""
    done = run([*overrides, f"mlflow.tracking_uri=sqlite:///{db}", f"hydra.run.dir={out_dir}"])
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def hospital_files(folder: Path, count: int, suffix: str, write: Callable[[Path, int], None]) -> str:
    """``count`` hospital files that ``write(path, seed)`` fills; the override that names them."""
    paths = [folder / f"hospital{k}.{suffix}" for k in range(count)]
    for k, path in enumerate(paths):
        write(path, k)
    return f"dataset.paths=[{','.join(str(p) for p in paths)}]"


def client_for(db: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{db}")


def runs_of(db: Path):
    client = client_for(db)
    experiment = client.get_experiment_by_name("fedquorum")
    assert experiment is not None
    return client, client.search_runs([experiment.experiment_id])


def test_single_run_is_tracked(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    done = run_ok(db, tmp_path / "out", "num_rounds=2", "federation.num_hospitals=3", "he=compact")
    assert "mlflow ui --backend-store-uri" in done.stdout
    assert (tmp_path / "out" / "flower.log").is_file()

    client, runs = runs_of(db)
    assert len(runs) == 1
    mlrun = runs[0]
    assert mlrun.info.run_id in done.stdout
    history = client.get_metric_history(mlrun.info.run_id, "eval_accuracy")
    assert sorted(m.step for m in history) == [1, 2]
    assert "final_eval_accuracy" in mlrun.data.metrics
    assert mlrun.data.tags["he_preset"] == "compact"
    assert mlrun.data.tags["threshold"] == "3/3"
    assert mlrun.data.params["federation.num_hospitals"] == "3"
    assert mlrun.data.params["model_class"] == "models.tabular.MLP"  # the model, once besides the config
    assert mlrun.data.params["model_parameters"] == "1058"

    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"learning_curve.png", "final_weights.npz", "config.yaml"} <= artifacts
    # the final model on the pooled test set: ROC and calibration figures, the confusion matrix
    assert {"roc_curve.png", "calibration_curve.png", "confusion_matrix.json"} <= artifacts
    confusion = json.loads(
        Path(client.download_artifacts(mlrun.info.run_id, "confusion_matrix.json", str(tmp_path))).read_text()
    )
    assert sum(sum(row[1:]) for row in confusion["data"]) == mlrun.data.metrics["final_eval_examples"]
    assert 0 < mlrun.data.metrics["final_eval_auc_bound"] < 0.05
    import mlflow
    import mlflow.pytorch

    mlflow.set_tracking_uri(f"sqlite:///{db}")
    logged = mlflow.search_logged_models(experiment_ids=[mlrun.info.experiment_id], output_format="list")
    assert [m.name for m in logged] == ["model"]
    assert logged[0].source_run_id == mlrun.info.run_id

    from models.registry import build_model
    from models.training import set_weights

    npz = np.load(client.download_artifacts(mlrun.info.run_id, "final_weights.npz", str(tmp_path)))
    weights = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    expected_model = build_model("mlp", 30, 2, hidden=(32,))
    set_weights(expected_model, weights)
    expected_model.eval()
    loaded = mlflow.pytorch.load_model(logged[0].model_uri)
    loaded.eval()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(5, 30)).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), expected_model(x).numpy(), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (["num_rounds=-1"], "num_rounds must be >= 1"),
        (["he.threshold=9", "federation.num_hospitals=3"], "threshold must be in [2, 3]"),
        (["he.threshold=1"], "t = 1 would let one keyholder decrypt alone"),
        (["strategy.min_train_nodes=1"], "min_train_nodes must be >= 2"),
        (["dataset=nope"], "Could not find 'dataset/nope'"),
        (["foo=1"], "Key 'foo' is not in struct"),
        (["dataset=csv", "dataset.num_features=2", "dataset.num_classes=2"], "one file per hospital"),
        (["model=cnn"], "does not fit dataset=breast_cancer"),
    ],
)
def test_bad_overrides_fail_fast(tmp_path: Path, overrides: list[str], reason: str) -> None:
    done = run(
        [*overrides, f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"hydra.run.dir={tmp_path}/out"],
        timeout=60,
    )
    assert done.returncode != 0
    assert reason in done.stderr
    assert not (tmp_path / "mlflow.db").exists()  # failed before tracking or simulation started


def test_multirun_creates_one_mlflow_run_per_job(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    done = run(
        [
            "-m",
            "seed=1,2",
            "num_rounds=1",
            "federation.num_hospitals=2",
            "he=compact",
            "progress=false",
            f"mlflow.tracking_uri=sqlite:///{db}",
            f"hydra.sweep.dir={tmp_path / 'multi'}",
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _, runs = runs_of(db)
    assert len(runs) == 2
    assert sorted(r.data.params["seed"] for r in runs) == ["1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)


def write_hospital_csv(path: Path, seed: int, rows: int = 60) -> None:
    """A small hospital table with a learnable outcome and some missing values."""
    import numpy as np

    rng = np.random.default_rng(seed)
    age = rng.normal(60 + 5 * seed, 10, rows)
    marker = rng.normal(0, 1, rows)
    outcome = (marker + 0.05 * (age - 60) + rng.normal(0, 0.3, rows) > 0).astype(int)
    lines = ["age,marker,outcome"]
    for i in range(rows):
        age_text = "" if i % 17 == 0 else f"{age[i]:.1f}"  # a few missing ages (median-imputed)
        lines.append(f"{age_text},{marker[i]:.4f},{outcome[i]}")
    path.write_text("\n".join(lines) + "\n")


def test_csv_per_simulated_hospital_trains_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    run_ok(
        db,
        tmp_path / "out",
        "dataset=csv",
        hospital_files(tmp_path, 3, "csv", write_hospital_csv),
        "dataset.target_column=outcome",
        "dataset.num_features=2",
        "dataset.num_classes=2",
        "federation.num_hospitals=3",
        "num_rounds=3",
        "progress=false",
    )
    _, runs = runs_of(db)
    assert len(runs) == 1
    assert runs[0].data.metrics["final_eval_accuracy"] > 0.7


def write_hospital_npz(path: Path, seed: int, per_split: int = 40) -> None:
    """A tiny MedMNIST-format file: bright images are class 1, dark ones class 0."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def split(n: int):
        labels = rng.integers(0, 2, n)
        images = rng.integers(0, 100, (n, 28, 28)) + 120 * labels[:, None, None]
        return images.astype(np.uint8), labels.reshape(-1, 1)

    train_images, train_labels = split(per_split)
    test_images, test_labels = split(per_split // 2)
    np.savez(
        path,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )


def test_npz_images_with_the_cnn_train_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    run_ok(
        db,
        tmp_path / "out",
        "dataset=npz",
        "model=cnn",
        hospital_files(tmp_path, 2, "npz", write_hospital_npz),
        "dataset.num_classes=2",
        "federation.num_hospitals=2",
        "num_rounds=2",
        "progress=false",
    )
    _, runs = runs_of(db)
    assert runs[0].data.metrics["final_eval_accuracy"] > 0.8


def final_weights(client, run_id: str, folder: Path) -> list[np.ndarray]:
    npz = np.load(client.download_artifacts(run_id, "final_weights.npz", str(folder)))
    return [npz[f"arr_{i}"] for i in range(len(npz.files))]


def test_resume_continues_a_run_to_the_model_of_an_uninterrupted_one(tmp_path: Path) -> None:
    """A run stopped after round 1 (num_rounds=1) is resumed to round 3 by its MLflow run id,
    with a fresh key set-up: its final model equals that of a 3-round run with the same seeds
    (``precise`` rounds to nearest, so the encrypted rounds are deterministic)."""
    db = tmp_path / "mlflow.db"
    for rounds, out in ((3, "whole"), (1, "stopped")):
        run_ok(
            db, tmp_path / out, "he=precise", "federation.num_hospitals=3", "seed=2", f"num_rounds={rounds}"
        )
    client, runs = runs_of(db)
    by_rounds = {r.data.params["num_rounds"]: r for r in runs}
    stopped = by_rounds["1"].info.run_id
    run_ok(db, tmp_path / "r", f"resume={stopped}", "num_rounds=3")
    client, runs = runs_of(db)
    (continued,) = [r for r in runs if r.data.tags.get("resumed_from") == stopped]
    assert continued.data.params["he.preset"] == "precise"  # the stopped run's own config
    steps = sorted(m.step for m in client.get_metric_history(continued.info.run_id, "eval_accuracy"))
    assert steps == [2, 3]
    whole = final_weights(client, by_rounds["3"].info.run_id, tmp_path / "a")
    again = final_weights(client, continued.info.run_id, tmp_path / "b")
    assert all(np.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(whole, again, strict=True))


def test_resume_of_an_unknown_run_says_so(tmp_path: Path) -> None:
    done = run(["resume=0123456789abcdef", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}"])
    assert done.returncode != 0
    assert "resume=0123456789abcdef: no such MLflow run" in done.stderr


def test_tracker_tags_the_roster_threshold_logs_settings_once_and_shows_the_model(tmp_path: Path) -> None:
    """A temporary MLflow store, no federation: ``threshold`` is the roster's t_K/|K| (not the
    engineer's ``he.threshold=0``), params are what was given, once, and the final model is an
    artifact folder of the run (loadable as ``runs:/<id>/model``), besides the LoggedModel."""
    import mlflow.pytorch

    from common.settings import RunSettings
    from he.roster import Quorum
    from server.app import initial_weights
    from server.tracking import MlflowTracker, threshold_tag
    from strategies.run_record import FederationResult

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = RunSettings(threshold=0)
    result = FederationResult(initial_weights(settings), history=[{"round": 1, "eval_loss": 0.7}])
    with MlflowTracker(uri, "fedquorum") as tracker:
        tracker.log_params({"num_rounds": 1, "he": {"preset": "compact", "threshold": 0}})
        tracker.log_result(result, settings, Quorum((1, 2, 3, 4), 2))
    run = client_for(tmp_path / "mlflow.db").get_run(tracker.run_id)
    assert run.data.tags["threshold"] == "2/4"
    assert run.data.params == {"num_rounds": "1", "he.preset": "compact", "he.threshold": "0"}
    artifacts = {a.path for a in client_for(tmp_path / "mlflow.db").list_artifacts(tracker.run_id, "model")}
    assert "model/MLmodel" in artifacts
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pytorch.load_model(f"runs:/{tracker.run_id}/model")
    assert [p.detach().numpy().shape for p in loaded.parameters()] == [w.shape for w in result.weights]
    assert threshold_tag(RunSettings(strategy="fedavg"), None) == "n/a"
    assert threshold_tag(settings, None) == "unknown"  # stopped before set-up read the roster

"""Head-to-head benchmark: Flower FedAvg, our plaintext FedAvg, Flower SecAgg+ and fedquorum.

    python -m experiments.bench                 # the full benchmark (conf/bench/full.yaml)
    python -m experiments.bench bench=quick     # one small scenario, under 3 minutes (CI)
    python -m experiments.bench 'bench.scenarios=[...]' bench.arm_budget=600

Every scenario (hospitals, model, data) runs in a process of its own (``experiments.bench_arms``),
its arms one after the other on the same simulated hospitals, same seed, same data. An arm that
fails or runs past ``bench.arm_budget`` seconds is stopped and its row says why and how far it
got; a scenario process that outlives all its budgets is stopped by its PID (process group).

Data: ``breast_cancer`` is the embedded set cut into one partition per hospital;
``breast_cancer_csv`` draws rows of it with replacement into one CSV per hospital (569 rows cannot
give 100 hospitals the 10 examples each partition needs); ``images`` writes MedMNIST-format
``.npz`` files of ``image_size`` square grey images with ``num_classes`` classes (the CNN's size
grows with both: 224 px and 10 classes give about 1M parameters, 280 px and 64 classes about 10M);
``model: resnet18`` trains MONAI's ResNet-18 (11.2M parameters) on them instead of the CNN.

A scenario with ``engine: deployment`` runs on the Deployment Engine instead: a TLS + node-auth
pilot on 127.0.0.1, its arms in one Flower run (``experiments.bench_deploy``).

Output (in the Hydra run directory): ``bench.csv``, ``bench.json``, ``bench.md`` (the table) and
``bench.png``, also logged to MLflow (``mlflow.tracking_uri``, a local SQLite file by default)
with one metric per scenario, arm and column.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments import bench_report as report
from experiments.bench_arms import ARMS

ConfigStore.instance().store(
    name="bench_main",
    node={
        "defaults": [{"bench": "full"}, "_self_"],
        "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment_name": "fedquorum-bench"},
    },
)
REPO_ROOT = Path(__file__).resolve().parents[1]


# -- data ----------------------------------------------------------------------------------------
def write_breast_cancer_tables(directory: Path, hospitals: int, rows: int, seed: int) -> list[str]:
    """One CSV per hospital of ``rows`` breast-cancer rows drawn with replacement (seeded)."""
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(hospitals):
        path = directory / f"hospital{k}.csv"
        table = frame.iloc[rng.integers(0, len(frame), rows)]
        pd.DataFrame(table.to_numpy(), columns=[*frame.columns[:-1], "target"]).to_csv(path, index=False)
        paths.append(str(path))
    return paths


def write_image_files(directory: Path, hospitals: int, scenario: DictConfig, seed: int) -> list[str]:
    """MedMNIST-format ``.npz`` files: class k images are brighter by k steps, plus noise.

    The last class appears in every file, so every hospital infers the same ``num_classes``.
    """
    classes, size = int(scenario.num_classes), int(scenario.image_size)
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, classes, n)
        labels[0] = classes - 1
        images = rng.integers(0, 100, (n, size, size)) + (150 * labels // max(1, classes - 1))[:, None, None]
        return images.astype(np.uint8), labels.reshape(-1, 1)

    paths = []
    for k in range(hospitals):
        (train_x, train_y), (test_x, test_y) = (
            split(int(scenario.train_images)),
            split(int(scenario.test_images)),
        )
        path = directory / f"hospital{k}.npz"
        np.savez(path, train_images=train_x, train_labels=train_y, test_images=test_x, test_labels=test_y)
        paths.append(str(path))
    return paths


def scenario_settings(scenario: DictConfig, cfg: DictConfig, data_dir: Path) -> dict:
    """The ``RunSettings`` fields of one scenario (shared by every arm)."""
    hospitals, seed = int(scenario.hospitals), int(cfg.bench.seed)
    settings = {"num_rounds": int(scenario.rounds), "seed": seed}
    data = str(scenario.data)
    if data == "breast_cancer":
        return settings | {"model": "mlp"}
    directory = data_dir / str(scenario.name)
    directory.mkdir(parents=True, exist_ok=True)
    if data == "breast_cancer_csv":
        paths = write_breast_cancer_tables(directory, hospitals, int(scenario.rows_per_hospital), seed)
        return settings | {"model": "mlp", "dataset": "csv", "data_paths": ",".join(paths)}
    if data == "images":
        paths = write_image_files(directory, hospitals, scenario, seed)
        return settings | {
            "model": str(scenario.get("model", "cnn")),  # an image model: cnn (default) or resnet18
            "dataset": "npz",
            "num_features": 0,
            "num_classes": int(scenario.num_classes),
            "image_size": int(scenario.image_size),
            "data_paths": ",".join(paths),
        }
    raise ValueError(
        f"bench.scenarios[{scenario.name}].data={data!r}: expected breast_cancer, breast_cancer_csv or images"
    )


def parameter_count(settings: dict) -> int:
    from common.settings import RunSettings
    from server.app import initial_weights

    return sum(int(w.size) for w in initial_weights(RunSettings(**settings)))


# -- one scenario in its own process ------------------------------------------------------------------
def run_scenario(spec: dict, work: Path, limit: float) -> tuple[dict, str]:
    """Run ``experiments.bench_arms`` on ``spec``; stop its process group after ``limit`` s."""
    spec_path, out_path = work / f"{spec['label']}.spec.json", work / f"{spec['label']}.result.json"
    spec_path.write_text(json.dumps(spec))
    out_path.unlink(missing_ok=True)
    env = os.environ | {
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "OMP_NUM_THREADS": "1",
        "FEDQUORUM_BENCH_LOG_DIR": str(work),
    }
    command = [sys.executable, "-m", "experiments.bench_arms", str(spec_path), str(out_path)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True)
    note = ""
    try:
        process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        note = f"scenario stopped after {limit:.0f} s"
        os.killpg(process.pid, signal.SIGTERM)  # the group is the scenario's: its PID
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    if not results and not note:
        note = f"the scenario process exited with {process.returncode} (log in {work})"
    return results, note


def scenario_rows(scenario: DictConfig, cfg: DictConfig, work: Path) -> list[dict]:
    """Every arm of one scenario: in one process, or one process per arm (``bench.isolate_arms``:
    each arm's peak memory is then its own, not raised by the heap an earlier arm left)."""
    settings = scenario_settings(scenario, cfg, work / "data")
    parameters = parameter_count(settings)
    arms = list(scenario.get("arms") or cfg.bench.arms)
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ValueError(f"bench.arms: unknown arm(s) {unknown}; expected some of {list(ARMS)}")
    budget = float(scenario.get("arm_budget") or cfg.bench.arm_budget)  # a scenario may set its own
    spec = {
        "name": str(scenario.name),
        "hospitals": int(scenario.hospitals),
        "arm_budget": budget,
        "settings": settings,
        "secaggplus": OmegaConf.to_container(cfg.bench.secaggplus),
    }
    print(
        f"bench: {scenario.name}: {scenario.hospitals} hospitals, {parameters:,} parameters, "
        f"{scenario.rounds} rounds, arms {', '.join(arms)}",
        flush=True,
    )
    rows = []
    deployment = str(scenario.get("engine", "simulation")) == "deployment"
    groups = [[arm] for arm in arms] if cfg.bench.isolate_arms and not deployment else [arms]
    for group in groups:
        started = time.perf_counter()
        label = f"{scenario.name}-{group[0]}" if len(groups) > 1 else str(scenario.name)
        limit = len(group) * (budget + 120) + 300
        if deployment:  # one pilot (SuperLink + SuperNodes) and one Flower run for all its arms
            from experiments import bench_deploy

            results, note = bench_deploy.run_scenario(spec | {"arms": group, "label": label}, work, limit)
        else:
            results, note = run_scenario(spec | {"arms": group, "label": label}, work, limit)
        print(f"bench:   {', '.join(group)}: {time.perf_counter() - started:.0f} s {note}", flush=True)
        for arm in group:
            if arm in results:
                rows.append(report.row(spec, parameters, results[arm]))
                if note and not results[arm].get("done"):
                    rows[-1]["status"] = f"{note}; {rows[-1]['status']}"
            else:
                rows.append(report.not_run(spec, parameters, arm, note or "not run"))
    return rows


# -- MLflow ----------------------------------------------------------------------------------------
def log_to_mlflow(cfg: DictConfig, rows: list[dict], paths: dict[str, Path]) -> str:
    import mlflow

    from server.tracking import MlflowTracker

    with MlflowTracker(
        cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name, f"bench-{cfg.bench.name}"
    ) as tracker:
        tracker.log_params(OmegaConf.to_container(cfg.bench, resolve=True))
        metrics = {
            f"{r['scenario']}/{r['arm']}/{key}": float(r[key])
            for r in rows
            for key in report.COLUMNS
            if isinstance(r[key], int | float) and math.isfinite(r[key])
        }
        mlflow.log_metrics(metrics)
        for path in paths.values():
            mlflow.log_artifact(str(path))
    return str(tracker.run_id)


@hydra.main(config_path="../conf", config_name="bench_main", version_base=None)
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    rows: list[dict] = []
    for scenario in cfg.bench.scenarios:
        rows += scenario_rows(scenario, cfg, out_dir)
        report.add_ratios(rows)
        paths = report.write_outputs(rows, out_dir)  # after every scenario: a stopped run keeps its table
    print(report.markdown(rows), flush=True)
    run_id = log_to_mlflow(cfg, rows, paths)
    print(
        f"outputs: {', '.join(str(p) for p in paths.values())}\n"
        f"MLflow run: {run_id} in {cfg.mlflow.tracking_uri}"
    )


if __name__ == "__main__":
    main()

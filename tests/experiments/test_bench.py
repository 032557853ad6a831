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

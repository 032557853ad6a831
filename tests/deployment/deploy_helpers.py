"""Helpers for deployment tests: a hospital's daemon flags, the engineer's command, generated CSVs,
MLflow and audit lookups. The processes themselves (started and always stopped by PID) and the
flwr CLI are the project's own toolkit: ``experiments.local_pilot`` and ``server.flower_cli``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from experiments.local_pilot import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def identity_args(hospital_dir: Path, name: str, signing_key: Path | None = None) -> list[str]:
    """Daemon flags for a hospital's roster and signing key, as ``init-pilot`` lays them out."""
    return [
        "--roster",
        str(hospital_dir / "roster.json"),
        "--signing-key",
        str(signing_key or hospital_dir / "signing.key"),
        "--hospital",
        name,
    ]


def mlflow_run_of(db: Path, flower_run_id: int):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("fedquorum")
    assert experiment is not None, f"no MLflow experiment 'fedquorum' in {db}"
    runs = client.search_runs([experiment.experiment_id], f"tags.flower_run_id = '{flower_run_id}'")
    assert len(runs) == 1, f"expected one MLflow run tagged with Flower run {flower_run_id}, got {len(runs)}"
    return client, runs[0]


def read_audit(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def run_captured(
    args: list[str], env: dict | None = None, cwd: Path = ROOT, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``args`` run to the end, output kept as text (for the assertions and their messages)."""
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def init_pilot(pilot: Path, env: dict, hospitals: int) -> subprocess.CompletedProcess:
    """``init-pilot``: PKI, signing keys and roster of ``hospitals`` in ``pilot``; it must succeed."""
    made = run_captured(
        python("server.coordinator", "init-pilot", "--hospitals", str(hospitals), "--out", str(pilot)),
        env,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    return made


def hospital_csvs(folder: Path, hospitals: int) -> list[Path]:
    """The breast-cancer table split across the hospitals, one CSV file each (as a site would have)."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "diagnosis"})
    order = np.random.default_rng(0).permutation(len(frame))
    paths = []
    for i, rows in enumerate(np.array_split(order, hospitals)):
        path = folder / f"hospital-{i + 1}.csv"
        frame.iloc[rows].to_csv(path, index=False)
        paths.append(path)
    return paths


def daemon_args(
    pilot: Path,
    name: str,
    port: int,
    data: Path,
    state: Path,
    key: Path | None = None,
    signing_key: Path | None = None,
    ca: Path | None = None,
) -> list[str]:
    """``python -m client.daemon`` for hospital ``name`` of an ``init-pilot`` layout, on its CSV
    (``key``, ``signing_key``, ``ca``: another file than the hospital's own)."""
    return python(
        "client.daemon",
        "--superlink",
        f"127.0.0.1:{port}",
        "--root-certificates",
        str(ca or pilot / "hospitals" / name / "ca.crt"),
        "--auth-key",
        str(key or pilot / "hospitals" / name / "node.key"),
        "--data",
        str(data),
        "--target-column",
        "diagnosis",
        "--num-features",
        "30",
        "--num-classes",
        "2",
        "--state-dir",
        str(state),
        "--port",
        str(free_port()),
        *identity_args(pilot / "hospitals" / name, name, signing_key),
    )


def engineer_command(pilot: Path, port: int, db: Path, hospitals: int, *overrides: str) -> list[str]:
    """The ML engineer's ``python -m experiments.run federation=deployment ...`` on the pilot's CSVs."""
    return python(
        "experiments.run",
        "federation=deployment",
        f"federation.superlink=127.0.0.1:{port}",
        f"federation.root_certificates={pilot / 'ca' / 'ca.crt'}",
        f"federation.roster={pilot / 'roster.json'}",
        f"federation.num_hospitals={hospitals}",
        "federation.poll_seconds=2",
        "dataset=csv",
        "dataset.num_features=30",
        "dataset.num_classes=2",
        "dataset.target_column=diagnosis",
        f"mlflow.tracking_uri=sqlite:///{db}",
        "progress=false",
        *overrides,
    )

"""A deployment run that loses its committee-critical hospital ends failed, keeps its config and
checkpoint, and ``resume=<id>`` continues it from the checkpoint once the hospital is back.

The pilot's roster needs the whole committee (3 of 3) to decrypt. After round 1 the test kills
hospital-3's daemon by PID: round 2 gets no update from it and, with a keyholder missing, is
skipped without asking any keyholder to decrypt; ``strategy.max_failed_rounds=1`` then stops the
run. The protocol allows no resume without hospital-3 (every decryption needs it), so the test
restarts its daemon (same keys and state dir: a restarted node has lost the run's keys, which a
resumed run sets up afresh) and resumes: the resumed run starts at round 3 from the checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
from pathlib import Path

import pytest
from deploy_helpers import (
    daemon_args,
    engineer_command,
    hospital_csvs,
    init_pilot,
    mlflow_run_of,
    python,
    run_captured,
)

from experiments.local_pilot import RUN_TIMEOUT, Processes, start_superlink, wait_until
from server.flower_cli import flower_env

pytestmark = pytest.mark.slow
HOSPITALS = 3
ROUNDS = 3


def round_logged(db: Path, step: int) -> bool:
    """The ServerApp has logged round ``step`` to MLflow (read-only: no MLflow client may race the
    ServerApp creating the store). Only then is the round's aggregate decrypted: a keyholder's audit
    line is written before its share has reached the SuperLink."""
    if not db.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
            row = con.execute(
                "SELECT 1 FROM metrics WHERE key = 'round_seconds' AND step = ?", (step,)
            ).fetchone()
    except sqlite3.Error:  # no metrics table yet, or busy
        return False
    return row is not None


def test_a_run_that_lost_its_critical_keyholder_resumes_from_its_checkpoint(
    tmp_path: Path, procs: Processes
) -> None:
    from strategies.checkpoint import Checkpoint

    env = flower_env(tmp_path / "flwr-home")
    pilot, db = tmp_path / "pilot", tmp_path / "mlflow.db"
    init_pilot(pilot, env, HOSPITALS)
    _, port = start_superlink(procs, pilot, env, HOSPITALS)
    csvs = hospital_csvs(tmp_path, HOSPITALS)
    states = [tmp_path / f"state-{i + 1}" for i in range(HOSPITALS)]

    def start_hospital(i: int, name: str):
        return procs.start(name, daemon_args(pilot, f"hospital-{i + 1}", port, csvs[i], states[i]), env)

    daemons = [start_hospital(i, f"hospital-{i + 1}") for i in range(HOSPITALS)]
    out = tmp_path / "out"
    runner = procs.start(
        "runner",
        engineer_command(
            pilot,
            port,
            db,
            HOSPITALS,
            f"num_rounds={ROUNDS}",
            "strategy.max_failed_rounds=1",
            "strategy.round_timeout=300",  # a dead keyholder must not cost this long
            f"hydra.run.dir={out}",
        ),
        env,
    )
    wait_until(
        lambda: round_logged(db, 1) or runner.poll() is not None, RUN_TIMEOUT, "round 1 to be aggregated"
    )
    os.kill(daemons[2].pid, signal.SIGKILL)  # its SuperNode goes with it (the daemon's death signal)
    daemons[2].wait(timeout=30)
    runner.wait(timeout=RUN_TIMEOUT)
    stopped = procs.log("runner")
    assert runner.returncode == 1, stopped[-5000:]
    assert "Traceback" not in stopped
    (line,) = [ln for ln in stopped.splitlines() if ln.startswith("error: ")]
    flower_run = int(re.search(r"submitted Flower run (\d+)", stopped).group(1))
    client, failed = mlflow_run_of(db, flower_run)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["failure_reason"] == (
        "RoundFailedError: 1 round(s) in a row without an aggregate (max_failed_rounds=1); stopping the run"
    )
    assert failed.data.tags["rounds_completed"] == "1"  # round 2 produced no aggregate
    assert f"resume with: python -m experiments.run resume={failed.info.run_id} " in line
    assert {"config.yaml", "checkpoint"} <= {a.path for a in client.list_artifacts(failed.info.run_id)}
    checkpoint = Checkpoint.load(
        Path(client.download_artifacts(failed.info.run_id, "checkpoint/checkpoint.npz", str(tmp_path)))
    )
    assert checkpoint.round == 2
    # the ServerApp's round lines: round 2 asked no keyholder and did not wait for hospital-3
    server_log = (out / "flower.log").read_text()
    assert re.search(
        r"round 1/3: contributors hospital-1, hospital-2, hospital-3; decryption set "
        r"hospital-1, hospital-2, hospital-3; aggregated",
        server_log,
    ), server_log[-3000:]
    skipped = re.search(
        r"round 2/3: contributors hospital-1, hospital-2; decryption set none; skipped: "
        r"keyholder\(s\) hospital-3 \((offline|silent this round)\) missing: 2 of 3 keyholders "
        r"left, a decryption set needs 3; (\d+\.\d) s",
        server_log,
    )
    assert skipped, server_log[-3000:]
    assert float(skipped.group(2)) < 200  # not the round timeout (300 s): at most the heartbeat's expiry

    # hospital-3 comes back (its daemon retries activation until the old node's heartbeat expires)
    start_hospital(2, "hospital-3-restarted")
    wait_until(
        lambda: "connected to SuperLink" in procs.log("hospital-3-restarted"), 300, "hospital-3 to reconnect"
    )
    resumed = run_captured(
        python(
            "experiments.run",
            f"resume={failed.info.run_id}",
            f"mlflow.tracking_uri=sqlite:///{db}",
            f"hydra.run.dir={tmp_path / 'out-resumed'}",
        ),
        env,
        timeout=RUN_TIMEOUT,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    client, run = mlflow_run_of(db, int(re.search(r"submitted Flower run (\d+)", resumed.stdout).group(1)))
    assert run.data.tags["resumed_from"] == failed.info.run_id
    assert [m.step for m in client.get_metric_history(run.info.run_id, "round_seconds")] == [
        3
    ]  # only round 3
    assert run.data.metrics["contributors"] == HOSPITALS
    assert run.data.metrics["final_eval_accuracy"] > 0.6
    resumed_log = (tmp_path / "out-resumed" / "flower.log").read_text()
    assert "resuming after round 2 of 3" in resumed_log
    # the resumed run carries on the stopped run's rounds (its checkpoint's history) with round 3
    (tmp_path / "r").mkdir()
    final = Checkpoint.load(
        Path(client.download_artifacts(run.info.run_id, "checkpoint/checkpoint.npz", str(tmp_path / "r")))
    )
    assert [h["round"] for h in final.history] == [1, 2, 3]
    assert final.history[:2] == checkpoint.history
    assert re.search(r"round 3/3: contributors hospital-1, hospital-2, hospital-3; .*aggregated", resumed_log)

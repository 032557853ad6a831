"""The secure pilot end to end on 127.0.0.1: TLS + SuperNode authentication, our scripts only.

``python -m server.coordinator init-pilot`` makes the PKI, the hospitals' signing keys and the
roster; ``... superlink`` runs the SuperLink with TLS and node authentication and registers the
three hospitals' keys; each hospital runs ``python -m client.daemon`` with its roster copy and
signing key on its own CSV file, and prints the same roster fingerprint as the coordinator; the ML
engineer submits one encrypted run of 2 rounds with ``python -m experiments.run
federation=deployment federation.roster=...``; the result is in MLflow. Also: a SuperNode with an
unregistered key is refused, a daemon pointed at a missing data file or holding another
hospital's signing key does not start, and each hospital's audit log has one line per message
its SuperNode received.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path

import pytest
from deploy_helpers import (
    daemon_args,
    engineer_command,
    hospital_csvs,
    init_pilot,
    mlflow_run_of,
    python,
    read_audit,
    run_captured,
)

from client.audit_summary import summarize
from experiments.local_pilot import RUN_TIMEOUT, Processes, start_superlink, wait_until
from server.flower_cli import flower_env

pytestmark = pytest.mark.slow
HOSPITALS = 3


def received_message_ids(log: str) -> list[str]:
    return re.findall(r"Receiving: \S+ message \(ID: ([0-9a-f]+)\)", log)


def test_secure_pilot_with_registered_hospitals(tmp_path: Path, procs: Processes) -> None:
    env = flower_env(tmp_path / "flwr-home")
    pilot = tmp_path / "pilot"
    made = init_pilot(pilot, env, HOSPITALS)
    fingerprint = re.search(r"roster fingerprint: ([0-9a-f-]+)", made.stdout).group(1)
    intruder = tmp_path / "intruder"
    made = run_captured(python("client.daemon", "keygen", "--out", str(intruder)))
    assert made.returncode == 0, made.stderr
    csvs = hospital_csvs(tmp_path, HOSPITALS)

    link, port = start_superlink(procs, pilot, env, HOSPITALS)
    assert link.poll() is None, procs.log("superlink")

    # a hospital whose data file is missing does not start, and says why
    missing = run_captured(
        daemon_args(pilot, "hospital-1", port, tmp_path / "missing.csv", tmp_path / "state-x"), env
    )
    assert missing.returncode == 2
    assert "not starting: data file" in missing.stderr and "missing.csv does not exist" in missing.stderr
    # nor does one holding another hospital's signing key
    swapped = run_captured(
        daemon_args(
            pilot,
            "hospital-1",
            port,
            csvs[0],
            tmp_path / "state-y",
            signing_key=pilot / "hospitals" / "hospital-2" / "signing.key",
        ),
        env,
    )
    assert swapped.returncode == 2
    assert "hospital-2/signing.key" in swapped.stderr and "does not match the key roster" in swapped.stderr

    states = [tmp_path / f"state-{i + 1}" for i in range(HOSPITALS)]
    for i, (csv, state) in enumerate(zip(csvs, states, strict=True)):
        procs.start(f"hospital-{i + 1}", daemon_args(pilot, f"hospital-{i + 1}", port, csv, state), env)
    # same CA, same data, but a key the coordinator never registered
    stranger = procs.start(
        "stranger",
        daemon_args(pilot, "hospital-1", port, csvs[0], tmp_path / "state-stranger", intruder / "node.key"),
        env,
    )

    db = tmp_path / "mlflow.db"

    def engineer_runs(*overrides: str) -> subprocess.CompletedProcess:
        return run_captured(
            engineer_command(pilot, port, db, HOSPITALS, "num_rounds=2", *overrides), env, timeout=RUN_TIMEOUT
        )

    run = engineer_runs(f"hydra.run.dir={tmp_path / 'out'}")
    hospital_logs = "".join(
        f"\n--- hospital-{i + 1}:\n" + procs.log(f"hospital-{i + 1}")[-2000:] for i in range(HOSPITALS)
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:] + hospital_logs
    assert "status finished:completed" in run.stdout
    flower_run_id = int(re.search(r"submitted Flower run (\d+)", run.stdout).group(1))

    client, mlrun = mlflow_run_of(db, flower_run_id)
    assert mlrun.info.run_id in run.stdout
    for metric in ("eval_accuracy", "eval_auc", "bytes_up", "decrypt_seconds"):
        assert sorted(m.step for m in client.get_metric_history(mlrun.info.run_id, metric)) == [1, 2], metric
    assert mlrun.data.metrics["contributors"] == HOSPITALS
    assert mlrun.data.metrics["final_eval_accuracy"] > 0.6
    assert mlrun.data.params["num-rounds"] == "2"  # the run config the ServerApp got ...
    assert "num_rounds" not in mlrun.data.params  # ... once, not again under its Hydra spelling
    assert mlrun.data.tags["threshold"] == f"{HOSPITALS}/{HOSPITALS}"  # the pilot roster's t_K/|K|
    assert {"config.yaml", "model"} <= {a.path for a in client.list_artifacts(mlrun.info.run_id)}

    # the unregistered SuperNode was refused and gave up; it never received a message
    wait_until(lambda: stranger.poll() is not None, 120, "the unregistered SuperNode to exit")
    assert stranger.returncode != 0
    assert "Failed to activate SuperNode" in procs.log("stranger")
    assert "did not activate this node: node authentication key" in procs.log("stranger")  # why
    # the daemon's own retry (Flower's gRPC client logs "retrying" of its own): an unregistered
    # key is not worth waiting for
    assert "heartbeat expires; retrying" not in procs.log("stranger")
    for i in range(HOSPITALS):
        assert f"connected to SuperLink 127.0.0.1:{port} (node id " in procs.log(f"hospital-{i + 1}")
    assert not received_message_ids(procs.log("stranger"))

    for i, state in enumerate(states):
        # every hospital pinned the roster the coordinator read out
        assert f"roster fingerprint: {fingerprint}" in procs.log(f"hospital-{i + 1}")
        log = state / "audit.jsonl"
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        entries = read_audit(log)
        received = received_message_ids(procs.log(f"hospital-{i + 1}"))
        assert sorted(e["message_id"] for e in entries) == sorted(received)  # one line per message
        assert {e["outcome"] for e in entries} == {"replied"}
        assert {e["run_id"] for e in entries} == {str(flower_run_id)}  # strings: jq keeps every digit
        assert {e["hospital"] for e in entries} == {f"hospital-{i + 1}"}
        trains = [e for e in entries if e["message_type"] == "train"]
        assert [e["group_id"] for e in trains] == ["1", "2"]
        assert all(a["bytes"] > 0 and len(a["sha256"]) == 64 for e in trains for a in e["sent"]["arrays"])
        # the site's own test metrics are in its audit log, and did not leave it
        evaluated = [e for e in entries if e["message_type"] in ("train", "evaluate")]
        assert all(
            e["own_metrics"]["left_site"] == 0 and "eval_accuracy" in e["own_metrics"] for e in evaluated
        )
        assert not any("eval_accuracy" in json.dumps(e["sent"]) for e in evaluated)
        assert "BEGIN" not in log.read_text()  # no key material
        # the data protection officer's summary lists every message and says nothing left in clear
        report = summarize(entries)
        assert sum(line.startswith("  20") for line in report.splitlines()) == len(entries)
        assert (
            "No model update, feature statistic or test result of this hospital left in the clear" in report
        )
        assert f"at hospital-{i + 1}:" in report and "final evaluation" in report

    # a plaintext run, which every hospital's default policy refuses, reaches the engineer as one
    # line naming each hospital and its policy key, with a nonzero exit and no traceback
    refused = engineer_runs("strategy=fedavg", f"hydra.run.dir={tmp_path / 'out-plaintext'}")
    assert refused.returncode == 1, refused.stdout[-3000:] + refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
    (line,) = [ln for ln in refused.stderr.splitlines() if ln.startswith("error: ")]
    assert f"feature statistics (moments) failed: {HOSPITALS} of {HOSPITALS} hospitals refused: " in line
    assert line.count("(policy require_encrypted=true: ") == HOSPITALS
    _, failed = mlflow_run_of(db, int(re.search(r"submitted Flower run (\d+)", refused.stdout).group(1)))
    assert failed.info.status == "FAILED"
    assert failed.data.tags["failure_reason"] in line

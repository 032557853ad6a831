"""Deployment Engine end to end, without TLS: SuperLink + 3 SuperNodes on 127.0.0.1, `flwr run`.

One encrypted run of 2 rounds on the embedded breast-cancer data (each SuperNode's node config
selects its partition); the ServerApp logs the run to MLflow (a tmp SQLite store) itself; every
process is stopped by its PID.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from deploy_helpers import (
    BIN,
    ROOT,
    Processes,
    flower_env,
    flwr,
    free_port,
    json_of,
    mlflow_run_of,
    port_open,
    read_audit,
    wait_for_run,
    wait_until,
)

pytestmark = pytest.mark.slow
HOSPITALS = 3


def received_message_ids(supernode_log: str) -> list[str]:
    return re.findall(r"Receiving: \S+ message \(ID: ([0-9a-f]+)\)", supernode_log)


def test_two_encrypted_rounds_on_superlink_and_supernodes(tmp_path: Path, procs: Processes) -> None:
    home = tmp_path / "flwr-home"
    home.mkdir()
    env = flower_env(home)
    port = free_port()
    link = procs.start(
        "superlink",
        [
            str(BIN / "flower-superlink"),
            "--insecure",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database",
            str(tmp_path / "state.db"),
            "--disable-runtime-dependency-installation",
        ],
        env,
    )
    wait_until(lambda: port_open(port) or link.poll() is not None, 180, "the SuperLink's port")
    assert link.poll() is None, procs.log("superlink")

    for i in range(HOSPITALS):
        state = tmp_path / f"state-{i}"
        state.mkdir(mode=0o700)
        node_config = f'partition-id={i} num-partitions={HOSPITALS} state-dir="{state}"'
        procs.start(
            f"supernode-{i}",
            [
                str(BIN / "flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{port}",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
                "--node-config",
                node_config,
            ],
            env,
        )
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "e2e"\n\n[superlink.e2e]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )

    db = tmp_path / "mlflow.db"
    run_config = f"num-rounds=2 min-nodes={HOSPITALS} mlflow-tracking-uri='sqlite:///{db}'"
    submitted = json_of(flwr(home, "run", str(ROOT), "e2e", "--run-config", run_config, "--format", "json"))
    assert submitted["success"], submitted
    run_id = int(submitted["run-id"])
    status = wait_for_run(home, "e2e", run_id)
    assert status == "finished:completed", flwr(home, "log", str(run_id), "e2e", "--show").stdout[-5000:]

    client, mlrun = mlflow_run_of(db, run_id)
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["num-rounds"] == "2" and mlrun.data.params["strategy"] == "encrypted_fedavg"
    for metric in ("eval_accuracy", "train_loss", "bytes_up", "round_seconds"):
        history = client.get_metric_history(mlrun.info.run_id, metric)
        assert sorted(m.step for m in history) == [1, 2], metric
    assert mlrun.data.metrics["contributors"] == HOSPITALS
    assert mlrun.data.metrics["final_eval_accuracy"] > 0.6
    assert mlrun.data.tags["threshold"] == f"{HOSPITALS}/{HOSPITALS}"

    # each hospital's audit log: one line per message its SuperNode received, all answered
    for i in range(HOSPITALS):
        entries = read_audit(tmp_path / f"state-{i}" / "audit.jsonl")
        assert sorted(e["message_id"] for e in entries) == sorted(
            received_message_ids(procs.log(f"supernode-{i}"))
        )
        assert {e["outcome"] for e in entries} == {"replied"}
        assert {e["run_id"] for e in entries} == {run_id}
        per_round = [(e["message_type"], e["group_id"]) for e in entries if e["group_id"] in ("1", "2")]
        assert sorted(per_round) == [
            ("query.decrypt", "1"),
            ("query.decrypt", "2"),
            ("train", "1"),
            ("train", "2"),
        ]
        assert [e["message_type"] for e in entries if e["group_id"] == "final"] == ["evaluate"]

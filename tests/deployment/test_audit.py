"""The hospital audit log: one JSON line per handled message, digests of what left, mode 0600."""

from __future__ import annotations

import hashlib
import json
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.audit import AUDIT_FILE, AuditLogError, audit_mod
from client.audit_summary import main as summary_main
from client.audit_summary import summarize
from client.ledger import DP, ReleaseLedger
from client.policy import POLICY_FILE
from client.refusals import RefusedRequest

SECRET = b"never-leaves-the-hospital"
BLOB = b"\x01\x02ciphertext-bytes" * 100

app = ClientApp(mods=[audit_mod])


@app.train()
def train(message: Message, context: Context) -> Message:
    context.state["fedquorum"] = ConfigRecord({"secret:key-share": SECRET})
    content = RecordDict(
        {
            "blobs": ArrayRecord(
                {"update": Array(dtype="uint8", shape=(len(BLOB),), stype="raw-bytes", data=BLOB)}
            ),
            "metrics": MetricRecord({"train_loss": 0.25, "eval_accuracy": 0.875}),
        }
    )
    return Message(content=content, reply_to=message)


@app.query("decrypt")
def decrypt(message: Message, context: Context) -> Message:
    raise RefusedRequest("round 1 was already decrypted once; refusing a second time")


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    raise ValueError("data file /srv/x.csv is missing column 'age'")


def incoming(message_type: str, group_id: str = "1", message_id: str = "m-1") -> Message:
    metadata = Metadata(
        run_id=42,
        message_id=message_id,
        src_node_id=1,
        dst_node_id=7,
        reply_to_message_id="",
        group_id=group_id,
        created_at=time.time(),
        ttl=600.0,
        message_type=message_type,
    )
    content = RecordDict(
        {
            "config": ConfigRecord({"server-round": 1, "contributors": "1,2,3"}),
            "arrays": ArrayRecord([np.zeros(4, dtype=np.float32)]),
        }
    )
    return Message(metadata=metadata, content=content)


def context(node_config: dict) -> Context:
    return Context(run_id=42, node_id=7, node_config=node_config, state=RecordDict(), run_config={})


def lines(state_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (state_dir / AUDIT_FILE).read_text().splitlines()]


def test_reply_is_logged_with_digests_and_metrics_only(tmp_path: Path) -> None:
    ctx = context({"state-dir": str(tmp_path)})
    reply = app(incoming("train"), ctx)
    assert not reply.has_error()
    path = tmp_path / AUDIT_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (entry,) = lines(tmp_path)
    assert entry["run_id"] == "42" and entry["node_id"] == "7" and entry["group_id"] == "1"
    assert entry["message_type"] == "train" and entry["message_id"] == "m-1"
    assert entry["outcome"] == "replied"
    assert entry["received"]["array_bytes"] >= 16  # serialized float32[4]
    assert entry["received"]["config"]["config"] == {"server-round": 1, "contributors": "1,2,3"}
    (array,) = entry["sent"]["arrays"]
    assert array == {
        "record": "blobs",
        "name": "update",
        "dtype": "uint8",
        "shape": [len(BLOB)],
        "bytes": len(BLOB),
        "sha256": hashlib.sha256(BLOB).hexdigest(),
    }
    assert entry["sent"]["metrics"] == {"metrics": {"train_loss": 0.25, "eval_accuracy": 0.875}}
    text = path.read_text()
    assert "secret" not in text and SECRET.hex() not in text and "never-leaves" not in text


def test_refusal_and_error_are_logged_with_reason_and_still_raised(tmp_path: Path) -> None:
    ctx = context({"state-dir": str(tmp_path)})
    with pytest.raises(RefusedRequest):
        app(incoming("query.decrypt", message_id="m-2"), ctx)
    with pytest.raises(ValueError, match="missing column"):
        app(incoming("evaluate", group_id="final", message_id="m-3"), ctx)
    app(incoming("train", message_id="m-4"), ctx)
    refused, error, replied = lines(tmp_path)  # one line per message, appended in order
    assert refused["outcome"] == "refused" and "already decrypted" in refused["reason"]
    assert refused["sent"] == {}
    assert error["outcome"] == "error" and error["group_id"] == "final"
    assert error["reason"].startswith("ValueError: data file /srv/x.csv")
    assert replied["message_id"] == "m-4"


def test_no_state_dir_means_no_audit_log(tmp_path: Path) -> None:
    app(incoming("train"), context({"partition-id": 0, "num-partitions": 3}))
    assert list(tmp_path.iterdir()) == []


def test_existing_log_is_tightened_to_0600(tmp_path: Path) -> None:
    path = tmp_path / AUDIT_FILE
    path.write_text("")
    path.chmod(0o644)
    app(incoming("train"), context({"state-dir": str(tmp_path)}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_unwritable_state_dir_refuses_to_process(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(AuditLogError, match="does-not-exist"):
        app(incoming("train"), context({"state-dir": str(missing)}))


def test_summary_says_when_the_hospitals_own_results_left_in_the_clear(tmp_path: Path) -> None:
    app(incoming("train"), context({"state-dir": str(tmp_path)}))  # sends train_loss, eval_accuracy
    report = summarize(lines(tmp_path))
    assert (
        "IN THE CLEAR: this hospital's own results (eval_accuracy, train_loss), in 1 message(s), 16 B."
        in report
    )
    assert "No model update, feature statistic or test result" not in report


def test_summary_of_an_encrypted_run_names_the_timings_it_sent_in_the_clear(tmp_path: Path) -> None:
    timing_only = ClientApp(mods=[audit_mod])

    @timing_only.train()
    def train(message: Message, context: Context) -> Message:
        blobs = ArrayRecord(
            {"update": Array(dtype="uint8", shape=(len(BLOB),), stype="raw-bytes", data=BLOB)}
        )
        content = RecordDict({"blobs": blobs, "metrics": MetricRecord({"encrypt_seconds": 0.2})})
        return Message(content=content, reply_to=message)

    timing_only(incoming("train"), context({"state-dir": str(tmp_path)}))
    report = summarize(lines(tmp_path))
    assert "IN THE CLEAR: timings and status flags (encrypt_seconds), in 1 message(s), 8 B." in report
    assert "No model update, feature statistic or test result of this hospital left in the clear" in report
    assert "own results" not in report


def test_summary_with_a_state_dir_shows_the_privacy_budget(tmp_path: Path, capsys) -> None:
    app(incoming("train"), context({"state-dir": str(tmp_path)}))
    (tmp_path / POLICY_FILE).write_text("lifetime_epsilon = 8.0\n")
    ReleaseLedger.in_state_dir(tmp_path).append(
        {"type": DP, "run": "41", "round": 3, "mechanism": "test", "epsilon": 2.5, "delta": 1e-5}
    )
    assert summary_main(["--state-dir", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    assert "run 41: epsilon 2.5 (delta 1e-05) after round 3" in report
    assert (
        "spent in all runs: epsilon 2.5 of the lifetime budget 8 (policy lifetime_epsilon); left: 5.5"
        in report
    )
    assert summary_main(["--log", str(tmp_path / AUDIT_FILE)]) == 0
    assert "Privacy budget: not shown (give --state-dir" in capsys.readouterr().out

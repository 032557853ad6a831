"""Encrypted evaluation in simulation: pooled metrics are those of the concatenated test sets,
and no reply carries a number computed from one hospital's data in the clear.

A recording ClientApp wraps the hospitals' real handlers: it writes every reply's metric records
(names and values) to a file per message, and, at the final evaluation, the hospital's own
predictions on its test split (what it alone knows) -- the ground truth the pooled metrics are
checked against.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from sim_helpers import HANDLERS, hospital_app, partition, simulate
from sklearn.metrics import roc_auc_score

from client import app as hospital
from common import protocol as p
from common.settings import RunSettings

# what a reply may say in the clear: timings, and flags that are the same for every hospital
OPERATIONAL = {"encrypt_seconds", "decrypt_seconds", "tabular", "ready"}


def recording_hospitals(directory: Path) -> ClientApp:
    def recorded(message_type: str, handler):
        def handle(message: Message, context: Context) -> Message:
            reply = handler(message, context)
            records = {name: dict(record) for name, record in reply.content.metric_records.items()}
            entry = {"type": message_type, "metrics": records, "records": sorted(reply.content.keys())}
            with (directory / f"replies-{partition(context)}.jsonl").open("a") as out:
                out.write(json.dumps(entry) + "\n")
            if message_type == "evaluate":  # the hospital's own view, for the test only
                config = hospital.config_of(message)
                local = hospital.hospital_side("client.local_data")
                training = hospital.hospital_side("client.local_training")
                task = local.TaskConfig.from_config(config)
                data = local.hospital_data(task, dict(context.node_config))
                weights = [a.numpy() for a in message.content[p.ARRAYS].values()]
                own = training.evaluate_local(task, data, weights, task.seed)
                np.savez(
                    directory / f"own-{partition(context)}.npz", labels=own.targets, probs=own.predictions
                )
            return reply

        return handle

    return hospital_app({message_type: recorded(message_type, h) for message_type, h in HANDLERS.items()})


def replies(directory: Path) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted(directory.glob("replies-*.jsonl"))
        for line in f.read_text().splitlines()
    ]


@pytest.mark.slow
def test_pooled_metrics_are_the_concatenated_test_sets_and_nothing_per_hospital_leaves(tmp_path):
    settings = RunSettings(
        strategy="encrypted_fedavg", num_rounds=2, threshold=2, he_preset="compact", seed=4
    )
    result = simulate(settings, recording_hospitals(tmp_path), 3)

    seen = replies(tmp_path)
    # every handler but query.dealings: the dealings ride on the first query.statistics
    assert {r["type"] for r in seen} == set(HANDLERS) - {p.DEALINGS}
    for reply in seen:
        names = {k for record in reply["metrics"].values() for k in record}
        assert names <= OPERATIONAL, reply
        assert p.EVALUATION not in reply["records"] and p.ARRAYS not in reply["records"], reply

    own = [np.load(tmp_path / f"own-{i}.npz") for i in range(3)]
    labels = np.concatenate([o["labels"] for o in own])
    probs = np.concatenate([o["probs"] for o in own])
    final = result.final_metrics
    assert final["eval_examples"] == len(labels)
    assert final["eval_accuracy"] == pytest.approx(np.mean(probs.argmax(1) == labels), abs=1e-9)
    loss = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
    assert final["eval_loss"] == pytest.approx(loss, abs=1e-6)  # float32 logits vs float64 here
    # the bound is tight (every within-bin pair ordered the same way reaches it): float slack only
    assert abs(final["eval_auc"] - roc_auc_score(labels, probs[:, 1])) <= final["eval_auc_bound"] + 1e-12
    assert final["eval_auc_bound"] < 0.01
    assert result.evaluation is not None and np.array_equal(
        result.evaluation.confusion.sum(axis=1), np.bincount(labels, minlength=2)
    )
    assert all("eval_auc" in h and "site_mean_eval_auc" not in h for h in result.history)


@pytest.mark.slow
def test_per_hospital_plaintext_is_opt_in_and_reports_both(tmp_path):
    settings = RunSettings(
        strategy="encrypted_fedavg", num_rounds=1, threshold=2, seed=4, per_hospital_plaintext=True
    )
    result = simulate(settings, recording_hospitals(tmp_path), 3)
    trains = [r for r in replies(tmp_path) if r["type"] == "train"]
    assert all(
        {"eval_accuracy", "eval_examples", "train_loss"} <= set(r["metrics"][p.METRICS]) for r in trains
    )
    assert {"eval_auc", "site_mean_eval_auc"} <= set(result.history[0])

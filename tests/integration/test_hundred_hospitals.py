"""A federation of 100 simulated hospitals with a 11-of-16 keyholder committee, and failures.

Each hospital holds its own small CSV table (generated here); three of them fail in training
every round and one keyholder fails every decryption, so every round decrypts on its second
attempt with the 15 keyholders that answered (the quorum minimum is ceil((16 + 11)/2) = 14).
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from test_simulation import simulate

from client import app as hospital
from server.settings import RunSettings

HOSPITALS = 100
FEATURES = 8
FAIL_IN_TRAINING = {20, 40, 60}  # partition ids
FAIL_IN_DECRYPTION = 3  # partition id of a keyholder (the committee is hospitals 1..16)


def write_hospital_tables(directory, rng: np.random.Generator) -> list[str]:
    """One CSV per hospital: a shared linear rule with noise, 40 to 80 patients each."""
    rule = rng.normal(size=FEATURES)
    paths = []
    for index in range(HOSPITALS):
        rows = int(rng.integers(40, 81))
        features = rng.normal(size=(rows, FEATURES))
        target = (features @ rule + rng.normal(scale=0.5, size=rows) > 0).astype(int)
        path = directory / f"hospital-{index}.csv"
        header = ",".join([f"x{j}" for j in range(FEATURES)] + ["target"])
        body = [",".join(f"{v:.5f}" for v in row) + f",{t}" for row, t in zip(features, target, strict=True)]
        path.write_text("\n".join([header, *body]) + "\n")
        paths.append(str(path))
    return paths


def partition(context: Context) -> int:
    return int(context.node_config["partition-id"])


unreliable = ClientApp()
unreliable.query("hello")(hospital.hello)
unreliable.query("deal")(hospital.deal)
unreliable.query("dealings")(hospital.dealings)
unreliable.query("statistics")(hospital.statistics)
unreliable.evaluate()(hospital.evaluate)


@unreliable.train()
def train_unless_down(message: Message, context: Context) -> Message:
    if partition(context) in FAIL_IN_TRAINING:
        raise RuntimeError("simulated hospital outage during training")
    return hospital.train(message, context)


@unreliable.query("decrypt")
def decrypt_unless_down(message: Message, context: Context) -> Message:
    if partition(context) == FAIL_IN_DECRYPTION:
        raise RuntimeError("simulated keyholder outage during decryption")
    return hospital.decrypt(message, context)


@pytest.mark.slow
def test_hundred_hospitals_with_failures_in_training_and_decryption(tmp_path) -> None:
    paths = write_hospital_tables(tmp_path, np.random.default_rng(0))
    settings = RunSettings(
        strategy="encrypted_fedavg",
        num_rounds=3,
        threshold=11,
        min_train_nodes=50,
        model="logreg",
        dataset="csv",
        num_features=FEATURES,
        num_classes=2,
        data_paths=",".join(paths),
        lr=0.3,
        round_timeout=900,
    )
    result = simulate(settings, unreliable, HOSPITALS)
    assert [h["contributors"] for h in result.history] == [HOSPITALS - len(FAIL_IN_TRAINING)] * 3
    assert [h["decryption_attempts"] for h in result.history] == [2, 2, 2]
    before, after = result.history[0]["eval_accuracy"], result.final_metrics["eval_accuracy"]
    assert after > before + 0.1 and after > 0.75  # the federation learns the shared rule

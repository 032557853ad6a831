"""Encrypted FedAvg in Flower's Simulation Engine: equivalence with plaintext FedAvg, and dropouts."""

from __future__ import annotations

import os

import numpy as np
import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.simulation import run_simulation

from client import app as hospital
from server.app import initial_weights, make_server_app
from server.settings import RunSettings
from strategies.fedavg import FederationResult

os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
BACKEND = {"client_resources": {"num_cpus": 1}}
# Quantization step of the precise preset (2^-53 relative) accumulates over 3 rounds of SGD:
# weights agree far below float32 resolution of what training changes.
WEIGHT_TOLERANCE = 1e-5


def simulate(settings: RunSettings, client_app: ClientApp, num_hospitals: int) -> FederationResult:
    results: list[FederationResult] = []
    rounds: list[dict] = []
    app = make_server_app(settings, lambda r, m: rounds.append(m), results.append)
    run_simulation(app, client_app, num_supernodes=num_hospitals, backend_config=BACKEND)
    assert results, "the ServerApp did not finish"
    assert len(rounds) == settings.num_rounds
    return results[0]


@pytest.mark.slow
def test_encrypted_run_matches_plaintext_fedavg() -> None:
    common = {"num_rounds": 3, "seed": 3, "min_train_nodes": 2, "he_preset": "precise"}
    encrypted = simulate(RunSettings(strategy="encrypted_fedavg", threshold=2, **common), hospital.app, 3)
    plain = simulate(RunSettings(strategy="fedavg", **common), hospital.app, 3)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(encrypted.weights, plain.weights, strict=True))
    assert diff < WEIGHT_TOLERANCE
    assert encrypted.final_metrics["eval_accuracy"] == pytest.approx(plain.final_metrics["eval_accuracy"])
    assert encrypted.final_metrics["eval_accuracy"] > 0.8


def make_initial(settings: RunSettings) -> list[np.ndarray]:
    return [np.asarray(w, dtype=np.float32) for w in initial_weights(settings)]


def partition(context: Context) -> int:
    return int(context.node_config["partition-id"])


faulty = ClientApp()
faulty.query("hello")(hospital.hello)
faulty.query("deal")(hospital.deal)
faulty.query("dealings")(hospital.dealings)
faulty.query("statistics")(hospital.statistics)
faulty.evaluate()(hospital.evaluate)


@faulty.train()
def train_or_drop(message: Message, context: Context) -> Message:
    if partition(context) == 0 and int(message.content["config"]["server-round"]) == 2:
        raise RuntimeError("simulated hospital outage during training")
    return hospital.train(message, context)


@faulty.query("decrypt")
def decrypt_or_drop(message: Message, context: Context) -> Message:
    if partition(context) == 1:
        raise RuntimeError("simulated hospital outage during decryption")
    return hospital.decrypt(message, context)


@pytest.mark.slow
def test_dropouts_in_training_and_decryption_are_tolerated() -> None:
    """3-of-5: hospital 1 fails training in round 2; keyholder 2 fails every decryption, so each
    round's first attempt (T = all 5) fails and a second attempt with the 4 that answered
    (the quorum minimum ceil((5+3)/2) = 4) decrypts."""
    settings = RunSettings(strategy="encrypted_fedavg", threshold=3, num_rounds=2, min_train_nodes=3)
    result = simulate(settings, faulty, 5)
    assert [h["contributors"] for h in result.history] == [5, 4]
    assert [h["decryption_attempts"] for h in result.history] == [2, 2]
    assert result.final_metrics["eval_accuracy"] > 0.5


never_decrypts = ClientApp()
never_decrypts.query("hello")(hospital.hello)
never_decrypts.query("deal")(hospital.deal)
never_decrypts.query("dealings")(hospital.dealings)
never_decrypts.query("statistics")(hospital.statistics)
never_decrypts.train()(hospital.train)
never_decrypts.evaluate()(hospital.evaluate)


@never_decrypts.query("decrypt")
def decrypt_statistics_only(message: Message, context: Context) -> Message:
    if partition(context) in (0, 1) and message.content["config"]["kind"] == "train":
        raise RuntimeError("simulated outage of two keyholders during round decryption")
    return hospital.decrypt(message, context)


@pytest.mark.slow
def test_a_round_without_decryption_quorum_keeps_the_model_and_the_run_goes_on() -> None:
    """2-of-3 needs all 3 keyholders (quorum minimum ceil((3+2)/2) = 3): with two of them down
    in decryption, every round keeps the initial model, says why, and the run still finishes."""
    settings = RunSettings(strategy="encrypted_fedavg", threshold=2, num_rounds=2, min_train_nodes=2)
    result = simulate(settings, never_decrypts, 3)
    assert [h.get("round_skipped") for h in result.history] == [1, 1]
    initial = make_initial(settings)
    assert all(np.array_equal(w, i) for w, i in zip(result.weights, initial, strict=True))
    assert result.final_metrics  # the final evaluation ran

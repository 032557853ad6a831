"""Distributed DP end to end in Flower's Simulation Engine (3 hospitals, 2 rounds)."""

from __future__ import annotations

import logging
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

sys.path.append(str(Path(__file__).parents[1] / "integration"))
from sim_helpers import hospital_app, partition, simulate, stopped_runs

from client import app as hospital
from common import protocol as p
from common.settings import RunSettings
from privacy import sampler

DP = {"dp": "distributed", "dp_clip_norm": 0.5, "dp_noise_multiplier": 0.8, "dp_min_contributors": 2}
COMMON = {"num_rounds": 2, "seed": 4, "min_train_nodes": 2, "he_preset": "precise", **DP}
# Each round's decoded mean differs from the plaintext one only by rounding: under one unit per
# value and hospital, clip_norm / units ~ 5e-9 (docs/privacy.md); training over 2 rounds keeps
# the weights far within this.
WEIGHT_TOLERANCE = 1e-5


def seeded_noise_hospitals() -> ClientApp:
    """The hospital ClientApp, its noise drawn from a seed per (hospital, round) instead of the
    OS: both runs add the same noise, so they differ by rounding alone. Test-only (Ray workers
    import this module, so the patch lives in the worker that trains)."""

    def train(message: Message, context: Context) -> Message:
        seed = f"{partition(context)}-{message.content['config'][p.ROUND]}"
        sampler.system_source = lambda: random.Random(seed)
        return hospital.train(message, context)

    return hospital_app({"train": train})


@pytest.mark.slow
def test_encrypted_dp_run_matches_plaintext_dp_run() -> None:
    encrypted_settings = RunSettings(strategy="encrypted_fedavg", threshold=2, **COMMON)
    encrypted = simulate(encrypted_settings, seeded_noise_hospitals(), 3)
    plain = simulate(RunSettings(strategy="fedavg", **COMMON), seeded_noise_hospitals(), 3)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(encrypted.weights, plain.weights, strict=True))
    assert diff < WEIGHT_TOLERANCE
    epsilons = [h["dp_epsilon"] for h in encrypted.history]
    assert 0 < epsilons[0] < epsilons[1] == pytest.approx(encrypted.final_metrics["dp_epsilon"])
    assert epsilons == pytest.approx([h["dp_epsilon"] for h in plain.history])
    assert encrypted.final_metrics["dp_delta"] == 1e-5


@pytest.mark.slow
def test_hospitals_refuse_when_the_roster_admits_fewer_than_m(caplog) -> None:
    """The simulated roster's min_contributors is min_train_nodes = 2; noise sized for m = 3
    would fall short in a 2-contributor aggregate, so every hospital refuses and the run stops
    before anything is decrypted (the runner refuses this config up front, see test_config)."""
    too_few = {"strategy": "encrypted_fedavg", "num_rounds": 1, "dp_min_contributors": 3}
    settings = RunSettings(**COMMON | too_few)
    with caplog.at_level(logging.WARNING):
        errors = stopped_runs(settings, 3)
    assert len(errors) == 1 and "0 valid encrypted contributions" in str(errors[0])
    assert "fewer than the 3 whose noise shares make the DP guarantee" in caplog.text

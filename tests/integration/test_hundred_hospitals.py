"""A federation of 100 simulated hospitals with a 11-of-16 keyholder committee, and failures.

Each hospital holds its own small CSV table (generated here); three of them fail in training
every round and one keyholder fails every decryption. Decryption sets have the quorum minimum
ceil((16 + 11)/2) = 14: a round whose first set holds the failing keyholder decrypts on its
second attempt, without it; once silent it is asked last, so later rounds decrypt at once.
"""

from __future__ import annotations

import numpy as np
import pytest
from sim_helpers import asked_to_decrypt, partition, simulate, unreliable_hospitals, write_hospital_tables

from common.settings import RunSettings

HOSPITALS = 100
FEATURES = 8
FAIL_IN_TRAINING = {20, 40, 60}  # partition ids
FAIL_IN_DECRYPTION = 3  # partition id of a keyholder (the committee is hospitals 1..16)


@pytest.mark.slow
def test_hundred_hospitals_with_failures_in_training_and_decryption(tmp_path) -> None:
    record = tmp_path / "asked"
    unreliable = unreliable_hospitals(
        train_down=lambda m, c: partition(c) in FAIL_IN_TRAINING,
        decrypt_down=lambda m, c: partition(c) == FAIL_IN_DECRYPTION and asked_to_decrypt(record, m, c),
    )
    paths = write_hospital_tables(tmp_path, np.random.default_rng(0), HOSPITALS, (40, 80), FEATURES)
    settings = RunSettings(
        strategy="encrypted_fedavg",
        num_rounds=3,
        threshold=11,
        min_train_nodes=50,
        model="logreg",
        dataset="csv",
        num_features=FEATURES,
        num_classes=2,
        data_paths=paths,
        lr=0.3,
        round_timeout=900,
    )
    result = simulate(settings, unreliable, HOSPITALS)
    assert [h["contributors"] for h in result.history] == [HOSPITALS - len(FAIL_IN_TRAINING)] * 3
    asked = [int(r) for r in record.read_text().split()] if record.exists() else []
    assert len(asked) <= 1  # once silent, never asked first again
    attempts = [h["decryption_attempts"] for h in result.history]
    assert attempts == [2 if r in asked else 1 for r in (1, 2, 3)], (attempts, asked)
    before, after = result.history[0]["eval_accuracy"], result.final_metrics["eval_accuracy"]
    assert after > before + 0.1 and after > 0.75  # the federation learns the shared rule

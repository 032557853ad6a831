"""``python -m examples.regression [hydra overrides]``: generate the hospitals' tables, then run
the federation encrypted in simulation (``experiments.run``), printing and logging to MLflow."""

from __future__ import annotations

import sys

from examples.cli import csv_overrides, data_dir, run_experiment
from examples.regression.data import FEATURES, TARGET, write_hospitals


def overrides(hospitals: int = 3, seed: int = 0) -> list[str]:
    paths = write_hospitals(data_dir("regression"), hospitals, seed)
    return [
        *csv_overrides(paths, len(FEATURES)),
        "dataset.task=regression",
        f"dataset.target_column={TARGET}",
        "model=mlp",
        "strategy.batch_size=32",
        "strategy.lr=0.01",
        "num_rounds=5",
    ]


if __name__ == "__main__":
    run_experiment(overrides(), sys.argv[1:])

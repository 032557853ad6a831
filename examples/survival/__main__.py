"""``python -m examples.survival [hydra overrides]``: generate the hospitals' follow-up tables,
then run the federation encrypted in simulation (``experiments.run``), printing and logging the
pooled concordance index and its bound to MLflow."""

from __future__ import annotations

import sys

from examples.cli import csv_overrides, data_dir, run_experiment
from examples.survival.data import FEATURES, STUDY_MONTHS, write_hospitals


def overrides(hospitals: int = 3, seed: int = 0) -> list[str]:
    paths = write_hospitals(data_dir("survival"), hospitals, seed)
    return [
        *csv_overrides(paths, len(FEATURES)),
        "dataset.task=survival",
        "dataset.time_column=time",
        "dataset.event_column=event",
        f"evaluation.time_horizon={STUDY_MONTHS}",
        "evaluation.time_bins=60",
        "model=mlp",
        "strategy.batch_size=64",
        "strategy.lr=0.05",
        "num_rounds=5",
    ]


if __name__ == "__main__":
    run_experiment(overrides(), sys.argv[1:])

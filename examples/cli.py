"""Run an example federation through the experiment runner (``experiments.run``), so it is
tracked in MLflow and printed exactly as any run: the example only adds its Hydra overrides."""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

DATA_DIR = Path("outputs") / "example-data"  # under the working directory, like Hydra's outputs


def data_dir(name: str) -> Path:
    directory = (DATA_DIR / name).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def write_tables(
    directory: Path, hospitals: int, seed: int, rows: tuple[int, int], table: Callable[..., object]
) -> list[Path]:
    """``hospital-<i>.csv`` in ``directory``: ``table(rng, rows, i)`` (a pandas DataFrame) for
    ``rows`` drawn in the given range; the same files for a seed."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(hospitals):
        path = directory / f"hospital-{index}.csv"
        table(rng, int(rng.integers(rows[0], rows[1] + 1)), index).to_csv(path, index=False)
        paths.append(path)
    return paths


def csv_overrides(paths: Sequence[Path], num_features: int) -> list[str]:
    """A ``dataset=csv`` federation of one simulated hospital per file."""
    return [
        "dataset=csv",
        f"dataset.paths=[{','.join(str(p) for p in paths)}]",
        f"dataset.num_features={num_features}",
        f"federation.num_hospitals={len(paths)}",
    ]


def run_experiment(overrides: Sequence[str], argv: Sequence[str]) -> None:
    """``python -m experiments.run <overrides> <argv>``, in this process (``argv`` last, so the
    engineer's own overrides win)."""
    sys.argv = [str(Path(__file__).parents[1] / "experiments" / "run.py"), *overrides, *argv]
    runpy.run_module("experiments.run", run_name="__main__", alter_sys=True)

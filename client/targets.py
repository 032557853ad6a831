"""The target columns of a hospital's CSV table for each task (``models.tasks``).

Classification reads one label column (``client.data`` numbers its classes); regression one
numeric ``target`` column; survival a follow-up ``time`` (>= 0) and an ``event`` indicator
(1: the event happened, 0: censored). Every value must be valid: an error names the file, the
column and what was expected, and stays in the hospital's log (``HospitalDataError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

TASKS_WITH_VALUES = ("regression", "survival")
TASK_NAMES = ("classification", *TASKS_WITH_VALUES)  # models.tasks.TASK_NAMES, without torch


@dataclass(frozen=True)
class TargetColumns:
    """Which columns of the table hold the target, for ``task``."""

    task: str = "classification"
    target: str = "target"
    time: str = "time"
    event: str = "event"

    @property
    def columns(self) -> list[str]:
        return [self.time, self.event] if self.task == "survival" else [self.target]

    def values(self, frame, path: Path, error: type[Exception]) -> tuple[np.ndarray, ...]:
        """(targets, strata of the train/test split) of a regression or survival table whose rows
        all have their target columns; a bad value raises ``error`` (the caller's data error)."""
        if self.task == "regression":
            y = self._numeric(frame, self.target, path, error)
            return y, np.zeros(len(y), dtype=np.int64)
        time = self._numeric(frame, self.time, path, error)
        if np.any(time < 0):
            raise error(f"{path}: time column {self.time!r} has negative values (expected times >= 0)")
        event = self._numeric(frame, self.event, path, error)
        if not np.all(np.isin(event, (0.0, 1.0))):
            bad = sorted(set(event[~np.isin(event, (0.0, 1.0))].tolist()))[:5]
            raise error(
                f"{path}: event column {self.event!r} has values {bad}; expected 1 (event) or 0 (censored)"
            )
        return np.column_stack([time, event]), event.astype(np.int64)

    @staticmethod
    def _numeric(frame, column: str, path: Path, error: type[Exception]) -> np.ndarray:
        """``column`` of the pandas ``frame`` as finite floats."""
        import pandas as pd  # the daemon imports this module: pandas only when a table is read

        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise error(f"{path}: column {column!r} is not numeric (expected numbers)")
        values = frame[column].to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise error(f"{path}: column {column!r} has infinite values")
        return values

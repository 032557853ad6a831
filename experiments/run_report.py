"""What the runner shows the engineer in either engine: the metrics beside the progress bar,
how numbers are printed, and the error of a federation that stopped early (the one line read)."""

from __future__ import annotations

import math


class RunFailedError(RuntimeError):
    """The federation ran and stopped early; the message is the one line the engineer reads."""


def fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else str(value)


PROGRESS_METRICS = (  # shown beside the bar, those the task has
    "contributors",
    "eval_loss",
    "eval_accuracy",
    "eval_auc",
    "eval_r2",
    "eval_c_index",
)

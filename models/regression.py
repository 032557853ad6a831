"""Regression: one output per example, trained with mean squared error, evaluated from sums.

Each hospital sends, for its test split, the example count and five real totals in fixed point
(``models.sums``): Σy⁺ and Σy⁻ (the positive and negative parts of the target, since every sum
must be non-negative), Σy², Σ(y-ŷ)² and Σ|y-ŷ|. Their federation-wide sums give the pooled MSE,
MAE and R² = 1 - Σ(y-ŷ)² / (Σy² - (Σy)²/n): the metrics of one model on the concatenated test
sets.

Exactness: a hospital computes each total with ``math.fsum`` (correctly rounded, error at most
2^-53 of the total) and rounds it once to fixed point (< 2^-33). A pooled total over H
hospitals therefore differs from the exact total of the concatenated predictions by at most
``δ = H·2^-33 + 2^-52·total`` (the products y·y rounded too); MSE and MAE by δ/n; R² by what
those δ move it
(``PooledRegression.bounds``, interval arithmetic, plus float64 rounding of the formula). A
hospital's total must stay below 2^30 (the largest fixed-point sum): a larger one is refused
with an error that says to rescale the target. A pooled total saturated at the maximum gives NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from models.sums import (
    COUNTS,
    FIXED_POINT_BITS,
    MAX_TOTAL,
    CountedLayout,
    PooledSums,
    fixed_point,
    from_fixed_point,
)

TOTALS = ("y_positive", "y_negative", "y_squared", "squared_error", "absolute_error")
LARGEST_TOTAL = MAX_TOTAL / (1 << FIXED_POINT_BITS)  # ~2^30
EPS = 2.0**-52


def mse_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of a one-output model: ``outputs`` (batch, 1), ``targets`` (batch,)."""
    return torch.nn.functional.mse_loss(outputs.reshape(-1), targets.reshape(-1).to(outputs.dtype))


@dataclass(frozen=True)
class RegressionLayout(CountedLayout):
    """The sums of a regression evaluation: counts, then the five fixed-point totals."""

    @property
    def sections(self) -> dict[str, tuple[int, ...]]:
        return {name: () for name in (*COUNTS, *TOTALS)}

    def task_sums(self, targets: np.ndarray, predictions: np.ndarray) -> tuple[int, dict[str, object]]:
        """The five totals, in fixed point; refused where one would saturate."""
        y = np.asarray(targets, dtype=np.float64).reshape(-1)
        y_hat = np.asarray(predictions, dtype=np.float64).reshape(-1)
        if y.shape != y_hat.shape or not np.all(np.isfinite(y)) or not np.all(np.isfinite(y_hat)):
            raise ValueError(
                f"regression evaluation: expected finite targets and predictions of one length, "
                f"got {y.shape} and {y_hat.shape}"
            )
        residual = y - y_hat
        totals = {
            "y_positive": math.fsum(np.maximum(y, 0.0)),
            "y_negative": math.fsum(np.maximum(-y, 0.0)),
            "y_squared": math.fsum(y * y),
            "squared_error": math.fsum(residual * residual),
            "absolute_error": math.fsum(np.abs(residual)),
        }
        too_large = [name for name, value in totals.items() if value > LARGEST_TOTAL]
        if too_large:
            raise ValueError(
                f"regression evaluation: the totals {too_large} exceed {LARGEST_TOTAL:.3g}, the largest "
                "fixed-point sum; rescale the target (e.g. days instead of seconds)"
            )
        return len(y), {name: fixed_point(value) for name, value in totals.items()}

    def pooled(self, sums) -> PooledRegression:
        return PooledRegression(self, self.split(sums))


class PooledRegression(PooledSums):
    """The pooled test set's MSE, MAE and R², from the federation-wide sums only."""

    def total(self, name: str) -> float:
        """A real total; NaN if it saturated (the federation's sum passed the largest one)."""
        value = int(self.sums[name])
        return math.nan if value >= MAX_TOTAL else from_fixed_point(value)

    def slack(self, name: str) -> float:
        """δ of ``name``: what rounding at the hospitals can have moved the pooled total (one
        fixed-point rounding per hospital, float64 rounding of the products and of ``fsum``)."""
        return int(self.sums["hospitals"]) * 2.0**-33 + 2 * EPS * abs(self.total(name))

    def _r2_from(self, sse: float, y_squared: float, y_sum: float) -> float:
        sst = y_squared - y_sum * y_sum / self.examples
        return 1.0 - sse / sst if sst > 0 else math.nan

    def metrics(self) -> dict[str, float]:
        n = max(self.examples, 1)
        sse, sae = self.total("squared_error"), self.total("absolute_error")
        y_sum = self.total("y_positive") - self.total("y_negative")
        return self.count_metrics() | {
            "eval_loss": from_fixed_point(self.sums["loss"]) / n,
            "eval_mse": sse / n,
            "eval_mae": sae / n,
            "eval_r2": self._r2_from(sse, self.total("y_squared"), y_sum),
        }

    def bounds(self) -> dict[str, float]:
        """How far each metric can be from that of the concatenated predictions (module docstring):
        R² by interval arithmetic over the slack of its totals; infinite when Σy² - (Σy)²/n is
        within its own error of 0 (a constant target)."""
        n = max(self.examples, 1)
        metrics = self.metrics()
        sse, y2 = self.total("squared_error"), self.total("y_squared")
        y_sum = self.total("y_positive") - self.total("y_negative")
        d_sse, d_y2 = self.slack("squared_error"), self.slack("y_squared")
        d_sum = self.slack("y_positive") + self.slack("y_negative") + EPS * abs(y_sum)
        rounding = 4 * EPS * (y2 + (abs(y_sum) + d_sum) ** 2 / n)  # of the formula in float64
        largest_mean_square = (abs(y_sum) + d_sum) ** 2 / n
        smallest_mean_square = max(abs(y_sum) - d_sum, 0.0) ** 2 / n
        sst_low = y2 - d_y2 - largest_mean_square - rounding
        sst_high = y2 + d_y2 - smallest_mean_square + rounding
        r2 = metrics["eval_r2"]
        if not sst_low > 0:
            r2_bound = math.inf
        else:
            r2_range = (1 - (sse + d_sse) / sst_low, 1 - max(sse - d_sse, 0.0) / sst_high)
            r2_bound = max(abs(r2 - r2_range[0]), abs(r2_range[1] - r2)) + 4 * EPS * (1 + abs(r2))
        return {
            "eval_mse": d_sse / n + EPS * metrics["eval_mse"],
            "eval_mae": self.slack("absolute_error") / n + EPS * metrics["eval_mae"],
            "eval_r2": r2_bound,
        }

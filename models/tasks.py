"""What a learning task is to the federation: its loss, its predictions, and its pooled metrics.

A run's ``task`` setting picks one of ``TASKS``. Hospitals train with ``loss``, turn their test
split into ``predict``'s (targets, predictions, loss total), and send ``local_sums`` of those:
non-negative integers that are added under HE, so the server decrypts only the federation-wide
sums, which ``from_sums`` turns into the pooled metrics (``metric_names``). Classification is
``models.pooled_metrics``; regression and survival are ``models.regression`` and
``models.survival``, each with its exactness bound in its docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from models.pooled_metrics import EvaluationLayout, PooledEvaluation, local_sums
from models.regression import RegressionLayout, mse_loss
from models.survival import SurvivalLayout, cox_batch_loss, cox_loss
from models.training import predict, predict_outputs


@dataclass(frozen=True)
class EvaluationSettings:
    """What fixes a run's evaluation layout; the same at the server and at every hospital."""

    num_classes: int = 2
    bins: int = 100  # score bins (classification), risk bins (survival)
    time_bins: int = 20  # survival
    horizon: float = 0.0  # survival: the end of the last time bin


class Task:
    """One task (subclasses below); stateless, so one instance per name serves every run."""

    name: str
    metric_names: tuple[str, ...]  # the pooled ``eval_*`` metrics, besides eval_loss and eval_examples
    per_example_loss = True  # the loss is a mean over examples (DP-SGD needs that)

    def num_outputs(self, num_classes: int) -> int:
        return 1

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, model: torch.nn.Module, loader: DataLoader) -> tuple[np.ndarray, np.ndarray, float]:
        """(targets, predictions, loss total) of ``model`` on ``loader``, the model unchanged."""
        raise NotImplementedError

    def layout(self, settings: EvaluationSettings):
        raise NotImplementedError

    def local_sums(self, layout, targets, predictions, loss_total: float, *counts) -> list[int]:
        """One hospital's sums; ``counts``: training examples, training loss, clipped values."""
        return layout.local_sums(targets, predictions, loss_total, *counts)

    def from_sums(self, layout, sums):
        """The pooled evaluation (``.metrics()``) from the federation-wide sums."""
        return layout.pooled(sums)

    def check_record_dp(self) -> None:
        if not self.per_example_loss:
            raise ValueError(
                f"task={self.name} cannot train with record-level DP (dp=record): its loss is not a sum "
                "of per-example losses, so DP-SGD's per-example clipping would not bound a record's "
                "influence; use dp=distributed or dp=off"
            )


class Classification(Task):
    name = "classification"
    metric_names = ("eval_accuracy", "eval_auc", "eval_auc_bound")

    def num_outputs(self, num_classes: int) -> int:
        return num_classes

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(outputs, targets.long())

    def predict(self, model, loader):
        return predict(model, loader)

    def layout(self, settings: EvaluationSettings) -> EvaluationLayout:
        return EvaluationLayout(settings.num_classes, settings.bins)

    def local_sums(self, layout, targets, predictions, loss_total, *counts):
        return local_sums(layout, targets, predictions, loss_total, *counts)

    def from_sums(self, layout, sums) -> PooledEvaluation:
        return PooledEvaluation.from_sums(layout, sums)


class Regression(Task):
    name = "regression"
    metric_names = ("eval_mse", "eval_mae", "eval_r2")

    def loss(self, outputs, targets):
        return mse_loss(outputs, targets)

    def predict(self, model, loader):
        targets, outputs = predict_outputs(model, loader)
        predictions = outputs.reshape(-1)
        return targets.numpy(), predictions.numpy(), float(((predictions - targets.double()) ** 2).sum())

    def layout(self, settings: EvaluationSettings) -> RegressionLayout:
        return RegressionLayout()


class Survival(Task):
    name = "survival"
    metric_names = ("eval_c_index", "eval_c_index_bound")
    per_example_loss = False

    def loss(self, outputs, targets):
        return cox_batch_loss(outputs, targets)

    def predict(self, model, loader):
        """The loss total is the test split's whole negative partial log-likelihood (one stratum)."""
        targets, outputs = predict_outputs(model, loader)
        risk = outputs.reshape(-1)
        events = float(targets[:, 1].sum())
        total = float(cox_loss(risk, targets[:, 0], targets[:, 1])) * max(events, 1.0)
        return targets.numpy(), risk.numpy(), total

    def layout(self, settings: EvaluationSettings) -> SurvivalLayout:
        return SurvivalLayout(settings.time_bins, settings.bins, settings.horizon)


TASKS: dict[str, Task] = {task.name: task for task in (Classification(), Regression(), Survival())}
TASK_NAMES = tuple(TASKS)


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task must be one of {TASK_NAMES}, got {name!r}")
    return TASKS[name]

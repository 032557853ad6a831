"""A hospital's local learning: the run's model, local training and evaluation on the data
``client.local_data`` loads (the training stack: torch, and Opacus for record-level DP)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from client.data import HospitalData
from client.local_data import HospitalRandomness, TaskConfig
from models.registry import build_model, model_kwargs
from models.tasks import EvaluationSettings, get_task
from models.training import get_weights, roc_auc, set_weights, train


def make_model(task: TaskConfig, num_features, num_outputs: int) -> torch.nn.Module:
    """The run's model (a preset or an import path in the app bundle), checked for the encoder."""
    kwargs = model_kwargs(task.model, task.hidden, task.model_args)
    torch.manual_seed(task.seed)
    return build_model(task.model, num_features, num_outputs, **kwargs)


def task_model(task: TaskConfig, data: HospitalData) -> torch.nn.Module:
    """``make_model`` with the outputs the run's task needs (classes, or one value)."""
    return make_model(task, data.num_features, get_task(task.task).num_outputs(data.num_classes))


@dataclass(frozen=True)
class LocalEvaluation:
    """The global model on this hospital's test split: its own metrics (they stay here unless
    the run opts into per-hospital plaintext) and the predictions behind the pooled sums
    (``models.tasks``: class probabilities, predicted values or risks)."""

    targets: np.ndarray
    predictions: np.ndarray
    loss_total: float
    settings: EvaluationSettings = field(default_factory=EvaluationSettings)
    task: str = "classification"

    @property
    def metrics(self) -> dict:
        if self.task != "classification":  # its own sums, pooled over itself alone
            return get_task(self.task).from_sums(self._layout(), self.sums()).metrics()
        n = len(self.targets)
        return {
            "eval_loss": self.loss_total / n,
            "eval_accuracy": float(np.mean(self.predictions.argmax(axis=1) == self.targets)),
            "eval_auc": roc_auc(self.targets, self.predictions),
            "eval_examples": n,
        }

    def _layout(self, bins: int | None = None):
        settings = replace(self.settings, bins=bins or self.settings.bins)
        if self.task == "classification":
            settings = replace(settings, num_classes=self.predictions.shape[1])
        return get_task(self.task).layout(settings)

    def sums(
        self, bins: int | None = None, train_examples: int = 0, train_loss: float = 0.0, clipped: int = 0
    ) -> list[int]:
        """This hospital's part of the pooled evaluation (``models.tasks``)."""
        counts = (train_examples, train_loss, clipped)
        learning, layout = get_task(self.task), self._layout(bins)
        return learning.local_sums(layout, self.targets, self.predictions, self.loss_total, *counts)


def local_evaluation(task: TaskConfig, model: torch.nn.Module, loader) -> LocalEvaluation:
    """``model`` on ``loader`` as the run's task evaluates it (the model unchanged)."""
    settings = EvaluationSettings(time_bins=task.time_bins, horizon=task.time_horizon)
    return LocalEvaluation(*get_task(task.task).predict(model, loader), settings=settings, task=task.task)


def evaluate_local(
    task: TaskConfig, data: HospitalData, weights: list[np.ndarray], seed: int
) -> LocalEvaluation:
    model = task_model(task, data)
    set_weights(model, weights)
    _, test_loader = data.loaders(task.batch_size, seed=seed)
    return local_evaluation(task, model, test_loader)


def run_local_round(
    task: TaskConfig,
    data: HospitalData,
    global_weights: list[np.ndarray],
    server_round: int,
    randomness: HospitalRandomness,
) -> tuple[list[np.ndarray], float, LocalEvaluation]:
    """Evaluate the global model, train locally; return the weight delta, the training loss and
    the evaluation of the global model it started from."""
    learning = get_task(task.task)
    if task.record_dp is not None:
        learning.check_record_dp()
    model = task_model(task, data)
    set_weights(model, global_weights)
    shuffle_seed, training_seed = randomness.round_seeds(server_round)
    train_loader, test_loader = data.loaders(task.batch_size, seed=shuffle_seed)
    before = local_evaluation(task, model, test_loader)  # leaves the model as it was
    loss = train(
        model,
        train_loader,
        task.local_epochs,
        task.lr,
        seed=training_seed,
        optimizer=task.optimizer,
        dp=task.record_dp,
        loss=learning.loss,
    )
    delta = [new - old for new, old in zip(get_weights(model), global_weights, strict=True)]
    return delta, float(loss), before


def evaluate_global(task: TaskConfig, data: HospitalData, weights: list[np.ndarray]) -> dict:
    return evaluate_local(task, data, weights, task.seed).metrics

"""Move weights in and out of a model, train it locally and evaluate it.

Weights travel as a list of float32 numpy arrays in ``state_dict`` order: the format Flower
sends and the HE layer encodes. Training is seeded locally so that a client round can be
replayed exactly without touching the caller's global random state; with record-level DP
(DP-SGD, ``privacy.dpsgd``) the batches and the noise are secret, so such a round is not.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader

from privacy.config import RecordDpConfig
from privacy.dpsgd import make_private
from privacy.dpsgd_budget import DpSgdPlan

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> mean loss


def cross_entropy(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(outputs, labels.long())


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """Return float32 copies of every ``state_dict`` entry, in ``state_dict`` order."""
    return [
        tensor.detach().cpu().numpy().astype(np.float32, copy=True) for tensor in model.state_dict().values()
    ]


def set_weights(model: nn.Module, weights: Sequence[np.ndarray]) -> None:
    """Load ``weights`` (as from :func:`get_weights`) into ``model`` in place.

    Raises
    ------
    ValueError
        If the number of arrays differs from the number of ``state_dict`` entries, or an
        array's shape differs from its entry's; the message names the entry.
    """
    state = model.state_dict()
    names = list(state)
    if len(weights) != len(names):
        raise ValueError(
            f"model has {len(names)} weight tensors ({', '.join(names)}), got {len(weights)} arrays"
        )
    new_state = {}
    for name, array in zip(names, weights, strict=True):
        array = np.asarray(array)
        expected = tuple(state[name].shape)
        if array.shape != expected:
            raise ValueError(f"weight {name!r} expects shape {expected}, got {array.shape}")
        new_state[name] = torch.as_tensor(array, dtype=state[name].dtype)
    model.load_state_dict(new_state, strict=True)


def _make_optimizer(model: nn.Module, optimizer: str, lr: float, momentum: float) -> torch.optim.Optimizer:
    if optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    if optimizer == "adam":
        if momentum != 0.0:
            raise ValueError(f"momentum applies to 'sgd' only, got momentum={momentum} for 'adam'")
        return torch.optim.Adam(model.parameters(), lr=lr)
    raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")


def train(
    model: nn.Module,
    loader: DataLoader,
    epochs: int,
    lr: float,
    seed: int,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    dp: RecordDpConfig | None = None,
    loss: Loss = cross_entropy,
) -> float:
    """Train ``model`` in place with ``loss`` (cross-entropy) and return the last epoch's mean loss.

    The run is a function of ``seed``: torch's global generator is seeded inside a forked
    RNG scope (dropout, samplers without a generator), and a loader that owns a
    ``generator`` has it re-seeded with ``seed``, so the same call on the same weights and
    data gives the same result even when the loader object is reused. The caller's global
    torch RNG state is left unchanged. A fresh optimizer is built per call (no state is
    carried between federated rounds).

    Parameters
    ----------
    model
        Module mapping a batch of inputs to logits ``(batch, num_classes)``.
    loader
        Yields ``(inputs, targets)``: integer class labels of shape ``(batch,)`` for
        cross-entropy, whatever ``loss`` takes otherwise.
    epochs
        Number of passes over ``loader`` (>= 1).
    lr
        Learning rate (> 0).
    seed
        Seed of all randomness in this call.
    optimizer
        ``"sgd"`` or ``"adam"``.
    momentum
        SGD momentum; must stay 0 for Adam.
    dp
        Record-level DP: train with DP-SGD over Poisson batches of expected size
        ``loader.batch_size`` (``privacy.dpsgd``); a run over its ε budget is refused
        (``PrivacyBudgetExceeded``) before the first step.
    loss
        ``(outputs, targets) -> mean loss`` of a batch (``models.tasks``).

    Returns
    -------
    float
        Mean per-example training loss over the last epoch.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if not lr > 0.0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if momentum < 0.0:
        raise ValueError(f"momentum must be >= 0, got {momentum!r}")
    opt = _make_optimizer(model, optimizer, lr, momentum)
    trained = model
    if dp is not None:
        plan = DpSgdPlan.for_hospital(dp, len(loader.dataset), loader.batch_size, epochs)
        trained, opt, loader = make_private(plan, model, opt, loader)
    was_training = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if isinstance(loader.generator, torch.Generator):
                loader.generator.manual_seed(seed)
            for _ in range(epochs):
                total, count = 0.0, 0
                for inputs, labels in loader:
                    opt.zero_grad()
                    batch_loss = loss(trained(inputs), labels)
                    batch_loss.backward()
                    opt.step()
                    if len(labels):  # a Poisson batch may be empty (its step still adds noise)
                        total += batch_loss.item() * len(labels)
                        count += len(labels)
                if count == 0:
                    raise ValueError("loader yielded no examples to train on")
    finally:
        model.train(was_training)
        if trained is not model:
            trained.remove_hooks()
    return total / count


def roc_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC: binary on P(class 1); multiclass one-vs-rest macro over present classes.

    A class absent from ``labels`` has no ROC curve, so it is left out of the macro average
    (a hospital's test split may lack a rare class); with fewer than two classes present the
    AUC is undefined and NaN is returned.
    """
    present = np.unique(labels)
    if len(present) < 2 or not np.all(np.isfinite(probs)):
        return math.nan
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    per_class = [roc_auc_score(labels == c, probs[:, c]) for c in present]
    return float(np.mean(per_class))


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode without gradients, restored to its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def predict(model: nn.Module, loader: DataLoader) -> tuple[np.ndarray, np.ndarray, float]:
    """Labels, softmax probabilities (float64) and the summed cross-entropy over ``loader``,
    without changing ``model``."""
    all_labels, all_probs, total_loss = [], [], 0.0
    with _evaluating(model):
        for inputs, labels in loader:
            logits = model(inputs)
            labels = labels.long()
            total_loss += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            all_probs.append(torch.softmax(logits.double(), dim=1).numpy())
            all_labels.append(labels.numpy())
    if not all_labels or sum(len(y) for y in all_labels) == 0:
        raise ValueError("loader yielded no examples to evaluate on")
    return np.concatenate(all_labels), np.concatenate(all_probs), total_loss


def predict_outputs(model: nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """All targets and raw outputs over ``loader`` (float64), without changing ``model``."""
    targets, outputs = [], []
    with _evaluating(model):
        for inputs, batch_targets in loader:
            outputs.append(model(inputs).double())
            targets.append(batch_targets.double())
    if not targets or sum(len(t) for t in targets) == 0:
        raise ValueError("loader yielded no examples to evaluate on")
    return torch.cat(targets), torch.cat(outputs)


def evaluate(model: nn.Module, loader: DataLoader) -> dict[str, float | int]:
    """Evaluate ``model`` on ``loader`` without changing it.

    Returns
    -------
    dict
        ``loss`` (mean per-example cross-entropy), ``accuracy``, ``auc`` (see :func:`roc_auc`;
        NaN when only one class is present) and ``num_examples``.
    """
    y, probs, total_loss = predict(model, loader)
    return {
        "loss": total_loss / len(y),
        "accuracy": float(np.mean(probs.argmax(axis=1) == y)),
        "auc": roc_auc(y, probs),
        "num_examples": len(y),
    }

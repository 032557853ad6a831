"""A hospital's local learning task: its data, the model, local training and evaluation.

Data come from the node's own configuration: in simulation ``partition-id``/``num-partitions``
select a share of the embedded breast-cancer data; in deployment ``data-path`` (and
``target-column``) point at the hospital's CSV or ``.npz`` file. Nothing here leaves the site.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from client.data import (
    HospitalData,
    feature_moments,
    load_breast_cancer_partition,
    load_csv,
    load_npz,
    mean_std_from_moments,
    standardize,
)
from models.registry import build_model
from models.training import evaluate, get_weights, set_weights, train


@dataclass(frozen=True)
class TaskConfig:
    """What the server asks for; plain values sent in each message's config."""

    dataset: str
    model: str
    partitioning: str
    alpha: float
    seed: int
    local_epochs: int
    batch_size: int
    lr: float
    optimizer: str
    target_column: str
    hidden: int

    @classmethod
    def from_config(cls, config: dict) -> TaskConfig:
        return cls(
            dataset=str(config.get("dataset", "breast_cancer")),
            model=str(config.get("model", "mlp")),
            partitioning=str(config.get("partitioning", "iid")),
            alpha=float(config.get("alpha", 0.5)),
            seed=int(config.get("seed", 0)),
            local_epochs=int(config.get("local-epochs", 1)),
            batch_size=int(config.get("batch-size", 16)),
            lr=float(config.get("lr", 0.05)),
            optimizer=str(config.get("optimizer", "sgd")),
            target_column=str(config.get("target-column", "target")),
            hidden=int(config.get("hidden", 32)),
        )


def load_hospital_data(task: TaskConfig, node_config: dict) -> HospitalData:
    """The hospital's data set, chosen by its node configuration (see module docstring)."""
    if "data-path" in node_config:
        path = str(node_config["data-path"])
        if path.endswith(".npz"):
            return load_npz(path)
        data = load_csv(path, str(node_config.get("target-column", task.target_column)), seed=task.seed)
    elif task.dataset == "breast_cancer":
        data = load_breast_cancer_partition(
            int(node_config["partition-id"]),
            int(node_config["num-partitions"]),
            partitioning=task.partitioning,
            alpha=task.alpha,
            seed=task.seed,
        )
    else:
        raise ValueError(f"dataset {task.dataset!r} needs a 'data-path' in the node config of every hospital")
    mean, std = mean_std_from_moments(*feature_moments(data))
    return standardize(data, mean, std)


@cache
def _cached_data(task: TaskConfig, node_items: tuple) -> HospitalData:
    return load_hospital_data(task, dict(node_items))


def hospital_data(task: TaskConfig, node_config: dict) -> HospitalData:
    return _cached_data(task, tuple(sorted(node_config.items())))


def make_model(task: TaskConfig, num_features, num_classes: int) -> torch.nn.Module:
    kwargs = {"hidden": (task.hidden,)} if task.model == "mlp" else {}
    torch.manual_seed(task.seed)
    return build_model(task.model, num_features, num_classes, **kwargs)


def run_local_round(
    task: TaskConfig, data: HospitalData, global_weights: list[np.ndarray], server_round: int, party: int
) -> tuple[list[np.ndarray], dict]:
    """Evaluate the global model, train locally; return the weight delta and metrics."""
    model = make_model(task, data.num_features, data.num_classes)
    set_weights(model, global_weights)
    train_loader, test_loader = data.loaders(task.batch_size, seed=task.seed + 1000 * server_round)
    before = evaluate(model, test_loader)
    loss = train(
        model,
        train_loader,
        task.local_epochs,
        task.lr,
        seed=task.seed + 7919 * server_round,
        optimizer=task.optimizer,
    )
    delta = [new - old for new, old in zip(get_weights(model), global_weights, strict=True)]
    metrics = {
        "train_loss": float(loss),
        "eval_loss": float(before["loss"]),
        "eval_accuracy": float(before["accuracy"]),
        "eval_auc": float(before["auc"]),
        "eval_examples": int(before["num_examples"]),
        "train_examples": len(data.y_train),
    }
    return delta, metrics


def evaluate_global(task: TaskConfig, data: HospitalData, weights: list[np.ndarray]) -> dict:
    model = make_model(task, data.num_features, data.num_classes)
    set_weights(model, weights)
    _, test_loader = data.loaders(task.batch_size, seed=task.seed)
    result = evaluate(model, test_loader)
    return {
        "eval_loss": float(result["loss"]),
        "eval_accuracy": float(result["accuracy"]),
        "eval_auc": float(result["auc"]),
        "eval_examples": int(result["num_examples"]),
    }

"""Torch models and local training utilities; no Flower or crypto dependencies."""

from models.cnn import SmallCNN
from models.registry import MODEL_NAMES, build_model
from models.tabular import MLP, LogisticRegression
from models.training import evaluate, get_weights, set_weights, train

__all__ = [
    "MLP",
    "MODEL_NAMES",
    "LogisticRegression",
    "SmallCNN",
    "build_model",
    "evaluate",
    "get_weights",
    "set_weights",
    "train",
]

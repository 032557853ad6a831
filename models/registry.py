"""Build a model from its configuration name, so configs and clients never import classes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from models.cnn import SmallCNN
from models.tabular import MLP, LogisticRegression

MODEL_NAMES: tuple[str, ...] = ("logreg", "mlp", "cnn")


def _tabular_features(name: str, num_features_or_shape: int | Sequence[int]) -> int:
    if isinstance(num_features_or_shape, int) and not isinstance(num_features_or_shape, bool):
        return num_features_or_shape
    shape = tuple(num_features_or_shape)
    if len(shape) == 1:
        return int(shape[0])
    raise ValueError(f"model {name!r} needs a number of features (int), got shape {num_features_or_shape!r}")


def _image_shape(num_features_or_shape: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(num_features_or_shape, int):
        raise ValueError(f"model 'cnn' needs an image shape (C, H, W), got {num_features_or_shape!r}")
    shape = tuple(int(d) for d in num_features_or_shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"model 'cnn' needs a square image shape (C, H, H), got {shape!r}")
    return shape[0], shape[1]


def build_model(
    name: str, num_features_or_shape: int | Sequence[int], num_classes: int, **kwargs: Any
) -> nn.Module:
    """Instantiate the model called ``name``.

    Parameters
    ----------
    name
        One of ``MODEL_NAMES``: ``"logreg"``, ``"mlp"`` or ``"cnn"``.
    num_features_or_shape
        ``HospitalData.num_features``: an int for tabular models, ``(C, H, W)`` for ``"cnn"``.
    num_classes
        Number of output logits.
    **kwargs
        Passed to the model class (e.g. ``hidden``/``dropout`` for ``"mlp"``).
    """
    if name == "logreg":
        features = _tabular_features(name, num_features_or_shape)
        return LogisticRegression(features, num_classes, **kwargs)
    if name == "mlp":
        features = _tabular_features(name, num_features_or_shape)
        return MLP(features, num_classes=num_classes, **kwargs)
    if name == "cnn":
        channels, size = _image_shape(num_features_or_shape)
        return SmallCNN(channels, num_classes, image_size=size, **kwargs)
    raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")

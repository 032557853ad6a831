"""The global model of a run, built from plain settings (one place for the server and MLflow)."""

from __future__ import annotations

import numpy as np
import torch

from models.registry import build_model
from server.settings import RunSettings


def model_input_shape(settings: RunSettings) -> tuple[int, ...]:
    """One example's shape: ``(features,)`` for tabular models, ``(C, H, W)`` for the CNN."""
    if settings.model == "cnn":
        return (settings.image_channels, settings.image_size, settings.image_size)
    return (settings.num_features,)


def build_global_model(settings: RunSettings) -> torch.nn.Module:
    shape = model_input_shape(settings)
    kwargs = {"hidden": (settings.hidden,)} if settings.model == "mlp" else {}
    return build_model(
        settings.model, shape if settings.model == "cnn" else shape[0], settings.num_classes, **kwargs
    )


def input_example(settings: RunSettings) -> np.ndarray:
    return np.zeros((1, *model_input_shape(settings)), np.float32)

"""The global model of a run, built from plain settings (one place for the server and MLflow)."""

from __future__ import annotations

import numpy as np
import torch

from common.settings import RunSettings
from models.compat import model_values
from models.pretrained import load_pretrained
from models.registry import build_model, model_class_path, model_kwargs

IMAGE_DATASETS = ("npz",)  # datasets whose examples are (C, H, W) images


def model_input_shape(settings: RunSettings) -> tuple[int, ...]:
    """One example's shape: ``(features,)`` for tables, ``(C, H, W)`` for images."""
    if settings.dataset in IMAGE_DATASETS:
        return (settings.image_channels, settings.image_size, settings.image_size)
    return (settings.num_features,)


def build_global_model(settings: RunSettings) -> torch.nn.Module:
    """The run's model, untrained (``initial_model`` adds the seed and pretrained weights)."""
    shape = model_input_shape(settings)
    kwargs = model_kwargs(settings.model, settings.hidden, settings.model_args)
    return build_model(settings.model, shape if len(shape) > 1 else shape[0], settings.num_outputs, **kwargs)


def initial_model(settings: RunSettings) -> torch.nn.Module:
    """The model a run starts from: seeded, then ``model_weights`` loaded if the run names a file."""
    torch.manual_seed(settings.seed)
    model = build_global_model(settings)
    if settings.model_weights:
        load_pretrained(model, settings.model_weights)
    return model


def model_summary(model: torch.nn.Module, settings: RunSettings) -> dict[str, str | int]:
    """MLflow params of the model: its class (import path) and the values it sends per round."""
    return {"model_class": model_class_path(settings.model), "model_parameters": model_values(model)}


def input_example(settings: RunSettings) -> np.ndarray:
    return np.zeros((1, *model_input_shape(settings)), np.float32)

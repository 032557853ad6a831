"""Models an ML engineer might bring, named by import path in tests (``tests.models.byo_models.X``)."""

from __future__ import annotations

import torch
from torch import nn

NOT_A_MODEL = 42


class WithBatchNorm(nn.Module):
    """BatchNorm keeps an int64 ``num_batches_tracked`` counter: the encoder cannot average it."""

    def __init__(self, num_features: int, num_outputs: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(num_features)
        self.head = nn.Linear(num_features, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x))


class SeesEverything(nn.Module):
    """Records every run argument it is given, to check the keyword convention."""

    def __init__(
        self, input_shape: tuple, in_channels: int, image_size: int, num_outputs: int, scale: float = 1.0
    ) -> None:
        super().__init__()
        self.given = {
            "input_shape": input_shape,
            "in_channels": in_channels,
            "image_size": image_size,
            "num_outputs": num_outputs,
            "scale": scale,
        }
        self.head = nn.Linear(in_channels * image_size * image_size, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(x, start_dim=1))

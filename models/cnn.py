"""A small convolutional network for MedMNIST-like images (28x28, grey or RGB).

Kept deliberately small (about 5k conv parameters plus the head) because every parameter is
encrypted and aggregated each round. No batch-norm: its integer ``num_batches_tracked``
buffer and running statistics do not average meaningfully under homomorphic aggregation.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two ``conv3x3 -> ReLU -> maxpool2`` blocks (16 and 32 channels) and a linear head.

    Parameters
    ----------
    in_channels
        Image channels: 1 for greyscale, 3 for RGB.
    num_classes
        Number of output logits.
    image_size
        Height and width of the (square) input images; each pooling halves it (rounding down).
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int = 28) -> None:
        super().__init__()
        for name, value, low in (
            ("in_channels", in_channels, 1),
            ("num_classes", num_classes, 2),
            ("image_size", image_size, 4),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        reduced = image_size // 2 // 2
        self.head = nn.Linear(32 * reduced * reduced, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(batch, num_classes)`` for images ``(batch, C, H, W)``."""
        return self.head(torch.flatten(self.features(x), start_dim=1))

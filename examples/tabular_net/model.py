"""A residual MLP with LayerNorm for tabular data: what an ML engineer brings as their own model.

It follows the two conventions a model by import path needs (``models.registry``):
``__init__`` names ``num_features`` and ``num_outputs``, which the run fills in from the data,
and every ``state_dict`` entry is a float tensor (LayerNorm keeps no running counters), so the
encoder can average all of it.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """``x + Linear(Dropout(GELU(Linear(LayerNorm(x)))))``: a pre-norm residual block."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, width),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(width, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TabularNet(nn.Module):
    """Input projection, ``blocks`` residual blocks of ``width``, a LayerNorm and a linear head.

    Parameters
    ----------
    num_features : int
        Input features (set by the run from the data).
    num_outputs : int
        Output logits (set by the run: the number of classes).
    width : int (default: 32)
        Width of the residual stream.
    blocks : int (default: 2)
        Residual blocks.
    dropout : float (default: 0.0)
        Dropout inside each block, in ``[0, 1)``.
    """

    def __init__(
        self, num_features: int, num_outputs: int, width: int = 32, blocks: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        for name, value in (("num_features", num_features), ("num_outputs", num_outputs), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
            raise ValueError(f"blocks must be an int >= 0, got {blocks!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.project = nn.Linear(num_features, width)
        self.blocks = nn.Sequential(*(ResidualBlock(width, dropout) for _ in range(blocks)))
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_outputs)`` for features ``(batch, num_features)``."""
        return self.head(self.blocks(self.project(x)))

"""Models for tabular hospital data (e.g. breast cancer features, a site's own CSV table).

Both models output raw values of shape ``(batch, num_classes)``: class logits, or with
``num_classes=1`` the one value of a regression or the risk of a survival task (``models.tasks``).
They hold only float parameters (no batch-norm counters), so every ``state_dict`` entry can
be encoded and aggregated homomorphically.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _check_sizes(num_features: int, num_classes: int) -> None:
    if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
        raise ValueError(f"num_features must be a positive int, got {num_features!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes (outputs) must be an int >= 1, got {num_classes!r}")


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: one linear layer producing class logits.

    With ``num_classes=2`` this is over-parameterised compared to a single sigmoid output,
    but it keeps one loss and one evaluation path for every model.
    """

    def __init__(self, num_features: int, num_classes: int = 2) -> None:
        super().__init__()
        _check_sizes(num_features, num_classes)
        self.linear = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(batch, num_classes)`` for features ``(batch, num_features)``."""
        return self.linear(x)


class MLP(nn.Module):
    """Fully connected network: ``Linear -> ReLU -> Dropout`` per hidden layer, then a head.

    Parameters
    ----------
    num_features
        Number of input features.
    hidden
        Width of each hidden layer; ``()`` degenerates to logistic regression.
    num_classes
        Number of output logits.
    dropout
        Dropout probability after each hidden activation, in ``[0, 1)``.
    """

    def __init__(
        self,
        num_features: int,
        hidden: Sequence[int] = (32,),
        num_classes: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_sizes(num_features, num_classes)
        widths = tuple(hidden)
        if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"hidden must be a sequence of positive ints, got {hidden!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        layers: list[nn.Module] = []
        width_in = num_features
        for width in widths:
            layers += [nn.Linear(width_in, width), nn.ReLU()]
            if dropout > 0.0:
                layers.append(nn.Dropout(dropout))
            width_in = width
        layers.append(nn.Linear(width_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(batch, num_classes)`` for features ``(batch, num_features)``."""
        return self.net(x)

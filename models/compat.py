"""Whether the encoder can carry a model: every ``state_dict`` entry must be a float tensor.

Weights travel as float32 arrays of the model's ``state_dict`` entries (``models.training``)
and are averaged, so an entry is only meaningful if its average is. An integer buffer (e.g.
BatchNorm's ``num_batches_tracked``, a step counter) or a boolean mask is not: the rule is to
**refuse** such a model when it is built, on the server and at every hospital, with an error
naming the entry and what to change, rather than average a counter or silently keep parts of
the model out of the federation.
"""

from __future__ import annotations

import math

from torch import nn

NORM_HINT = (
    "use GroupNorm/LayerNorm, or BatchNorm with track_running_stats=False (no running buffers), "
    "or register the buffer with persistent=False if it is not part of the model"
)


class IncompatibleModelError(ValueError):
    """The model holds a ``state_dict`` entry the encoder cannot average; the message names it."""


def check_encodable(model: nn.Module, name: str) -> None:
    """Refuse ``model`` (called ``name`` in the message) unless every ``state_dict`` entry is a
    float tensor with at least one value.

    Raises
    ------
    IncompatibleModelError
        Naming the first entries that are not floating point (with their dtype), or saying the
        model has no weights at all.
    """
    state = model.state_dict()
    if not state:
        raise IncompatibleModelError(f"model {name!r} has no parameters or buffers to federate")
    bad = [f"{key} ({tensor.dtype})" for key, tensor in state.items() if not tensor.is_floating_point()]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise IncompatibleModelError(
            f"model {name!r} cannot be encrypted and averaged: its state_dict holds non-float "
            f"entries {shown}; {NORM_HINT}"
        )


def model_values(model: nn.Module) -> int:
    """Number of values the model sends each round: every ``state_dict`` entry, buffers too
    (what ``client.policy.model_parameters`` counts from the arrays)."""
    return sum(math.prod(tensor.shape) for tensor in model.state_dict().values())

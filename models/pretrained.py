"""Start a model from pretrained weights: a ``state_dict`` file saved with ``torch.save``.

Loaded with ``torch.load(weights_only=True)``, which unpickles tensors and plain containers
only, never arbitrary objects: a weights file cannot run code. Only the server reads it (the
run's starting model); hospitals receive those weights as the first global model.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

SHOWN = 3  # entries named in an error before "and N more"


def _listed(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``{entry: tensor}`` saved at ``path``.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        The file is not a ``state_dict`` that ``torch.load(weights_only=True)`` reads.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.weights={path}: no such file (expected a state_dict saved with torch.save)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"model.weights={path}: not a state_dict torch.load(weights_only=True) can read ({first[:200]})"
        ) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"model.weights={path}: expected a state_dict (a mapping of entry names to tensors, as "
            f"torch.save(model.state_dict(), path) writes), got {type(state).__name__}"
        )
    return dict(state)


def load_pretrained(model: nn.Module, path: str | Path) -> None:
    """Load the weights at ``path`` into ``model`` in place; every entry must match by name and shape.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`read_state_dict`; or entries missing from the file, entries the model does not
        have, or a shape that differs (the message names the entries).
    """
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        parts = [f"missing {_listed(missing)}"] if missing else []
        parts += [f"not in the model {_listed(unexpected)}"] if unexpected else []
        raise ValueError(f"model.weights={path} does not fit the model: entries {'; '.join(parts)}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ValueError(
                f"model.weights={path}: entry {key!r} has shape {tuple(state[key].shape)}, the model "
                f"expects {tuple(tensor.shape)}"
            )
    model.load_state_dict({key: state[key].to(tensor.dtype) for key, tensor in expected.items()})

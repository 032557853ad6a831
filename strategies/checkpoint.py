"""What a federation needs to continue after its last completed round, as one ``.npz`` file.

Only server-side public state: the global model, the server optimizer's moments, the round,
the strategy's quantization clip and weight scale, and the per-round metrics so far (so the
learning curve and the DP accountant's round count carry on). No key material: a resumed run
does a fresh key set-up, as every run does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the run resuming from it."""


@dataclass
class Checkpoint:
    round: int  # the last completed round
    weights: list[np.ndarray]
    optimizer: dict[str, list[np.ndarray]] = field(default_factory=dict)  # ServerOptimizer.state()
    strategy: dict[str, float] = field(default_factory=dict)  # e.g. the encrypted clip and weight scale
    history: list[dict] = field(default_factory=list)

    def save(self, path: Path) -> None:
        arrays = {f"weights/{i}": w for i, w in enumerate(self.weights)}
        for name, values in self.optimizer.items():
            arrays |= {f"optimizer/{name}/{i}": v for i, v in enumerate(values)}
        meta = {"round": self.round, "strategy": self.strategy, "history": self.history}
        with open(path, "wb") as out:
            np.savez(out, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                arrays = {name: data[name] for name in data.files if name != "meta"}
        except (OSError, ValueError, KeyError) as err:
            raise CheckpointError(f"checkpoint {path}: not a readable fedquorum checkpoint ({err})") from None
        weights = [arrays[f"weights/{i}"] for i in range(sum(n.startswith("weights/") for n in arrays))]
        optimizer: dict[str, list[np.ndarray]] = {}
        for name in sorted(arrays, key=lambda n: (n.rsplit("/", 1)[0], int(n.rsplit("/", 1)[1]))):
            if name.startswith("optimizer/"):
                optimizer.setdefault(name.split("/")[1], []).append(arrays[name])
        return cls(int(meta["round"]), weights, optimizer, dict(meta["strategy"]), list(meta["history"]))

    def check_fits(self, weights: list[np.ndarray], num_rounds: int) -> None:
        """Refuse, by name, a checkpoint of another model or one with no round left to run."""
        shapes, saved = [np.shape(w) for w in weights], [np.shape(w) for w in self.weights]
        if saved != shapes:
            raise CheckpointError(f"checkpoint: model shapes {saved} differ from this run's {shapes}")
        if not 0 <= self.round < num_rounds:
            raise CheckpointError(
                f"checkpoint: round {self.round} completed, but num_rounds={num_rounds} leaves none to run "
                "(raise num_rounds to continue)"
            )

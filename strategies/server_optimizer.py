"""Server-side optimizers applied to the decrypted average update (FedAvg, FedAdam, FedYogi).

Paper: Reddi et al., Adaptive Federated Optimization, arxiv.org/abs/2003.00295. Possible here
because the server decrypts the *aggregate* (never an individual update); key-sharing designs
in which clients decrypt cannot run them.
"""

from __future__ import annotations

import numpy as np


class ServerOptimizer:
    """``w <- w + step(average delta)``; ``sgd`` with lr 1.0 is exactly FedAvg."""

    def __init__(
        self, name: str = "sgd", lr: float = 1.0, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
    ) -> None:
        if name not in ("sgd", "adam", "yogi"):
            raise ValueError(f"server optimizer must be sgd, adam or yogi, got {name!r}")
        self.name, self.lr, self.beta1, self.beta2, self.tau = name, lr, beta1, beta2, tau
        self._m: list[np.ndarray] | None = None
        self._v: list[np.ndarray] | None = None

    def state(self) -> dict[str, list[np.ndarray]]:
        """The moments (adaptive optimizers, after their first step), for a checkpoint."""
        return {} if self._m is None else {"m": list(self._m), "v": list(self._v)}

    def load_state(self, state: dict[str, list[np.ndarray]]) -> None:
        if state:
            self._m, self._v = [np.array(a) for a in state["m"]], [np.array(a) for a in state["v"]]

    def step(self, weights: list[np.ndarray], delta: list[np.ndarray]) -> list[np.ndarray]:
        if self.name == "sgd":
            return [w + self.lr * d for w, d in zip(weights, delta, strict=True)]
        if self._m is None:
            self._m = [np.zeros_like(d) for d in delta]
            self._v = [np.full_like(d, self.tau**2) for d in delta]
        new = []
        for i, (w, d) in enumerate(zip(weights, delta, strict=True)):
            self._m[i] = self.beta1 * self._m[i] + (1 - self.beta1) * d
            d2 = d * d
            if self.name == "adam":
                self._v[i] = self.beta2 * self._v[i] + (1 - self.beta2) * d2
            else:
                self._v[i] = self._v[i] - (1 - self.beta2) * d2 * np.sign(self._v[i] - d2)
            new.append(w + self.lr * self._m[i] / (np.sqrt(self._v[i]) + self.tau))
        return new

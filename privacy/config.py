"""The ``dp`` settings of a run, as the hospitals receive them in every round's config."""

from __future__ import annotations

import math
from dataclasses import dataclass

MODES = ("off", "distributed")
KEYS = {  # RunSettings field -> Flower config key the hospitals read
    "dp": "dp",
    "dp_clip_norm": "dp-clip-norm",
    "dp_noise_multiplier": "dp-noise-multiplier",
    "dp_target_epsilon": "dp-target-epsilon",
    "dp_delta": "dp-delta",
    "dp_min_contributors": "dp-min-contributors",
    "num_rounds": "dp-rounds",
    "he_preset": "dp-preset",  # the integer geometry's preset (plaintext DP runs use it too)
}
PRESET_KEY = KEYS["he_preset"]


@dataclass(frozen=True)
class DpConfig:
    """Distributed DP of a run (``docs/privacy.md``).

    Parameters
    ----------
    clip_norm : float
        Each hospital's update is scaled down to this L2 norm (the sensitivity before rounding).
    noise_multiplier : float
        The total noise of ``min_contributors`` shares has standard deviation
        ``noise_multiplier * clip_norm`` per value; 0 means: solve it from ``target_epsilon``.
    target_epsilon : float
        The ε the run may spend over ``rounds`` (used when ``noise_multiplier`` is 0).
    delta : float
        The δ of the (ε, δ) guarantee.
    min_contributors : int
        m: every hospital adds the noise share sized for m contributors, so the guarantee holds
        for any aggregate of at least m honest contributions.
    rounds : int
        Training rounds the budget covers (the run's ``num_rounds``).
    """

    clip_norm: float
    noise_multiplier: float
    target_epsilon: float
    delta: float
    min_contributors: int
    rounds: int

    def __post_init__(self) -> None:
        if not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise ValueError(f"dp clip_norm must be positive and finite, got {self.clip_norm}")
        if not (0 < self.delta < 1):
            raise ValueError(f"dp delta must be in (0, 1), got {self.delta}")
        if self.noise_multiplier < 0 or not math.isfinite(self.noise_multiplier):
            raise ValueError(f"dp noise_multiplier must be >= 0, got {self.noise_multiplier}")
        solvable = self.target_epsilon > 0 and math.isfinite(self.target_epsilon)
        if self.noise_multiplier == 0 and not solvable:
            raise ValueError("dp needs a positive noise_multiplier or a positive finite target_epsilon")
        if self.min_contributors < 1 or self.rounds < 1:
            raise ValueError("dp min_contributors and rounds must be >= 1")

    @classmethod
    def from_config(cls, config: dict) -> DpConfig | None:
        """The run's DP settings from a round config; None when DP is off (or absent)."""
        mode = str(config.get(KEYS["dp"], "off"))
        if mode not in MODES:
            raise ValueError(f"dp must be one of {MODES}, got {mode!r}")
        if mode == "off":
            return None
        return cls(
            clip_norm=float(config[KEYS["dp_clip_norm"]]),
            noise_multiplier=float(config[KEYS["dp_noise_multiplier"]]),
            target_epsilon=float(config[KEYS["dp_target_epsilon"]]),
            delta=float(config[KEYS["dp_delta"]]),
            min_contributors=int(config[KEYS["dp_min_contributors"]]),
            rounds=int(config[KEYS["num_rounds"]]),
        )

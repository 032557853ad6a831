"""The ``dp`` settings of a run, as the hospitals receive them in every round's config.

``dp=distributed`` (``DpConfig``): hospital-level DP, noise shares on the encrypted aggregate.
``dp=record`` (``RecordDpConfig``): patient-level DP, each hospital trains with DP-SGD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Self

MODES = ("off", "distributed", "record")
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
CONFIG_FIELDS = {  # dataclass field -> (KEYS entry it is sent under, its type)
    "clip_norm": ("dp_clip_norm", float),
    "noise_multiplier": ("dp_noise_multiplier", float),
    "target_epsilon": ("dp_target_epsilon", float),
    "delta": ("dp_delta", float),
    "min_contributors": ("dp_min_contributors", int),
    "rounds": ("num_rounds", int),
}


@dataclass(frozen=True)
class SharedDpSettings:
    """The settings both DP modes have (each mode's docstring says what they mean there), and
    one reader of a mode's fields from a round config."""

    clip_norm: float
    noise_multiplier: float
    target_epsilon: float
    delta: float

    @classmethod
    def read(cls, config: dict) -> Self:
        """An instance of ``cls`` with every field read from ``config`` (``CONFIG_FIELDS``)."""
        values = {}
        for field in fields(cls):
            key, kind = CONFIG_FIELDS[field.name]
            values[field.name] = kind(config[KEYS[key]])
        return cls(**values)


@dataclass(frozen=True)
class DpConfig(SharedDpSettings):
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

    min_contributors: int
    rounds: int

    def __post_init__(self) -> None:
        require_clip_and_delta(self.clip_norm, self.delta, ValueError)
        if self.noise_multiplier < 0 or not math.isfinite(self.noise_multiplier):
            raise ValueError(f"dp noise_multiplier must be >= 0, got {self.noise_multiplier}")
        solvable = self.target_epsilon > 0 and math.isfinite(self.target_epsilon)
        if self.noise_multiplier == 0 and not solvable:
            raise ValueError("dp needs a positive noise_multiplier or a positive finite target_epsilon")
        if self.min_contributors < 1 or self.rounds < 1:
            raise ValueError("dp min_contributors and rounds must be >= 1")

    @classmethod
    def from_config(cls, config: dict) -> DpConfig | None:
        """The run's distributed DP settings from a round config; None when DP is off (or
        absent) or record-level, whose settings are checked here too, so that a run with bad
        ones is refused up front (``RunSettings``), not in round 1."""
        mode = mode_of(config)
        if mode == "record":
            RecordDpConfig.from_config(config)
        return cls.read(config) if mode == "distributed" else None


def mode_of(config: dict) -> str:
    mode = str(config.get(KEYS["dp"], "off"))
    if mode not in MODES:
        raise ValueError(f"dp must be one of {MODES}, got {mode!r}")
    return mode


def require_clip_and_delta(clip_norm: float, delta: float, error: type[ValueError]) -> None:
    """The settings both DP modes need for any guarantee: a finite sensitivity and a δ below 1."""
    if not (clip_norm > 0 and math.isfinite(clip_norm)):
        raise error(f"dp clip_norm must be positive and finite, got {clip_norm}")
    if not (0 < delta < 1):
        raise error(f"dp delta must be in (0, 1), got {delta}")


class RecordDpConfigError(ValueError):
    """Record-level DP settings that cannot give a guarantee (names the setting)."""


@dataclass(frozen=True)
class RecordDpConfig(SharedDpSettings):
    """Record-level DP of a run: every hospital trains with DP-SGD (``privacy.dpsgd``).

    Parameters
    ----------
    clip_norm : float
        Each example's gradient is scaled down to this L2 norm (the per-record sensitivity).
    noise_multiplier : float
        Gaussian noise of standard deviation ``noise_multiplier * clip_norm`` is added to every
        batch's summed clipped gradients. Must be positive: a hospital does not solve it,
        because its ε depends on its own number of records.
    target_epsilon : float
        0: no budget. Otherwise a hospital whose ε over ``rounds`` would exceed it refuses
        to train.
    delta : float
        The δ of each hospital's (ε, δ) guarantee.
    rounds : int
        Training rounds the guarantee covers (the run's ``num_rounds``).
    """

    rounds: int

    def __post_init__(self) -> None:
        require_clip_and_delta(self.clip_norm, self.delta, RecordDpConfigError)
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise RecordDpConfigError(
                f"dp=record needs a positive finite noise_multiplier, got {self.noise_multiplier}"
            )
        if not (self.target_epsilon >= 0 and math.isfinite(self.target_epsilon)):
            raise RecordDpConfigError(
                f"dp target_epsilon must be finite and >= 0 (0: no budget), got {self.target_epsilon}"
            )
        if self.rounds < 1:
            raise RecordDpConfigError(f"dp rounds must be >= 1, got {self.rounds}")

    @classmethod
    def from_config(cls, config: dict) -> RecordDpConfig | None:
        """The run's record-level DP settings from a round config; None unless ``dp=record``."""
        return cls.read(config) if mode_of(config) == "record" else None

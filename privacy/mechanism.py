"""The hospital's side of the distributed discrete Gaussian, in the encoder's integer units.

A round's ``DdgPlan`` is a pure function of the run's ``DpConfig``, the HE preset and the
update's dimension, so the server (which fixes the layout) and every hospital compute the same
one. In DP mode a hospital encodes with weight 1 (``num_examples=1`` at weight scale ``S``):
the decrypted result is the noisy *mean* of the contributions, and the decrypted "example
count" is only the number of contributors, which the server knows anyway. Real example counts
are never encoded: they would be released without noise.

``privatize`` (the ``he.encoding`` quantizer hook) takes the update already scaled to units
(``units`` per ``clip_norm``), and

1. scales it down to L2 norm ``units`` (the clip);
2. rounds each value up with probability equal to its fractional part, redrawing the whole
   vector until its L2 norm is at most ``l2_bound`` (conditional randomized rounding, KLS21);
3. adds an exact ``N_Z(0, sigma2)`` draw per value from the OS CSPRNG (``privacy.sampler``),
   with ``sigma2 = (noise_multiplier * units)^2 / m``: m shares make the target noise.

Geometry: each contribution's field range ``[-o, o]`` (``o = ceil(H/S)``) must hold
``l2_bound + TAIL * sigma`` per value; a noisy value beyond it (probability below
``2 exp(-TAIL^2/2)`` < 1e-31 per value) is clipped by the encoder, which docs/privacy.md adds
to δ. ``units`` is as large as the preset's value bits allow, so rounding costs nothing in
accuracy; a preset too narrow for that (``compact``) is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cache

import dp_accounting
import numpy as np

from he.errors import EncodingError
from he.params import MAX_EXAMPLES, HEParams, preset
from privacy import accounting, sampler
from privacy.config import DpConfig

TAIL = 12  # noise standard deviations of headroom in each contribution's field range
FINE_UNITS = 1 << 20  # S is the largest weight scale that still leaves this many units per clip
MIN_UNITS_PER_SQRT_DIM = 64  # rounding may inflate the sensitivity by at most ~1/64
MAX_ROUNDING_TRIES = 200  # each try fails with probability <= β = e^-1/2: 200 never all fail


class DpConfigError(ValueError):
    """The DP settings cannot be met with this HE preset (or contradict the roster)."""


@dataclass(frozen=True)
class DdgPlan:
    """Everything a round needs: the integer geometry, the noise share and the round's event."""

    clip_norm: float
    units: int  # integer units per clip_norm (the L2 clip in units)
    dim: int
    min_contributors: int
    noise_multiplier: float
    weight_scale: int  # the layout's S (each hospital has weight 1/S)
    layout_clip: float  # the layout's per-value range L: units / clip_norm = H / (S * L)
    l2_bound: float  # Δ2 after conditional rounding, in units

    @property
    def sigma2(self) -> Fraction:
        """Each hospital's noise variance parameter, in units^2 (exact)."""
        return Fraction((self.noise_multiplier * self.units) ** 2 / self.min_contributors)

    @property
    def event(self) -> dp_accounting.ZCDpEvent:
        return accounting.round_event(self.l2_bound, float(self.sigma2), self.min_contributors, self.dim)

    def epsilon(self, rounds: int, delta: float) -> float:
        return accounting.epsilon(self.event, rounds, delta)

    def privatize(self, scaled: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Clip, conditionally round and add this hospital's noise share (module docstring)."""
        norm = float(np.linalg.norm(scaled))
        clipped = scaled * (self.units / norm) if norm > self.units else scaled
        rounded = self.round(clipped, rng)
        noise = sampler.discrete_gaussian_vector(self.sigma2, rounded.size, sampler.system_source())
        return rounded + np.array(noise, dtype=np.int64)

    def clip(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The update scaled down to L2 norm ``clip_norm`` (direction kept) before encoding,
        where the encoder's per-value range would otherwise cut its largest values first;
        ``privatize`` clips again, in units, so the bound never rests on this call."""
        norm = math.sqrt(math.fsum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))
        factor = min(1.0, self.clip_norm / norm) if norm > 0 else 1.0
        return [np.asarray(a, dtype=np.float64) * factor for a in arrays]

    def round(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Conditional randomized rounding: unbiased per value, L2 norm at most ``l2_bound``."""
        floor = np.floor(values)
        bound2 = self.l2_bound**2
        for _ in range(MAX_ROUNDING_TRIES):
            rounded = (floor + (rng.random(values.shape) < values - floor)).astype(np.int64)
            if sum(v * v for v in rounded.tolist()) <= bound2:
                return rounded
        raise EncodingError("conditional rounding failed: the update was not clipped to the L2 bound")

    def plain(self, arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """Plaintext DP mode: the same integers as the encrypted path, turned back into values
        (a comparison baseline: the server sees each noisy update, see docs/privacy.md)."""
        flat = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
        noisy = self.privatize(flat * (self.units / self.clip_norm), rng) * (self.clip_norm / self.units)
        out, start = [], 0
        for array in arrays:
            out.append(noisy[start : start + np.size(array)].reshape(np.shape(array)))
            start += np.size(array)
        return out


def _geometry(clip_norm: float, noise_multiplier: float, m: int, dim: int, params: HEParams):
    """``(units, S, L)`` for the largest units whose noisy values fit a contribution's range."""
    half_range = (1 << (params.value_bits - 1)) - 1
    growth = 1 + TAIL * noise_multiplier / math.sqrt(m)  # range per unit of clip
    slack = math.sqrt(dim)  # rounding can add up to sqrt(d) to the norm
    scale = max(1, min(MAX_EXAMPLES, int(half_range // (growth * FINE_UNITS + slack))))
    offset = -(-half_range // scale)
    units = math.floor((offset - slack) / growth)
    if units < MIN_UNITS_PER_SQRT_DIM * slack:
        raise DpConfigError(
            f"{params.name}: {params.value_bits}-bit values leave {max(units, 0)} units for the clip "
            f"of a {dim}-value update with noise multiplier {noise_multiplier:.3g}; DP needs at least "
            f"{math.ceil(MIN_UNITS_PER_SQRT_DIM * slack)}: use a preset with more value bits (precise)"
        )
    layout_clip = clip_norm * (half_range / scale) / units
    if layout_clip > params.clip:
        raise DpConfigError(
            f"dp clip_norm {clip_norm} needs a per-value range of {layout_clip:.3g} with its noise, "
            f"above the {params.name} preset's clip {params.clip}: lower clip_norm"
        )
    return units, scale, layout_clip


def _plan(dp: DpConfig, params: HEParams, dim: int, noise_multiplier: float) -> DdgPlan:
    units, scale, layout_clip = _geometry(dp.clip_norm, noise_multiplier, dp.min_contributors, dim, params)
    return DdgPlan(
        clip_norm=dp.clip_norm,
        units=units,
        dim=dim,
        min_contributors=dp.min_contributors,
        noise_multiplier=noise_multiplier,
        weight_scale=scale,
        layout_clip=layout_clip,
        l2_bound=accounting.rounded_l2_bound(units, dim),
    )


def plan_from_config(config: dict, arrays: list[np.ndarray], preset_name: str) -> DdgPlan | None:
    """The round's plan from the run's DP settings (a round config), or None when DP is off."""
    dp = DpConfig.from_config(config)
    if dp is None:
        return None
    return plan_for(dp, preset(preset_name), sum(int(np.size(a)) for a in arrays))


@cache
def plan_for(dp: DpConfig, params: HEParams, dim: int) -> DdgPlan:
    """The run's plan; with ``noise_multiplier`` 0, the smallest one meeting ``target_epsilon``
    over ``dp.rounds`` rounds (deterministic: server and hospitals solve alike)."""
    z = dp.noise_multiplier or _calibrate(dp, dim)
    return _plan(dp, params, dim, z)


def _calibrate(dp: DpConfig, dim: int) -> float:
    """Solved at the fewest units a plan may have: ε only falls as units grow (the rounding
    inflation ``l2_bound / units`` and τ both shrink), so the real plan's ε is at most the target."""
    units = MIN_UNITS_PER_SQRT_DIM * math.sqrt(dim)
    l2_bound, m = accounting.rounded_l2_bound(units, dim), dp.min_contributors
    return accounting.calibrate(
        lambda z: accounting.round_event(l2_bound, (z * units) ** 2 / m, m, dim),
        dp.rounds,
        dp.target_epsilon,
        dp.delta,
    )

"""Per-run secrets: each hospital's secret key ``s_i``, seeded uniform polynomials, and dealing.

1. Hospital i samples a fresh ternary ``s_i`` (SEAL's ternary sampler, OS CSPRNG) for every run,
   so one leaked ``c1*s_U`` exposes at most that run.
2. It Shamir-deals ``s_i`` to the keyholder committee (``he.threshold``), one share per
   keyholder (t_K - 1 of them as seeds), sealed over the authenticated pairwise channel
   (``he.channel``).
3. Nobody, the server included, ever forms ``s = sum_i s_i`` or any ``s_U``: a keyholder only
   multiplies its own share by a ``c1`` it derived itself (``he.ciphertext.seeded_c1``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import tenseal.sealapi as seal

from he import wire
from he.context import HEContext, seal_util
from he.errors import CiphertextError, ShareMismatchError
from he.threshold import interpolate_at, validate_points

CONTRIBUTION_BYTES = 32


def fresh_contribution() -> bytes:
    """A hospital's random contribution to the run's transcript (OS CSPRNG)."""
    return os.urandom(CONTRIBUTION_BYTES)


def sample_uniform(ctx: HEContext, seed: bytes) -> np.ndarray:
    """A data-level polynomial ``[L, N]``, uniform modulo each prime, expanded from ``seed``.

    SEAL's ``sample_poly_uniform`` on a Blake2xb PRNG keyed with SHA-512(seed) rejects out-of-range
    words per prime, so the residues are uniform (no truncation bias).
    """
    words = np.frombuffer(hashlib.sha512(seed).digest(), dtype="<u8").tolist()
    sample = seal_util().sample_poly_uniform(seal.Blake2xbPRNGFactory(words).create(), ctx.seal_parms)
    return np.array(sample, dtype=np.uint64).reshape(len(ctx.key_moduli), ctx.n)[:-1]


@dataclass(frozen=True)
class SecretKeyShare:
    """A hospital's ``s_i`` (data level, NTT form). Never serialized, logged or sent."""

    residues: np.ndarray = field(repr=False)

    def __repr__(self) -> str:
        return "SecretKeyShare(<secret>)"


def gen_secret(ctx: HEContext) -> SecretKeyShare:
    """A fresh ternary secret: SEAL's ternary sampler (as its KeyGenerator uses) on a Blake2xb
    PRNG seeded by the OS, put in NTT form in memory."""
    sample = seal_util().sample_poly_ternary(seal.Blake2xbPRNGFactory().create(), ctx.seal_parms)
    residues = np.array(sample, dtype=np.uint64).reshape(len(ctx.key_moduli), ctx.n)[:-1]
    return SecretKeyShare(ctx.ntt(residues[None])[0])


SEED_PREFIX = b"FQSEED1"
SEED_BYTES = 64


@dataclass(frozen=True)
class DealtShare:
    """What a dealer sends one keyholder: a share in full, or the seed it is expanded from."""

    residues: np.ndarray | None = field(default=None, repr=False)
    seed: bytes | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"DealtShare({'seed' if self.seed else 'residues'}, <secret>)"

    def expand(self, ctx: HEContext) -> np.ndarray:
        return sample_uniform(ctx, self.seed) if self.seed is not None else self.residues

    def to_bytes(self, ctx: HEContext) -> bytes:
        """The plaintext for the pairwise channel (it is encrypted before it leaves)."""
        if self.seed is not None:
            return SEED_PREFIX + self.seed
        return wire.pack(wire.Kind.SECRET_SHARE, ctx.fingerprint, {}, self.residues[None])

    @classmethod
    def from_bytes(cls, ctx: HEContext, data: bytes, sender: str) -> DealtShare:
        if data.startswith(SEED_PREFIX):
            if len(data) != len(SEED_PREFIX) + SEED_BYTES:
                raise CiphertextError(f"secret share from {sender}: a seed must be {SEED_BYTES} bytes")
            return cls(seed=data[len(SEED_PREFIX) :])
        _, residues = wire.unpack(
            data, wire.Kind.SECRET_SHARE, ctx.fingerprint, ctx.data_moduli, f"secret share from {sender}"
        )
        if residues.shape != (1, len(ctx.data_moduli), ctx.n):
            raise CiphertextError(f"secret share from {sender}: expected one data-level polynomial")
        return cls(residues=residues[0].copy())


def deal_secret_shares(
    ctx: HEContext, secret: SecretKeyShare, threshold: int, points: list[int]
) -> dict[int, DealtShare]:
    """Shamir shares ``f_i(k)`` of ``s_i`` for each keyholder point, degree ``threshold - 1``.

    The first ``threshold - 1`` points get only a 64-byte seed: their shares are uniform and
    independent of ``s_i``, so they may as well be expanded from a seed (SEAL's uniform
    sampler), and together with ``f(0) = s_i`` they fix the polynomial. The other shares are
    interpolated from those ``threshold`` values and sent in full. At 16 keyholders and
    threshold 11 this sends 6 polynomials per dealer instead of 16.
    """
    validate_points(points)
    if not 1 <= threshold <= len(points):
        raise ShareMismatchError(
            f"threshold {threshold} must be in [1, {len(points)}] for {len(points)} points"
        )
    ordered = sorted(points)
    seeds = {k: os.urandom(SEED_BYTES) for k in ordered[: threshold - 1]}
    known = {0: secret.residues} | {k: sample_uniform(ctx, seed) for k, seed in seeds.items()}
    dealt = {k: DealtShare(seed=seed) for k, seed in seeds.items()}
    for k in ordered[threshold - 1 :]:
        dealt[k] = DealtShare(residues=interpolate_at(k, known, ctx.data_moduli))
    return dealt

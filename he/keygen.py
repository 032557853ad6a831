"""Per-run secrets: each hospital's secret key ``s_i``, seeded uniform polynomials, and dealing.

1. Hospital i samples a fresh ternary ``s_i`` (SEAL's KeyGenerator, OS CSPRNG) for every run,
   so one leaked ``c1*s_U`` exposes at most that run.
2. It Shamir-deals ``s_i`` to the keyholder committee (``he.threshold``), one share per
   keyholder, sealed over the authenticated pairwise channel (``he.channel``).
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
from he.errors import CiphertextError
from he.seal_blob import parse_secret_key
from he.threshold import gen_shamir_shares

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
    """A fresh ternary secret from SEAL's KeyGenerator (CSPRNG-seeded)."""
    key = seal.KeyGenerator(ctx.seal).secret_key()
    key.save(ctx._scratch.path)
    try:
        residues = parse_secret_key(ctx._scratch.read()).reshape(len(ctx.key_moduli), ctx.n)
    finally:
        ctx._scratch.write(b"")  # do not leave the secret in the scratch file
    return SecretKeyShare(residues[:-1].copy())


def deal_secret_shares(
    ctx: HEContext, secret: SecretKeyShare, threshold: int, points: list[int]
) -> dict[int, np.ndarray]:
    """Shamir shares ``f_i(k)`` of ``s_i`` for each keyholder point, degree ``threshold - 1``."""
    coefficients = [sample_uniform(ctx, os.urandom(64)) for _ in range(threshold - 1)]
    return gen_shamir_shares(secret.residues, coefficients, points, ctx.data_moduli)


def secret_share_to_bytes(ctx: HEContext, share: np.ndarray) -> bytes:
    """Frame a Shamir share for the pairwise channel (it is encrypted before it leaves)."""
    return wire.pack(wire.Kind.SECRET_SHARE, ctx.fingerprint, {}, share[None])


def secret_share_from_bytes(ctx: HEContext, data: bytes, sender: str) -> np.ndarray:
    _, residues = wire.unpack(
        data, wire.Kind.SECRET_SHARE, ctx.fingerprint, ctx.data_moduli, f"secret share from {sender}"
    )
    if residues.shape != (1, len(ctx.data_moduli), ctx.n):
        raise CiphertextError(f"secret share from {sender}: expected one data-level polynomial")
    return residues[0].copy()

"""Collective public-key generation (Mouchet et al., PETS 2021, "CKG"), and secret dealing.

1. Every hospital contributes 32 fresh random bytes; the CRS seed is a hash of all of them, so
   no single party (the server included) chooses the common polynomial ``a`` alone, and each
   hospital checks that its own contribution is in the list before using the seed.
2. Hospital i keeps a ternary secret ``s_i`` (sampled by SEAL's KeyGenerator) and publishes
   ``p0_i = -a*s_i + e_i`` (``e_i`` from SEAL's Gaussian sampler).
3. The server sums: ``pk = (sum_i p0_i, a)`` is an ordinary SEAL public key for the secret
   ``s = sum_i s_i``, which nobody ever forms.
4. For t-of-n, hospital i Shamir-shares the data-level residues of ``s_i`` (``he.threshold``).
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
from he.modarith import addmod, mulmod, submod
from he.seal_blob import parse_secret_key
from he.threshold import gen_shamir_shares

CONTRIBUTION_BYTES = 32


def fresh_contribution() -> bytes:
    """A hospital's random contribution to the CRS seed (OS CSPRNG)."""
    return os.urandom(CONTRIBUTION_BYTES)


def crs_seed(contributions: list[bytes]) -> bytes:
    """The CRS seed: SHA-512 over every party's contribution, in a canonical order."""
    if not contributions or any(len(c) != CONTRIBUTION_BYTES for c in contributions):
        raise ShareMismatchError(f"CRS contributions must each be {CONTRIBUTION_BYTES} bytes")
    return hashlib.sha512(b"fedquorum-crs-v1" + b"".join(sorted(contributions))).digest()


def sample_crp(ctx: HEContext, seed: bytes) -> np.ndarray:
    """The common polynomial ``a`` (key level, NTT form): SEAL's uniform sampler on Blake2xb."""
    words = list(np.frombuffer(hashlib.sha512(seed).digest(), dtype="<u8").tolist())
    prng = seal.Blake2xbPRNGFactory(words).create()
    sample = seal_util().sample_poly_uniform(prng, ctx.seal_parms)
    return np.array(sample, dtype=np.uint64).reshape(len(ctx.key_moduli), ctx.n)


@dataclass(frozen=True)
class SecretKeyShare:
    """A hospital's ``s_i`` (key level, NTT form). Never serialized, logged or sent."""

    residues: np.ndarray = field(repr=False)

    def __repr__(self) -> str:
        return "SecretKeyShare(<secret>)"

    @property
    def data_level(self) -> np.ndarray:
        return self.residues[:-1]


def gen_secret(ctx: HEContext) -> SecretKeyShare:
    """A fresh ternary secret from SEAL's KeyGenerator (CSPRNG-seeded)."""
    key = seal.KeyGenerator(ctx.seal).secret_key()
    key.save(ctx._scratch.path)
    try:
        residues = parse_secret_key(ctx._scratch.read()).reshape(len(ctx.key_moduli), ctx.n)
    finally:
        ctx._scratch.write(b"")  # do not leave the secret in the scratch file
    return SecretKeyShare(residues)


@dataclass(frozen=True)
class PublicKeyShare:
    """``p0_i = -a*s_i + e_i``: safe to publish (RLWE sample)."""

    p0: np.ndarray

    def to_bytes(self, ctx: HEContext) -> bytes:
        return wire.pack(wire.Kind.PUBLIC_KEY_SHARE, ctx.fingerprint, {}, self.p0[None])

    @classmethod
    def from_bytes(cls, ctx: HEContext, data: bytes, sender: str) -> PublicKeyShare:
        _, residues = wire.unpack(
            data, wire.Kind.PUBLIC_KEY_SHARE, ctx.fingerprint, ctx.key_moduli, f"key share of {sender}"
        )
        if residues.shape != (1, len(ctx.key_moduli), ctx.n):
            raise CiphertextError(f"key share of {sender}: expected one key-level polynomial")
        return cls(residues[0])


def gen_public_key_share(ctx: HEContext, secret: SecretKeyShare, crp: np.ndarray) -> PublicKeyShare:
    prng = seal.Blake2xbPRNGFactory().create()  # random seed from the OS
    error = np.array(seal_util().sample_poly_normal(prng, ctx.seal_parms), dtype=np.uint64)
    error_ntt = ctx.ntt_key_level(error.reshape(len(ctx.key_moduli), ctx.n))
    return PublicKeyShare(submod(error_ntt, mulmod(crp, secret.residues, ctx.key_moduli), ctx.key_moduli))


def aggregate_public_key_shares(ctx: HEContext, shares: list[PublicKeyShare]) -> np.ndarray:
    total = shares[0].p0
    for share in shares[1:]:
        total = addmod(total, share.p0, ctx.key_moduli)
    return total


def gen_public_key(ctx: HEContext, crp: np.ndarray, p0_sum: np.ndarray) -> np.ndarray:
    """The collective public key ``(sum p0_i, a)`` as key-level residues ``[2, L+1, N]``."""
    return np.stack([p0_sum, crp])


def deal_secret_shares(
    ctx: HEContext, secret: SecretKeyShare, threshold: int, points: list[int]
) -> dict[int, np.ndarray]:
    """Shamir shares of the data-level residues of ``s_i`` for each point (party index)."""
    prng_factory = seal.Blake2xbPRNGFactory()
    coefficients = []
    for _ in range(threshold - 1):
        sample = seal_util().sample_poly_uniform(prng_factory.create(), ctx.seal_parms)
        coefficients.append(np.array(sample, dtype=np.uint64).reshape(len(ctx.key_moduli), ctx.n)[:-1])
    return gen_shamir_shares(secret.data_level, coefficients, points, ctx.data_moduli)


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

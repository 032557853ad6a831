"""Encrypted model updates: encryption under the collective key, validated parsing, and sums."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tenseal.sealapi as seal

from he import wire
from he.context import HEContext
from he.encoding import UpdateEncoder, UpdateLayout
from he.errors import CiphertextError
from he.modarith import addmod


@dataclass(frozen=True)
class EncryptedUpdate:
    """``polys[m, 2, L, N]``: m ciphertexts (c0, c1) in NTT form, plus the public layout.

    ``contributors`` counts how many hospital updates were added into it (1 when fresh).
    """

    layout: UpdateLayout
    polys: np.ndarray
    contributors: int = 1

    @property
    def c0(self) -> np.ndarray:
        return self.polys[:, 0]

    @property
    def c1(self) -> np.ndarray:
        return self.polys[:, 1]

    def to_bytes(self, ctx: HEContext) -> bytes:
        meta = {"layout": self.layout.to_json(), "contributors": self.contributors}
        return wire.pack(wire.Kind.ENCRYPTED_UPDATE, ctx.fingerprint, meta, self.polys)

    @classmethod
    def from_bytes(cls, ctx: HEContext, data: bytes, sender: str) -> EncryptedUpdate:
        what = f"encrypted update from {sender}"
        meta, polys = wire.unpack(data, wire.Kind.ENCRYPTED_UPDATE, ctx.fingerprint, ctx.data_moduli, what)
        try:
            layout = UpdateLayout.from_json(meta["layout"])
            contributors = int(meta["contributors"])
        except (KeyError, TypeError, ValueError) as err:
            raise CiphertextError(f"{what}: metadata lacks a valid layout or contributor count") from err
        encoder = UpdateEncoder(ctx.params, ctx.num_payload)
        expected = (encoder.num_ciphertexts(layout), 2, len(ctx.data_moduli), ctx.n)
        if polys.shape != expected or contributors < 1:
            raise CiphertextError(f"{what}: shape {polys.shape}, expected {expected} for its layout")
        return cls(layout, polys, contributors)


def c1_to_bytes(ctx: HEContext, aggregate: EncryptedUpdate) -> bytes:
    """The ``c1`` half of an aggregate: all a hospital needs for its decryption share."""
    return wire.pack(wire.Kind.CIPHERTEXT_SUM, ctx.fingerprint, {}, aggregate.c1)


def c1_from_bytes(ctx: HEContext, data: bytes, sender: str) -> np.ndarray:
    _, c1 = wire.unpack(
        data, wire.Kind.CIPHERTEXT_SUM, ctx.fingerprint, ctx.data_moduli, f"aggregate from {sender}"
    )
    if c1.ndim != 3 or c1.shape[1:] != (len(ctx.data_moduli), ctx.n) or not len(c1):
        raise CiphertextError(
            f"aggregate from {sender}: shape {c1.shape}, expected [m, {len(ctx.data_moduli)}, {ctx.n}]"
        )
    return c1


class UpdateEncryptor:
    """Encrypts one hospital's update under the collective public key (SEAL's Encryptor)."""

    def __init__(self, ctx: HEContext, public_key: np.ndarray) -> None:
        self.ctx = ctx
        self.encoder = UpdateEncoder(ctx.params, ctx.num_payload)
        self._encryptor = seal.Encryptor(ctx.seal, ctx.load_public_key(public_key))
        self._rng = np.random.default_rng()  # OS-seeded: stochastic rounding must not be predictable

    def encrypt(
        self, arrays: list[np.ndarray], num_examples: int, clip: float | None = None
    ) -> tuple[EncryptedUpdate, int]:
        """The encrypted update and how many values were clipped (to ``clip``, default the preset's)."""
        encoded = self.encoder.encode(arrays, num_examples, self._rng, clip)
        count = len(encoded.fields)
        message = np.zeros((count, len(self.ctx.data_moduli), self.ctx.n), dtype=np.uint64)
        message[:, : self.ctx.num_payload] = encoded.fields  # fields < 2^59 < every prime
        message = self.ctx.ntt(message)
        polys = np.empty((count, 2, len(self.ctx.data_moduli), self.ctx.n), dtype=np.uint64)
        zero = seal.Ciphertext()
        for i in range(count):
            self._encryptor.encrypt_zero(zero)
            polys[i] = self.ctx.save_polys(zero)
            polys[i, 0] = addmod(polys[i, 0], message[i], self.ctx.data_moduli)
        return EncryptedUpdate(encoded.layout, polys), encoded.clipped_values


class CiphertextSum:
    """Streaming sum of encrypted updates: memory is one aggregate, not n updates.

    ``add`` validates each contribution and raises ``CiphertextError`` naming the contributor;
    the running sum is untouched by a rejected contribution.
    """

    def __init__(self, ctx: HEContext) -> None:
        self.ctx = ctx
        self.contributors: list[str] = []
        self._sum: EncryptedUpdate | None = None

    def add(self, contributor: str, data: bytes) -> None:
        update = EncryptedUpdate.from_bytes(self.ctx, data, contributor)
        if update.contributors != 1:
            raise CiphertextError(
                f"encrypted update from {contributor}: claims {update.contributors} contributors, expected 1"
            )
        if contributor in self.contributors:
            raise CiphertextError(f"encrypted update from {contributor}: a second update this round")
        if self._sum is None:
            self._sum = EncryptedUpdate(update.layout, update.polys.copy(), update.contributors)
        elif update.layout != self._sum.layout:
            raise CiphertextError(
                f"encrypted update from {contributor}: layout {update.layout.shapes} with clip "
                f"{update.layout.clip} differs from the round's {self._sum.layout.shapes} with clip "
                f"{self._sum.layout.clip}"
            )
        else:
            polys = addmod(self._sum.polys, update.polys, self.ctx.data_moduli)
            self._sum = EncryptedUpdate(update.layout, polys, self._sum.contributors + update.contributors)
        self.contributors.append(contributor)

    @property
    def result(self) -> EncryptedUpdate:
        if self._sum is None:
            raise CiphertextError("no valid encrypted update was added this round")
        return self._sum

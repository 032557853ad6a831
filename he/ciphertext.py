"""Encrypted model updates: seeded-c1 secret-key encryption, validated parsing, and sums.

Hospital i encrypts each packed plaintext ``m_j`` under its own per-run secret ``s_i`` as
``c0_j = m_j + e_j - c1_j * s_i`` with ``c1_j = H(federation, run, kind, round, j)`` expanded
by SEAL's uniform sampler (``seeded_c1``), and uploads only ``c0`` (half a ciphertext). The
server adds the ``c0`` of the contributors U; the sum decrypts only under ``s_U = sum_{i in U}
s_i``, so the key itself fixes which updates are in the aggregate, and no hospital ever
multiplies its secret by a polynomial the server chose.

Only the leading coefficients that carry fields travel (``UpdateEncoder.coefficients``): ``c0``
is sent in coefficient form, cut to them. Decryption is coefficient-wise, so coefficient ``i``
of the result needs only coefficient ``i`` of ``c0`` and of each share (``he.decrypt``). A cut
``c0`` is a subset of the coefficients of an RLWE sample, so it reveals nothing a whole one
would not; for a small model it is a few kilobytes instead of ``N x L x 8`` bytes.

``c1`` is a nonce: two different ``c0`` under one label would reveal ``m - m' + e - e'``. A
hospital therefore encrypts once per label and resends the same bytes on a retry
(``client.keyholder``). The noise ``e_j`` is fresh from SEAL's clipped normal sampler on an
OS-seeded PRNG, never derived from the label: a known ``e_j`` would give ``c1*s_i``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import tenseal.sealapi as seal

from he import wire
from he.context import HEContext, seal_util
from he.encoding import Quantizer, UpdateEncoder, UpdateLayout
from he.errors import CiphertextError
from he.keygen import SecretKeyShare, sample_uniform
from he.modarith import addmod, mulmod, submod

KINDS = ("train", "statistics")


@dataclass(frozen=True)
class CiphertextLabel:
    """What a ``c1`` is bound to: federation, run (transcript hash), kind of pass and round."""

    federation_id: str
    run_id: bytes
    kind: str
    round_id: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CiphertextError(f"ciphertext kind must be one of {KINDS}, got {self.kind!r}")

    def seed(self, index: int) -> bytes:
        text = f"fedquorum-c1-v2|{self.federation_id}|{self.kind}|{self.round_id}|{index}|"
        return hashlib.sha512(text.encode() + self.run_id).digest()


def seeded_c1(ctx: HEContext, label: CiphertextLabel, count: int) -> np.ndarray:
    """``c1_j`` for ciphertexts ``j < count`` of ``label``, ``[count, L, N]`` (NTT form)."""
    return np.stack([sample_uniform(ctx, label.seed(j)) for j in range(count)])


def sample_encryption_noise(ctx: HEContext, count: int) -> np.ndarray:
    """Fresh noise polynomials ``[count, L, N]`` in NTT form: SEAL's clipped normal (sigma 3.2,
    ``|e| <= 19``) on a Blake2xb PRNG seeded by the OS, one independent draw per ciphertext."""
    noise = np.empty((count, len(ctx.data_moduli), ctx.n), dtype=np.uint64)
    for j in range(count):
        prng = seal.Blake2xbPRNGFactory().create()  # random seed from the OS
        sample = seal_util().sample_poly_normal(prng, ctx.seal_parms)
        noise[j] = np.array(sample, dtype=np.uint64).reshape(len(ctx.key_moduli), ctx.n)[:-1]
    return ctx.ntt(noise)


@dataclass(frozen=True)
class EncryptedUpdate:
    """``c0[m, L, k]``: the first ``k`` coefficients (coefficient form) of m ciphertext halves,
    ``k = UpdateEncoder.coefficients(layout)``, plus the public layout.

    ``contributors`` counts how many hospital updates were added into it (1 when fresh).
    """

    layout: UpdateLayout
    c0: np.ndarray
    contributors: int = 1

    @property
    def num_ciphertexts(self) -> int:
        return len(self.c0)

    @property
    def coefficients(self) -> int:
        """The leading coefficients of each ciphertext held (and decrypted)."""
        return self.c0.shape[-1]

    def to_bytes(self, ctx: HEContext) -> bytes:
        meta = {"layout": self.layout.to_json(), "contributors": self.contributors}
        return wire.pack(wire.Kind.ENCRYPTED_UPDATE, ctx.fingerprint, meta, self.c0)

    @classmethod
    def from_bytes(cls, ctx: HEContext, data: bytes, sender: str) -> EncryptedUpdate:
        what = f"encrypted update from {sender}"
        meta, c0 = wire.unpack(data, wire.Kind.ENCRYPTED_UPDATE, ctx.fingerprint, ctx.data_moduli, what)
        try:
            layout = UpdateLayout.from_json(meta.get("layout"))
        except ValueError as err:
            raise CiphertextError(f"{what}: invalid layout: {err}") from None
        contributors = wire.int_field(meta, "contributors", what)
        encoder = UpdateEncoder(ctx.params, ctx.num_payload)
        expected = (encoder.num_ciphertexts(layout), len(ctx.data_moduli), encoder.coefficients(layout))
        if c0.shape != expected or contributors < 1:
            raise CiphertextError(f"{what}: shape {c0.shape}, expected {expected} for its layout")
        return cls(layout, c0, contributors)


class SecretKeyEncryptor:
    """Encrypts one hospital's updates under its own secret with seeded ``c1`` (module docstring)."""

    def __init__(self, ctx: HEContext, secret: SecretKeyShare) -> None:
        self.ctx = ctx
        self.encoder = UpdateEncoder(ctx.params, ctx.num_payload)
        self._secret = secret
        self._rng = np.random.default_rng()  # OS-seeded: stochastic rounding must not be predictable

    def __repr__(self) -> str:
        return f"SecretKeyEncryptor({self.ctx.params.name})"

    def encrypt(
        self,
        arrays: list[np.ndarray],
        num_examples: int,
        label: CiphertextLabel,
        clip: float | None = None,
        weight_scale: int | None = None,
        quantizer: Quantizer | None = None,
        sums: list[int] | tuple[int, ...] = (),
    ) -> tuple[EncryptedUpdate, int]:
        """The encrypted update and how many values were clipped (``clip``, ``weight_scale``,
        ``quantizer`` and ``sums``: see ``he.encoding``; default the preset's, no sums)."""
        encoded = self.encoder.encode(arrays, num_examples, self._rng, clip, weight_scale, quantizer, sums)
        count = len(encoded.fields)
        if count > self.ctx.params.max_ciphertexts:
            raise CiphertextError(
                f"the update needs {count} ciphertexts; the preset allows {self.ctx.params.max_ciphertexts}"
            )
        moduli = self.ctx.data_moduli
        message = np.zeros((count, len(moduli), self.ctx.n), dtype=np.uint64)
        message[:, : self.ctx.num_payload] = encoded.fields  # fields < 2^59 < every prime
        plain = addmod(self.ctx.ntt(message), sample_encryption_noise(self.ctx, count), moduli)
        c1 = seeded_c1(self.ctx, label, count)
        c0 = submod(plain, mulmod(c1, np.broadcast_to(self._secret.residues, c1.shape), moduli), moduli)
        coefficients = self.encoder.coefficients(encoded.layout)
        return EncryptedUpdate(encoded.layout, self.ctx.intt(c0)[..., :coefficients]), encoded.clipped_values


class CiphertextSum:
    """Streaming sum of encrypted updates of one expected layout: memory is one aggregate.

    The layout (shapes, clip, weight scale) is the server's own for the round, never the first
    reply's, so one hospital with another layout cannot get the others' updates refused.
    ``add`` validates each contribution and raises ``CiphertextError`` naming the contributor;
    the running sum is untouched by a rejected contribution.
    """

    def __init__(self, ctx: HEContext, layout: UpdateLayout) -> None:
        self.ctx = ctx
        self.layout = layout
        self.contributors: list[int] = []
        self._sum: EncryptedUpdate | None = None

    def add(self, contributor: int, data: bytes) -> None:
        update = EncryptedUpdate.from_bytes(self.ctx, data, f"hospital {contributor}")
        if update.contributors != 1:
            raise CiphertextError(
                f"encrypted update from hospital {contributor}: claims {update.contributors} "
                "contributors, expected 1"
            )
        if contributor in self.contributors:
            raise CiphertextError(f"encrypted update from hospital {contributor}: a second update this round")
        if update.layout != self.layout:
            raise CiphertextError(
                f"encrypted update from hospital {contributor}: layout {update.layout} differs from "
                f"the round's {self.layout}"
            )
        if self._sum is None:
            self._sum = EncryptedUpdate(self.layout, update.c0.copy(), 1)
        else:
            c0 = addmod(self._sum.c0, update.c0, self.ctx.data_moduli)
            self._sum = EncryptedUpdate(self.layout, c0, self._sum.contributors + 1)
        self.contributors.append(contributor)

    @property
    def result(self) -> EncryptedUpdate:
        if self._sum is None:
            raise CiphertextError("no valid encrypted update was added this round")
        return self._sum

"""Threshold decryption with noise flooding: partial decryption shares, combination, decoding.

Hospital j answers ``h_j = c1 * S_j + e_j`` with ``e_j`` uniform in ``[-2^B, 2^B]`` (``B`` from
``HEParams.smudging_bits``; OS CSPRNG, since SEAL's samplers only draw small Gaussians), where
``S_j`` is its Shamir share (t-of-n) or its own ``s_j`` (n-of-n). The server forms
``Delta*c0 + sum_j (Delta*lambda_j) h_j = Delta*(m + e_ct) + E`` with small integer weights,
reads the total noise exactly off the noise primes (the message is zero there), subtracts it
from every payload residue and multiplies by ``Delta^-1``: the exact sum of the packed fields.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from he import wire
from he.ciphertext import EncryptedUpdate
from he.context import HEContext
from he.encoding import UpdateEncoder
from he.errors import CiphertextError, NotEnoughPartiesError, ShareMismatchError
from he.modarith import addmod, inverse, mul_scalar, mulmod, submod
from he.params import lagrange_scale
from he.threshold import integer_lagrange_weights, validate_party_points


@dataclass(frozen=True)
class DecryptionShare:
    """One hospital's partial decryption of one round's aggregate."""

    party: int
    round_id: int
    polys: np.ndarray

    def to_bytes(self, ctx: HEContext) -> bytes:
        meta = {"party": self.party, "round": self.round_id}
        return wire.pack(wire.Kind.DECRYPTION_SHARE, ctx.fingerprint, meta, self.polys)

    @classmethod
    def from_bytes(cls, ctx: HEContext, data: bytes, sender: str) -> DecryptionShare:
        what = f"decryption share from {sender}"
        meta, polys = wire.unpack(data, wire.Kind.DECRYPTION_SHARE, ctx.fingerprint, ctx.data_moduli, what)
        try:
            return cls(int(meta["party"]), int(meta["round"]), polys)
        except (KeyError, TypeError, ValueError) as err:
            raise CiphertextError(f"{what}: metadata lacks party or round") from err


def sample_smudging_noise(ctx: HEContext, count: int, bits: int) -> np.ndarray:
    """Uniform integers in ``[-2^bits, 2^bits)`` as data-level NTT residues ``[count, L, N]``."""
    if bits > 120:
        raise ValueError(f"smudging of {bits} bits exceeds the 120 bits this sampler draws")
    n_values = count * ctx.n
    words = np.frombuffer(os.urandom(16 * n_values), dtype="<u8").reshape(2, n_values)
    # noise = hi * 2^60 + lo with hi, lo drawn so that the total is uniform on [0, 2^(bits+1)).
    low_bits = min(bits + 1, 60)
    lo = words[0] >> np.uint64(64 - low_bits)
    high_bits = bits + 1 - low_bits
    hi = words[1] >> np.uint64(64 - high_bits) if high_bits else np.zeros_like(lo)
    residues = np.empty((count, len(ctx.data_moduli), ctx.n), dtype=np.uint64)
    for row, q in enumerate(ctx.data_moduli.tolist()):
        shift = pow(2, 60, q)
        # value - 2^bits  (mod q), assembled from its two pieces without overflow
        value = addmod(mulmod(hi % np.uint64(q), np.uint64(shift), q), lo % np.uint64(q), q)
        residues[:, row] = submod(value, np.uint64(pow(2, bits, q)), q).reshape(count, ctx.n)
    return ctx.ntt(residues)


def gen_decryption_share(
    ctx: HEContext,
    aggregate: EncryptedUpdate,
    secret_share: np.ndarray,
    party: int,
    round_id: int,
    smudging_bits: int,
) -> DecryptionShare:
    """``c1 * S_j + e_j`` for every ciphertext of the aggregate."""
    noise = sample_smudging_noise(ctx, len(aggregate.polys), smudging_bits)
    product = mulmod(aggregate.c1, np.broadcast_to(secret_share, aggregate.c1.shape), ctx.data_moduli)
    return DecryptionShare(party, round_id, addmod(product, noise, ctx.data_moduli))


def combine(
    ctx: HEContext,
    aggregate: EncryptedUpdate,
    shares: list[DecryptionShare],
    num_shareholders: int,
    threshold: int,
) -> np.ndarray:
    """The exact packed field sums ``[m, payload primes, N]`` from at least ``threshold`` shares."""
    points = [s.party for s in shares]
    validate_party_points(points, num_shareholders)
    if threshold == num_shareholders:
        if len(shares) != num_shareholders:
            raise NotEnoughPartiesError(
                f"n-of-n decryption needs all {num_shareholders} shares, got {len(shares)}"
            )
        weights, delta = dict.fromkeys(points, 1), 1
    else:
        weights = integer_lagrange_weights(points, num_shareholders, threshold)
        delta = lagrange_scale(num_shareholders, threshold)
    by_party = {s.party: s for s in shares}
    moduli = ctx.data_moduli
    total = mul_scalar(aggregate.c0, delta, moduli)
    for party, weight in weights.items():
        share = by_party[party]
        if share.polys.shape != aggregate.c1.shape:
            raise ShareMismatchError(
                f"decryption share of party {party}: shape {share.polys.shape}, expected {aggregate.c1.shape}"
            )
        total = addmod(total, mul_scalar(share.polys, weight, moduli), moduli)
    return _remove_noise(ctx, ctx.intt(total), delta)


def decrypt_update(ctx: HEContext, aggregate: EncryptedUpdate, field_sums: np.ndarray):
    """Decode combined field sums into the weighted-average arrays and the total example count."""
    encoder = UpdateEncoder(ctx.params, ctx.num_payload)
    return encoder.decode(field_sums, aggregate.layout, aggregate.contributors)


def _remove_noise(ctx: HEContext, coefficients: np.ndarray, delta: int) -> np.ndarray:
    """Read the exact signed noise off the noise primes (Garner) and strip it from the payload."""
    noise_moduli = [int(q) for q in ctx.noise_moduli.tolist()]
    noise_rows = coefficients[:, ctx.num_payload :]
    # Mixed-radix digits: noise = d0 + d1*q0 + d2*q0*q1 + ..., each d_k in [0, q_k).
    digits = [noise_rows[:, 0]]
    for k in range(1, len(noise_moduli)):
        qk = noise_moduli[k]
        value = noise_rows[:, k]
        radix = 1
        for i in range(k):
            term = mulmod(digits[i] % np.uint64(qk), np.uint64(radix % qk), qk)
            value = submod(value, term, qk)
            radix *= noise_moduli[i]
        digits.append(mulmod(value, np.uint64(inverse(radix % qk, qk)), qk))
    negative = _at_least_half(digits, noise_moduli)
    modulus_product = 1
    for q in noise_moduli:
        modulus_product *= q
    payload = coefficients[:, : ctx.num_payload]
    out = np.empty_like(payload)
    for row, q in enumerate(ctx.payload_moduli.tolist()):
        noise = np.zeros(payload.shape[::2], dtype=np.uint64)
        radix = 1
        for digit, qk in zip(digits, noise_moduli, strict=True):
            noise = addmod(noise, mulmod(digit % np.uint64(q), np.uint64(radix % q), q), q)
            radix *= qk
        noise = np.where(negative, submod(noise, np.uint64(modulus_product % q), q), noise)
        stripped = submod(payload[:, row], noise, q)
        out[:, row] = stripped if delta == 1 else mul_scalar(stripped, inverse(delta % q, q), q)
    return out


def _at_least_half(digits: list[np.ndarray], moduli: list[int]) -> np.ndarray:
    """Whether the mixed-radix number is > half the modulus product (i.e. negative noise)."""
    product = 1
    for q in moduli:
        product *= q
    half = product // 2
    half_digits = []
    for q in moduli:
        half_digits.append(half % q)
        half //= q
    greater = np.zeros(digits[0].shape, dtype=bool)
    equal = np.ones(digits[0].shape, dtype=bool)
    for digit, h in zip(reversed(digits), reversed(half_digits), strict=True):
        greater |= equal & (digit > np.uint64(h))
        equal &= digit == np.uint64(h)
    return greater

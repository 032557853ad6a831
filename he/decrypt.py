"""Masked threshold decryption with noise flooding, combination, and exact decoding.

For a round with contributors U and a decryption set T (at least ``ceil((|K|+t_K)/2)``
keyholders, ``he.roster.Quorum``), keyholder k answers, for every ciphertext j,

    d_k = lambda_k^T * [s_U]_k * c1_j  +  F_k  +  sum_{l in T, l != k} +-PRF(K_kl, request, j)

with ``c1_j`` derived by the keyholder itself from the round's label, ``F_k`` uniform in
``[-2^B, 2^B]`` (``HEParams.smudging_bits``, OS CSPRNG) and pairwise masks that cancel in the sum
over T (``+`` for the smaller party index). Shares are in coefficient form and hold only the
request's first ``k`` coefficients, those that carry fields (``he.ciphertext``): coefficient i of
the decryption needs only coefficient i of ``C0`` and of every share, and revealing fewer
coefficients of ``M + E + F`` reveals less. The server forms ``C0 + sum_k d_k = M + E + sum_k F_k``,
reads the total noise exactly off the noise primes (the message is zero there), checks it is
within its bound and subtracts it from every payload residue: the exact sum of the packed fields.

Why masks (docs/security.md): a coalition that knows t_K - 1 shares can write an honest share as
``mu * c1 * s_U + known + F_k`` with ``mu`` a non-integer rational ``a/b``; multiplying by ``b``
would reveal ``E mod b`` however large ``F_k`` is. Masked shares are individually uniform; only
their sum over T carries meaning, and there the coefficients add up to exactly 1.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from he import wire
from he.ciphertext import CiphertextLabel, EncryptedUpdate
from he.context import HEContext
from he.encoding import UpdateEncoder
from he.errors import ShareMismatchError
from he.modarith import addmod, inverse, mulmod, negmod, submod
from he.threshold import lagrange_residues


@dataclass(frozen=True)
class DecryptionRequest:
    """One decryption attempt: the round's label, the attempt number, U, T, the ciphertext count
    and how many leading coefficients of each ciphertext are decrypted (all that carry fields)."""

    label: CiphertextLabel
    attempt: int
    contributors: tuple[int, ...]
    keyholders: tuple[int, ...]
    num_ciphertexts: int
    coefficients: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "contributors", tuple(sorted(self.contributors)))
        object.__setattr__(self, "keyholders", tuple(sorted(self.keyholders)))

    @property
    def contributors_hash(self) -> str:
        return hashlib.sha256(",".join(map(str, self.contributors)).encode()).hexdigest()

    def mask_context(self, index: int | str) -> bytes:
        """What a mask is bound to: every field of the request, and the ciphertext index (or the
        name of another stream of masks for this request, such as ``he.share_check``'s)."""
        text = (
            f"fedquorum-mask-v2|{self.label.federation_id}|{self.label.kind}|{self.label.round_id}|"
            f"{self.attempt}|T={','.join(map(str, self.keyholders))}|{self.contributors_hash}|"
            f"k={self.coefficients}|{index}|"
        )
        return text.encode() + self.label.run_id


@dataclass(frozen=True)
class DecryptionShare:
    """One keyholder's masked partial decryption for one request: ``[m, L, k]`` residues in
    coefficient form, the request's leading coefficients of each ciphertext."""

    party: int
    round_id: int
    attempt: int
    polys: np.ndarray

    def to_bytes(self, ctx: HEContext) -> bytes:
        meta = {"party": self.party, "round": self.round_id, "attempt": self.attempt}
        return wire.pack(wire.Kind.DECRYPTION_SHARE, ctx.fingerprint, meta, self.polys)

    @classmethod
    def from_bytes(cls, ctx: HEContext, data: bytes, sender: str) -> DecryptionShare:
        what = f"decryption share from {sender}"
        meta, polys = wire.unpack(data, wire.Kind.DECRYPTION_SHARE, ctx.fingerprint, ctx.data_moduli, what)
        fields = (wire.int_field(meta, key, what) for key in ("party", "round", "attempt"))
        return cls(*fields, polys)


def sample_smudging_noise(ctx: HEContext, count: int, coefficients: int, bits: int) -> np.ndarray:
    """Uniform integers in ``[-2^bits, 2^bits)`` as data-level residues ``[count, L, coefficients]``
    (coefficient form)."""
    if bits > 120:
        raise ValueError(f"smudging of {bits} bits exceeds the 120 bits this sampler draws")
    n_values = count * coefficients
    words = np.frombuffer(os.urandom(16 * n_values), dtype="<u8").reshape(2, n_values)
    # noise = hi * 2^60 + lo with hi, lo drawn so that the total is uniform on [0, 2^(bits+1)).
    low_bits = min(bits + 1, 60)
    lo = words[0] >> np.uint64(64 - low_bits)
    high_bits = bits + 1 - low_bits
    hi = words[1] >> np.uint64(64 - high_bits) if high_bits else np.zeros_like(lo)
    residues = np.empty((count, len(ctx.data_moduli), coefficients), dtype=np.uint64)
    for row, q in enumerate(ctx.data_moduli.tolist()):
        shift = pow(2, 60, q)
        # value - 2^bits  (mod q), assembled from its two pieces without overflow
        value = addmod(mulmod(hi % np.uint64(q), np.uint64(shift), q), lo % np.uint64(q), q)
        residues[:, row] = submod(value, np.uint64(pow(2, bits, q)), q).reshape(count, coefficients)
    return residues


def prf_uniform(key: bytes, context: bytes, moduli: np.ndarray, n: int) -> np.ndarray:
    """``[L, N]`` residues uniform modulo each prime: AES-256-CTR under a key derived from
    (key, context, prime index), words cut to the prime's bit length, rejection of words >= q
    (no truncation bias; at least half the words are accepted)."""
    out = np.empty((len(moduli), n), dtype=np.uint64)
    for row, q in enumerate(moduli.tolist()):
        subkey = hashlib.blake2b(context + row.to_bytes(2, "little"), key=key, digest_size=32).digest()
        stream = Cipher(algorithms.AES(subkey), modes.CTR(bytes(16))).encryptor()
        mask, filled = np.uint64((1 << int(q).bit_length()) - 1), 0
        while filled < n:
            words = np.frombuffer(stream.update(bytes(8 * (n - filled + 16))), dtype="<u8") & mask
            accepted = words[words < np.uint64(q)][: n - filled]
            out[row, filled : filled + len(accepted)] = accepted
            filled += len(accepted)
    return out


def pairwise_masks(
    ctx: HEContext,
    party: int,
    mask_keys: dict[int, bytes],
    request: DecryptionRequest,
    streams: Sequence[int | str] | None = None,
):
    """``sum_{l in T, l != party} +-PRF(K_party,l, request, j)`` for every ciphertext j (or every
    named stream of ``streams``): the masks of all members of T add up to zero. ``mask_keys`` maps
    each other member of T to ``K_party,l``."""
    others = [k for k in request.keyholders if k != party]
    missing = [k for k in others if k not in mask_keys]
    if missing:
        raise ShareMismatchError(f"no pairwise mask key with keyholders {missing}")
    moduli = ctx.data_moduli
    streams = range(request.num_ciphertexts) if streams is None else streams
    total = np.zeros((len(streams), len(moduli), request.coefficients), dtype=np.uint64)
    for j, stream in enumerate(streams):
        for other in others:
            mask = prf_uniform(mask_keys[other], request.mask_context(stream), moduli, request.coefficients)
            total[j] = addmod(total[j], mask if party < other else negmod(mask, moduli), moduli)
    return total


def gen_decryption_share(
    ctx: HEContext,
    request: DecryptionRequest,
    party: int,
    c1: np.ndarray,
    key_share: np.ndarray,
    masks: np.ndarray,
    smudging_bits: int,
) -> DecryptionShare:
    """``lambda_party^T * [s_U]_party * c1 + flooding + masks`` for every polynomial of ``c1`` (the
    request's ciphertexts, or ``he.share_check``'s check polynomial), cut to the request's leading
    coefficients (module docstring)."""
    moduli = ctx.data_moduli
    if party not in request.keyholders:
        raise ShareMismatchError(f"party {party} is not in the decryption set {list(request.keyholders)}")
    if not 1 <= request.coefficients <= ctx.n:
        raise ShareMismatchError(
            f"a request for {request.coefficients} coefficients; a ciphertext has {ctx.n}"
        )
    cut = (len(c1), len(moduli), request.coefficients)
    if c1.shape[1:] != (len(moduli), ctx.n) or masks.shape != cut:
        raise ShareMismatchError(f"c1 {c1.shape} and masks {masks.shape} do not match the request")
    weighted = mulmod(
        key_share,
        np.broadcast_to(lagrange_residues(party, request.keyholders, moduli), key_share.shape),
        moduli,
    )
    product = ctx.intt(mulmod(c1, np.broadcast_to(weighted, c1.shape), moduli))[..., : request.coefficients]
    noise = sample_smudging_noise(ctx, len(c1), request.coefficients, smudging_bits)
    polys = addmod(addmod(product, noise, moduli), masks, moduli)
    return DecryptionShare(party, request.label.round_id, request.attempt, polys)


def combine(
    ctx: HEContext,
    aggregate: EncryptedUpdate,
    shares: list[DecryptionShare],
    request: DecryptionRequest,
    noise_bits: int,
) -> np.ndarray:
    """The exact packed field sums ``[m, payload primes, N]`` from the shares of every member of T
    (zero beyond the decrypted coefficients, where no field lies).

    Raises ``ShareMismatchError`` if a member is missing (its masks would not cancel) or if the
    decrypted noise exceeds ``2^noise_bits``: a share was tampered with, made for another
    request, or a dealer dealt inconsistent shares. The attempt then fails; nothing is decoded.
    """
    parties = sorted(s.party for s in shares)
    if tuple(parties) != request.keyholders:
        raise ShareMismatchError(
            f"decryption needs a share from every member of T={list(request.keyholders)}, got {parties}"
        )
    moduli = ctx.data_moduli
    total = aggregate.c0
    for share in shares:
        if share.polys.shape != aggregate.c0.shape:
            raise ShareMismatchError(
                f"decryption share of party {share.party}: shape {share.polys.shape}, "
                f"expected {aggregate.c0.shape}"
            )
        if (share.round_id, share.attempt) != (request.label.round_id, request.attempt):
            raise ShareMismatchError(
                f"decryption share of party {share.party} is for round {share.round_id} attempt "
                f"{share.attempt}, expected round {request.label.round_id} attempt {request.attempt}"
            )
        total = addmod(total, share.polys, moduli)
    sums = _remove_noise(ctx, total, noise_bits)
    return np.pad(sums, ((0, 0), (0, 0), (0, ctx.n - sums.shape[-1])))


def decrypt_update(ctx: HEContext, aggregate: EncryptedUpdate, field_sums: np.ndarray):
    """Decode combined field sums into the weighted-average arrays and the total example count."""
    encoder = UpdateEncoder(ctx.params, ctx.num_payload)
    return encoder.decode(field_sums, aggregate.layout, aggregate.contributors)


def decrypt_sums(ctx: HEContext, aggregate: EncryptedUpdate, field_sums: np.ndarray) -> list[int]:
    """Decode the exact sums section (``he.encoding``) of combined field sums."""
    return UpdateEncoder(ctx.params, ctx.num_payload).decode_sums(field_sums, aggregate.layout)


def measured_noise_bits(ctx: HEContext, aggregate: EncryptedUpdate, shares: list[DecryptionShare]) -> float:
    """log2 of the largest decrypted noise coefficient of T's shares, read as ``combine`` reads
    it, with no bound checked: what a benchmark reports next to the bound ``combine`` enforces."""
    total = aggregate.c0
    for share in shares:
        total = addmod(total, share.polys, ctx.data_moduli)
    noise_moduli = [int(q) for q in ctx.noise_moduli.tolist()]
    _, magnitude = _signed_magnitude(_noise_digits(ctx, total), noise_moduli)
    return float(np.log2(max(float(magnitude.max()), 1.0)))


def _noise_digits(ctx: HEContext, coefficients: np.ndarray) -> list[np.ndarray]:
    """Mixed-radix digits of the noise on the noise primes (Garner): noise = d0 + d1*q0 +
    d2*q0*q1 + ..., each d_k in [0, q_k)."""
    noise_moduli = [int(q) for q in ctx.noise_moduli.tolist()]
    noise_rows = coefficients[:, ctx.num_payload :]
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
    return digits


def _remove_noise(ctx: HEContext, coefficients: np.ndarray, noise_bits: int) -> np.ndarray:
    """Read the exact signed noise off the noise primes (Garner), check its bound, strip it."""
    magnitude, noise = _read_noise(ctx, coefficients)
    _check_noise_bound(magnitude, noise_bits)
    return submod(coefficients[:, : ctx.num_payload], noise, ctx.payload_moduli)


def require_small(ctx: HEContext, coefficients: np.ndarray, bits: int) -> None:
    """Raise ``ShareMismatchError`` unless every coefficient ``[m, L, k]`` is one signed integer
    below ``2^bits`` on every data prime: read off the noise primes, then matched on the payload
    primes (``he.share_check``: the check value holds no message anywhere)."""
    magnitude, noise = _read_noise(ctx, coefficients)
    largest = float(magnitude.max()) if magnitude.size else 0.0
    if largest > 2.0**bits or not np.array_equal(noise, coefficients[:, : ctx.num_payload]):
        raise ShareMismatchError(
            "the check value of this decryption is not small on every prime: a keyholder's "
            "decryption share or check share was altered; this attempt is discarded"
        )


def _read_noise(ctx: HEContext, coefficients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The signed integer on the noise primes of each coefficient (Garner): its magnitude, and
    its residues on the payload primes ``[m, payload, k]``."""
    noise_moduli = [int(q) for q in ctx.noise_moduli.tolist()]
    digits = _noise_digits(ctx, coefficients)
    negative, magnitude = _signed_magnitude(digits, noise_moduli)
    modulus_product = math.prod(noise_moduli)
    payload_shape = coefficients[:, : ctx.num_payload].shape
    out = np.empty(payload_shape, dtype=np.uint64)
    for row, q in enumerate(ctx.payload_moduli.tolist()):
        noise = np.zeros(payload_shape[::2], dtype=np.uint64)
        radix = 1
        for digit, qk in zip(digits, noise_moduli, strict=True):
            noise = addmod(noise, mulmod(digit % np.uint64(q), np.uint64(radix % q), q), q)
            radix *= qk
        out[:, row] = np.where(negative, submod(noise, np.uint64(modulus_product % q), q), noise)
    return magnitude, out


def _signed_magnitude(digits: list[np.ndarray], moduli: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Whether each mixed-radix noise value is negative, and its magnitude in float64 (relative
    error 2^-52, far inside the bound's margin)."""
    negative = _at_least_half(digits, moduli)
    value = np.zeros(digits[0].shape, dtype=np.float64)
    radix = 1.0
    for digit, q in zip(digits, moduli, strict=True):
        value += digit.astype(np.float64) * radix
        radix *= float(q)
    return negative, np.where(negative, float(math.prod(moduli)) - value, value)


def _check_noise_bound(magnitude: np.ndarray, noise_bits: int) -> None:
    """The largest noise magnitude against ``2^noise_bits``."""
    largest = float(magnitude.max()) if magnitude.size else 0.0
    if largest > 2.0**noise_bits:
        raise ShareMismatchError(
            f"decryption noise of 2^{np.log2(largest):.1f} exceeds its bound 2^{noise_bits}: a "
            "decryption share is wrong (altered, for another request, or from an inconsistent "
            "dealing) or a ciphertext is not from this run; this attempt is discarded"
        )


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

"""Share integrity: a check share that a keyholder cannot fit to a tampered decryption share.

Issue 19, step 1: the check itself, its parameters and its attacks (``tests/he/test_share_check.py``).
Step 2 carries it through a run: ``pk_i`` with the dealing, commit and open as two message
phases of a decryption, and a failed check into elimination (``strategies.reveal``).

The design (docs/security.md, "Share integrity", item 5), for a decryption request of
ciphertexts ``c1_j`` (``j < m``) by T over the contributors U:

* **set-up:** hospital i publishes ``pk_i = -a_pk * s_i + e_i`` (``public_key_share``; ``a_pk``
  seeded from the run, ``e_i`` fresh from SEAL's clipped normal). The server sums ``P_U``.
* **challenge:** the server draws a seed; from it (SEAL's samplers on a Blake2xb PRNG keyed by
  the seed) come gains ``g_j`` in ``[1, 2^a)``, a ternary ``u`` and an error ``e2``, and the
  check polynomial ``c1' = sum_j g_j c1_j + a_pk * u + e2``. RLWE makes ``a_pk * u + e2``
  pseudorandom, so ``c1'`` hides the gains from whoever does not hold the seed.
* **commit:** keyholder k sends its decryption share ``d_k`` and a hash of its check share
  ``d'_k = lambda_k [s_U]_k c1' + F'_k + masks'`` (fresh flooding, masks of their own stream).
* **open:** the server reveals the seed; k opens ``d'_k`` only if the seed derives the ``c1'``
  it was sent (``derives``): no keyholder ever answers a multiplier it has not checked, so the
  huge-multiplier attack of docs/security.md item 4 has no entry point.
* **check:** ``Z = [P_U * u] + sum_k (d'_k - sum_j g_j d_kj)`` equals, for honest shares,
  ``e_pk * u + e2 * s_U + F' - sum_j g_j F_j``: small on every prime (``verify``). A keyholder
  that shifted ``d_kj`` by ``D`` had to shift ``d'_k`` by ``g_j * D`` before it could know
  ``g_j``. Two gains that both pass make ``(g - g') * D`` small, hence ``D`` a small integer
  that the noise primes absorb (``check_budget`` sizes the gains so that this holds): a shift
  that changes the decrypted fields passes for at most one gain, with probability
  ``1 / (2^a - 1)``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import tenseal.sealapi as seal

from he import wire
from he.ciphertext import sample_encryption_noise
from he.context import HEContext, seal_util
from he.decrypt import DecryptionRequest, DecryptionShare, require_small
from he.errors import CiphertextError, InsecureParametersError
from he.keygen import SecretKeyShare, sample_uniform
from he.modarith import addmod, mul_scalar, mulmod, submod
from he.params import ENCRYPTION_NOISE_BOUND, HEParams

MIN_GAIN_BITS = 16  # a cheater passes one check with probability below 2^-15, and is named otherwise
MAX_GAIN_BITS = 32
SEED_BYTES = 32
CHECK_STREAM = "check"  # the masks of the check share: a stream of their own (he.decrypt.pairwise_masks)


@dataclass(frozen=True)
class CheckBudget:
    """The bit sizes of one check: gains below ``2^gain_bits``, the check share's flooding of
    ``smudging_bits`` bits, and the bound ``2^bound_bits`` an honest check value stays within."""

    gain_bits: int
    smudging_bits: int
    bound_bits: int


def check_budget(params: HEParams, committee_size: int, max_attempts: int, ciphertexts: int) -> CheckBudget:
    """The widest gains (at most ``MAX_GAIN_BITS``) the noise primes leave room for.

    * The check share's flooding must hide what the check value adds to the decryption:
      ``sum_j g_j E_j + e_pk * u + e2 * s_U``, with the same margin and count as the decryption
      shares' (one more bit: a run reveals a check per decryption).
    * Uniqueness needs ``|(g - g') * v| + |Z - Z'| < P_noise`` for any noise ``v`` a decryption
      passes with and any two honest-sized check values: then a shift that passes two gains is a
      small integer on every prime, which decoding strips as noise.

    Raises ``InsecureParametersError`` if fewer than ``MIN_GAIN_BITS`` fit.
    """
    smudging = params.smudging_bits(committee_size, max_attempts)
    noise = params.decryption_noise_bits(committee_size, max_attempts)
    room = params.noise_modulus_bits
    product_noise = 2 * params.poly_modulus_degree * ENCRYPTION_NOISE_BOUND * params.max_parties
    margin = smudging - params.ciphertext_noise_bits  # the statistical margin and the count
    for gain_bits in range(MAX_GAIN_BITS, MIN_GAIN_BITS - 1, -1):
        gains = ciphertexts * ((1 << gain_bits) - 1)
        hidden = gains * (2**params.ciphertext_noise_bits) + product_noise
        check_smudging = hidden.bit_length() + margin + 1
        bound = committee_size * (2**check_smudging + gains * 2**smudging) + product_noise
        if bound.bit_length() + 2 <= room and gain_bits + noise + 2 <= room:
            return CheckBudget(gain_bits, check_smudging, bound.bit_length())
    raise InsecureParametersError(
        f"{params.name}: the noise primes ({room} bits) leave no room for a {MIN_GAIN_BITS}-bit share "
        f"check with a committee of {committee_size}, {max_attempts} attempts and {ciphertexts} "
        "ciphertexts; share integrity needs a preset with more noise room"
    )


def check_key_c1(ctx: HEContext, federation_id: str, run_id: bytes) -> np.ndarray:
    """``a_pk``, the run's seeded uniform polynomial of the public-key shares (NTT form)."""
    return sample_uniform(ctx, f"fedquorum-check-key-v1|{federation_id}|".encode() + run_id)


def public_key_share(ctx: HEContext, secret: SecretKeyShare, a_pk: np.ndarray) -> np.ndarray:
    """``pk_i = e_i - a_pk * s_i`` (NTT form): an encryption of zero under this hospital's run key,
    with fresh noise from SEAL's clipped normal sampler on an OS-seeded PRNG."""
    product = mulmod(a_pk, secret.residues, ctx.data_moduli)
    return submod(sample_encryption_noise(ctx, 1)[0], product, ctx.data_moduli)


@dataclass(frozen=True)
class Challenge:
    """What the server's seed derives: the gains, and ``u`` and ``e2`` in NTT form."""

    seed: bytes
    gains: tuple[int, ...]
    u: np.ndarray
    e2: np.ndarray

    def __repr__(self) -> str:
        return f"Challenge(<{len(self.gains)} gains>)"


def derive_challenge(ctx: HEContext, seed: bytes, ciphertexts: int, gain_bits: int) -> Challenge:
    """The challenge of ``seed`` for a request of ``ciphertexts`` ciphertexts."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a check seed has {SEED_BYTES} bytes, got {len(seed)}")
    gains = []
    for j in range(ciphertexts):
        word = int.from_bytes(hashlib.sha512(seed + f"|gain|{j}".encode()).digest(), "little")
        gains.append(1 + word % ((1 << gain_bits) - 1))  # uniform on [1, 2^a) up to 2^-480
    ternary = seal_util().sample_poly_ternary(_prng(seed, "u"), ctx.seal_parms)
    normal = seal_util().sample_poly_normal(_prng(seed, "e2"), ctx.seal_parms)
    u, e2 = (np.array(p, dtype=np.uint64).reshape(len(ctx.key_moduli), ctx.n)[:-1] for p in (ternary, normal))
    return Challenge(seed, tuple(gains), *ctx.ntt(np.stack([u, e2])))


def check_polynomial(ctx: HEContext, c1: np.ndarray, a_pk: np.ndarray, challenge: Challenge) -> np.ndarray:
    """``c1' = sum_j g_j c1_j + a_pk * u + e2`` (NTT form ``[L, N]``) for ``c1`` ``[m, L, N]``."""
    moduli = ctx.data_moduli
    if len(c1) != len(challenge.gains):
        raise ValueError(f"{len(c1)} ciphertexts, but the challenge has {len(challenge.gains)} gains")
    total = addmod(mulmod(a_pk, challenge.u, moduli), challenge.e2, moduli)
    for gain, poly in zip(challenge.gains, c1, strict=True):
        total = addmod(total, mul_scalar(poly, gain, moduli), moduli)
    return total


def polynomial_digest(poly: np.ndarray) -> bytes:
    """What a keyholder keeps of the check polynomial it answered (not the N-coefficient polynomial)."""
    return hashlib.sha256(b"fedquorum-check-polynomial-v1|" + np.ascontiguousarray(poly).tobytes()).digest()


def derives(
    ctx: HEContext, answered: bytes, seed: bytes, c1: np.ndarray, a_pk: np.ndarray, gain_bits: int
) -> bool:
    """Whether ``seed`` derives the check polynomial whose ``polynomial_digest`` is ``answered``:
    a keyholder opens its check share only then."""
    expected = check_polynomial(ctx, c1, a_pk, derive_challenge(ctx, seed, len(c1), gain_bits))
    return polynomial_digest(expected) == answered


def commitment(request: DecryptionRequest, party: int, check_share: bytes) -> bytes:
    """What keyholder ``party`` sends first instead of its check share: bound to the request."""
    context = request.mask_context("commit") + f"|party={party}|".encode()
    return hashlib.sha256(b"fedquorum-check-commit-v1|" + context + check_share).digest()


def verify(
    ctx: HEContext,
    request: DecryptionRequest,
    shares: list[DecryptionShare],
    check_shares: list[DecryptionShare],
    public_key: np.ndarray,
    challenge: Challenge,
    budget: CheckBudget,
) -> None:
    """Raise ``ShareMismatchError`` unless the check value of T's shares is small on every prime.

    ``public_key`` is ``P_U = sum_{i in U} pk_i`` (NTT form); the shares are T's, all for
    ``request`` (``he.decrypt.combine`` checks them and the noise of the decryption itself).
    """
    moduli = ctx.data_moduli
    k = request.coefficients
    value = ctx.intt(mulmod(public_key, challenge.u, moduli)[None])[..., :k]
    for check in check_shares:
        value = addmod(value, check.polys, moduli)
    for share in shares:
        for gain, poly in zip(challenge.gains, share.polys, strict=True):
            value = submod(value, mul_scalar(poly, gain, moduli), moduli)
    require_small(ctx, value, budget.bound_bits)


def polynomial_to_bytes(ctx: HEContext, kind: wire.Kind, poly: np.ndarray) -> bytes:
    """A public-key share or check polynomial ``[L, N]`` (NTT form) as a wire frame."""
    return wire.pack(kind, ctx.fingerprint, {}, poly[None])


def polynomial_from_bytes(ctx: HEContext, kind: wire.Kind, data: bytes, what: str) -> np.ndarray:
    """Inverse of ``polynomial_to_bytes``: refuses another kind, run or shape, naming ``what``."""
    _meta, polys = wire.unpack(data, kind, ctx.fingerprint, ctx.data_moduli, what)
    if polys.shape != (1, len(ctx.data_moduli), ctx.n):
        raise CiphertextError(f"{what}: shape {polys.shape}, expected {(1, len(ctx.data_moduli), ctx.n)}")
    return polys[0]


def _prng(seed: bytes, purpose: str):
    """SEAL's Blake2xb PRNG keyed by SHA-512(seed, purpose): the same draws for everyone with the seed."""
    words = np.frombuffer(hashlib.sha512(seed + f"|{purpose}".encode()).digest(), dtype="<u8").tolist()
    return seal.Blake2xbPRNGFactory(words).create()

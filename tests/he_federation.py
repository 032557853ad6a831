"""Simulated federations for the protocol tests (``tests/he``, ``tests/client``): a small INSECURE
parameter set and every party's side of the protocol in one process.

``TEST_PARAMS`` is insecure, for fast tests only: N=4096 with 222 modulus bits is far above
SEAL's 128-bit bound for N=4096 (109 bits), so it sets ``insecure_for_tests=True``. It keeps the
real bit budget of the ``precise`` preset (60-bit primes, 2 noise primes, 54-bit values, 32
contributors), so the packing, noise reading and flooding arithmetic are exercised exactly as in
production, at a quarter of the ring size.

Below the federation, each in one place, the helpers that more than one ``tests/he`` file needs:
``params`` (``TEST_PARAMS`` with changes), ``_set_last_residue`` (a frame with its last residue
rewritten), ``tampered`` (a decryption share with one coefficient shifted), ``ATTACK_SIZES``, and
exact integer views of residues (``crt``, ``signed_coefficients``, ``residues_of``, ``times``,
``centered``, ``crt_centered``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from he import channel, keygen, wire
from he.ciphertext import CiphertextLabel, CiphertextSum, EncryptedUpdate, SecretKeyEncryptor, seeded_c1
from he.context import HEContext
from he.decrypt import (
    DecryptionRequest,
    DecryptionShare,
    combine,
    decrypt_update,
    gen_decryption_share,
    pairwise_masks,
)
from he.encoding import UpdateLayout
from he.keygen import SecretKeyShare
from he.modarith import addmod, mulmod
from he.params import PRESETS, HEParams
from he.roster import Quorum
from he.threshold import sum_shares

# Insecure, for fast tests only. Never use outside tests.
TEST_PARAMS = HEParams(
    name="test-insecure",
    poly_modulus_degree=4096,
    coeff_modulus_bits=(60, 60, 60, 60, 18),
    noise_primes=2,
    value_bits=54,
    clip=64.0,
    max_parties=32,
    default_weight_scale=1 << 20,
    stochastic_rounding=False,
    insecure_for_tests=True,
)
MAX_ATTEMPTS = 3
# The attack tests' update: one ciphertext under TEST_PARAMS (8192 values per ciphertext)
ATTACK_SIZES = (300, 41)


def params(**changes) -> HEParams:
    """``TEST_PARAMS`` with ``changes`` (checked as any preset is)."""
    return dataclasses.replace(TEST_PARAMS, **changes)


@dataclass
class Federation:
    """n simulated hospitals of one run: per-run secrets dealt to a committee, channel keys.

    Everything here runs in one process for testing; ``secret_sum`` is the test oracle
    ``s_U = sum_{i in U} s_i`` that no code under ``he/`` ever forms. The committee is the first
    ``committee_size`` parties (1-based), with threshold ``threshold``.
    """

    ctx: HEContext
    n: int
    quorum: Quorum
    secrets: list[SecretKeyShare]
    dealt: dict[int, dict[int, np.ndarray]]  # dealer -> keyholder -> f_dealer(keyholder)
    channels: dict[int, channel.ChannelKeyPair] = field(repr=False)
    run_id: bytes = b"test-run-id"
    federation_id: str = "test-federation"

    @property
    def parties(self) -> list[int]:
        return list(range(1, self.n + 1))

    @property
    def noise_bits(self) -> int:
        return self.ctx.params.decryption_noise_bits(len(self.quorum.committee), MAX_ATTEMPTS)

    @property
    def smudging_bits(self) -> int:
        return self.ctx.params.smudging_bits(len(self.quorum.committee), MAX_ATTEMPTS)

    def label(self, kind: str = "train", round_id: int = 1) -> CiphertextLabel:
        return CiphertextLabel(self.federation_id, self.run_id, kind, round_id)

    def encrypt(self, party: int, update: list[np.ndarray], count: int, label: CiphertextLabel) -> bytes:
        encryptor = SecretKeyEncryptor(self.ctx, self.secrets[party - 1])
        encrypted, _clipped = encryptor.encrypt(update, count, label)
        return encrypted.to_bytes(self.ctx)

    def encrypt_all(
        self,
        updates: list[list[np.ndarray]],
        counts: list[int],
        contributors: list[int] | None = None,
        label: CiphertextLabel | None = None,
    ) -> EncryptedUpdate:
        """Each contributor (default: parties 1..len(updates)) encrypts; the server sums."""
        contributors = contributors or list(range(1, len(updates) + 1))
        label = label or self.label()
        params = self.ctx.params
        total = CiphertextSum(self.ctx, UpdateLayout.of(updates[0], params.clip, params.default_weight_scale))
        for party, update, count in zip(contributors, updates, counts, strict=True):
            total.add(party, self.encrypt(party, update, count, label))
        return total.result

    def key_share(self, keyholder: int, contributors: list[int]) -> np.ndarray:
        """``[s_U]_k = sum_{i in U} f_i(k)``, as keyholder k computes it."""
        return sum_shares([self.dealt[i][keyholder] for i in contributors], self.ctx.data_moduli)

    def mask_keys(self, keyholder: int, keyholders: list[int]) -> dict[int, bytes]:
        me = self.channels[keyholder]
        return {
            k: channel.mask_key(me, self.channels[k].public_bytes(), self.run_id)
            for k in keyholders
            if k != keyholder
        }

    def request(
        self, aggregate: EncryptedUpdate, contributors, keyholders, label=None, attempt: int = 1
    ) -> DecryptionRequest:
        label = label or self.label()
        return DecryptionRequest(
            label,
            attempt,
            tuple(contributors),
            tuple(keyholders),
            aggregate.num_ciphertexts,
            aggregate.coefficients,
        )

    def share(self, keyholder: int, request: DecryptionRequest) -> DecryptionShare:
        """What keyholder k answers (c1 derived from the label, masks from its channel keys)."""
        c1 = seeded_c1(self.ctx, request.label, request.num_ciphertexts)
        masks = pairwise_masks(self.ctx, keyholder, self.mask_keys(keyholder, request.keyholders), request)
        key_share = self.key_share(keyholder, list(request.contributors))
        return gen_decryption_share(self.ctx, request, keyholder, c1, key_share, masks, self.smudging_bits)

    def shares(self, request: DecryptionRequest) -> list[DecryptionShare]:
        return [self.share(k, request) for k in request.keyholders]

    def decrypt(self, aggregate: EncryptedUpdate, contributors, keyholders, label=None):
        """(arrays, total_examples) decrypted by the decryption set ``keyholders``."""
        request = self.request(aggregate, contributors, keyholders, label)
        fields = combine(self.ctx, aggregate, self.shares(request), request, self.noise_bits)
        return decrypt_update(self.ctx, aggregate, fields)

    def secret_sum(self, contributors: list[int]) -> np.ndarray:
        """TEST ORACLE ONLY: ``s_U = sum_{i in U} s_i`` (data level, NTT form)."""
        total = self.secrets[contributors[0] - 1].residues
        for i in contributors[1:]:
            total = addmod(total, self.secrets[i - 1].residues, self.ctx.data_moduli)
        return total


def build_federation(ctx: HEContext, n: int, threshold: int | None = None, committee_size=None) -> Federation:
    """Per-run secrets for n parties, dealt to the committee (the first ``committee_size``)."""
    committee = tuple(range(1, (committee_size or n) + 1))
    quorum = Quorum(committee, threshold or len(committee))
    secrets = [keygen.gen_secret(ctx) for _ in range(n)]
    dealt = {
        i: {
            k: share.expand(ctx)
            for k, share in keygen.deal_secret_shares(ctx, sk, quorum.threshold, list(committee)).items()
        }
        for i, sk in enumerate(secrets, start=1)
    }
    channels = {k: channel.ChannelKeyPair.generate() for k in committee}
    return Federation(ctx, n, quorum, secrets, dealt, channels)


def random_updates(
    params: HEParams, n: int, sizes: tuple[int, ...], seed: int
) -> tuple[list[list[np.ndarray]], list[int]]:
    """n updates of arrays uniform in [-0.9, 0.9] and random example counts."""
    rng = np.random.default_rng(seed)
    updates = [[rng.uniform(-0.9, 0.9, size) for size in sizes] for _ in range(n)]
    high = 5000
    counts = [int(c) for c in rng.integers(1, high + 1, n)]
    return updates, counts


def weighted_average(updates: list[list[np.ndarray]], counts: list[int]) -> list[np.ndarray]:
    """The plaintext FedAvg result ``sum_k n_k v_k / sum_k n_k`` (float64)."""
    total = sum(counts)
    return [
        sum(c * u[i] for c, u in zip(counts, updates, strict=True)) / total for i in range(len(updates[0]))
    ]


def max_abs_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    assert [g.shape for g in got] == [w.shape for w in want]
    return max(float(np.max(np.abs(g - w))) for g, w in zip(got, want, strict=True))


def average_tolerance(params: HEParams, counts: list[int], weight_scale: int | None = None) -> float:
    """Worst-case error of the decoded weighted average, derived from the quantization step.

    Party k encodes ``z_k = v_k w_k H / clip + d_k`` with ``w_k = n_k / S`` (``H = 2^(b-1)-1``)
    and ``|d_k| < 1``: round-to-nearest errs by 1/2, stochastic rounding by < 1, plus at most
    half an ulp of the float64 product (1/2 once ``|z| ~ 2^53``). The counts travel exactly, so
    ``W = sum_k w_k`` is exact and ``|decoded - A/W| < n clip / (H W)``. The factor 2 covers the
    float64 conversion of the int64 field sums in ``UpdateEncoder.decode``.
    """
    scale = weight_scale or params.default_weight_scale
    half_range = (1 << (params.value_bits - 1)) - 1
    weight = sum(counts) / scale
    return 2 * len(counts) * params.clip / (half_range * weight)


@functools.cache
def context(name: str) -> HEContext:
    """One HEContext per parameter set for the whole session (they hold no key material)."""
    return HEContext(TEST_PARAMS if name == TEST_PARAMS.name else PRESETS[name])


def _set_last_residue(blob: bytes, value: int) -> bytes:
    """Set the frame's last residue (values past the 60-bit wire width saturate to 2^60-1)."""
    pair = wire.unpack_residues(blob[-15:], 2)
    pair[1] = min(value, (1 << wire.RESIDUE_BITS) - 1)
    return blob[:-15] + wire.pack_residues(pair)


# -- exact integer views of NTT-form residues ------------------------------------------------------
def crt(rows: list[list[int]], moduli: list[int]) -> list[int]:
    """The integers modulo ``prod(moduli)`` with residues ``rows[i]`` modulo ``moduli[i]``."""
    product = math.prod(moduli)
    weights = [(product // q) * pow(product // q, -1, q) for q in moduli]
    return [
        sum(w * r for w, r in zip(weights, column, strict=True)) % product
        for column in zip(*rows, strict=True)
    ]


def oracle_plaintext(
    ctx, aggregate: EncryptedUpdate, secret: np.ndarray, label: CiphertextLabel
) -> np.ndarray:
    """TEST ORACLE: ``C0 + c1*s`` with the secret sum ``s``, in coefficient form over the
    aggregate's coefficients ``[m, L, k]``: the message plus the encryption noise, ``M + E``."""
    c1 = seeded_c1(ctx, label, aggregate.num_ciphertexts)
    product = ctx.intt(mulmod(c1, np.broadcast_to(secret, c1.shape), ctx.data_moduli))
    return addmod(aggregate.c0, product[..., : aggregate.coefficients], ctx.data_moduli)


def signed_coefficients(ctx, poly: np.ndarray, rows: str = "noise") -> list[int]:
    """The coefficients of an NTT-form polynomial ``[L, N]`` as signed Python integers, read off
    the noise primes (``rows="noise"``) or off every data prime (``rows="all"``)."""
    return signed_integers(ctx, ctx.intt(poly[None])[0], rows)


def signed_integers(ctx, coefficients: np.ndarray, rows: str = "noise") -> list[int]:
    """Coefficient-form residues ``[L, k]`` (a share, ``C0``) as signed Python integers, read as
    ``signed_coefficients`` reads them."""
    start = ctx.num_payload if rows == "noise" else 0
    moduli = [int(q) for q in ctx.data_moduli.tolist()[start:]]
    coefficients = coefficients[start:]
    product = math.prod(moduli)
    values = crt([row.tolist() for row in coefficients], moduli)
    return [v - product if v > product // 2 else v for v in values]


def tampered(
    ctx, share: DecryptionShare, index: int, delta: int, rows: list[int], ciphertext: int = 0
) -> DecryptionShare:
    """``share`` with ``delta`` added to coefficient ``index`` of one ciphertext on the residue rows
    ``rows``."""
    coefficients = share.polys.copy()
    for row in rows:
        q = int(ctx.data_moduli[row])
        coefficients[ciphertext, row, index] = (int(coefficients[ciphertext, row, index]) + delta) % q
    return DecryptionShare(share.party, share.round_id, share.attempt, coefficients)


def residues_of(value: Fraction | int, moduli: np.ndarray) -> np.ndarray:
    """A rational number modulo each prime, as a ``[L, 1]`` column."""
    value = Fraction(value)
    column = [value.numerator * pow(value.denominator, -1, int(q)) % int(q) for q in moduli.tolist()]
    return np.array(column, dtype=np.uint64).reshape(-1, 1)


def times(poly: np.ndarray, value: Fraction | int, moduli: np.ndarray) -> np.ndarray:
    return mulmod(poly, np.broadcast_to(residues_of(value, moduli), poly.shape), moduli)


def centered(residues: np.ndarray, q: int) -> np.ndarray:
    """Residues mod q lifted to (-q/2, q/2] as int64 (q < 2^61)."""
    r = residues.astype(np.int64)
    return np.where(r > q // 2, r - np.int64(q), r)


def crt_centered(rows: list[np.ndarray], moduli: list[int]) -> np.ndarray:
    """The integers (Python ints, object array) in (-Q/2, Q/2] with the given residues."""
    product = 1
    for q in moduli:
        product *= q
    value = np.zeros(rows[0].shape, dtype=object)
    for row, q in zip(rows, moduli, strict=True):
        rest = product // q
        value = value + row.astype(object) * (rest * pow(rest, -1, q))
    value = value % product
    return np.where(value > product // 2, value - product, value)

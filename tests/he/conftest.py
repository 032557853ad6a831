"""Shared fixtures of the ``he`` tests: a small INSECURE parameter set and simulated federations.

``TEST_PARAMS`` is insecure, for fast tests only: N=4096 with 222 modulus bits is far above
SEAL's 128-bit bound for N=4096 (109 bits), so it sets ``insecure_for_tests=True``. It keeps the
real bit budget of the ``precise`` preset (60-bit primes, 2 noise primes, 54-bit values), so
the packing, noise reading and flooding arithmetic are exercised exactly as in production,
at a quarter of the ring size.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pytest

from he import keygen
from he.ciphertext import CiphertextSum, EncryptedUpdate, UpdateEncryptor
from he.context import HEContext
from he.decrypt import DecryptionShare, combine, decrypt_update, gen_decryption_share
from he.keygen import SecretKeyShare
from he.modarith import addmod
from he.params import PRESETS, HEParams
from he.threshold import combine_received_shares

# Insecure, for fast tests only. Never use outside tests.
TEST_PARAMS = HEParams(
    name="test-insecure",
    poly_modulus_degree=4096,
    coeff_modulus_bits=(60, 60, 60, 60, 18),
    noise_primes=2,
    value_bits=54,
    clip=64.0,
    max_parties=10,
    max_samples_per_party=1 << 20,
    stochastic_rounding=False,
    insecure_for_tests=True,
)


@dataclass
class Federation:
    """n simulated hospitals: their secrets, the collective public key, and Shamir dealings.

    Everything here runs in one process for testing; ``collective_secret`` is the test oracle
    ``s = sum_i s_i`` that no code under ``he/`` ever forms.
    """

    ctx: HEContext
    n: int
    secrets: list[SecretKeyShare]
    crp: np.ndarray
    key_shares: list[keygen.PublicKeyShare]
    public_key: np.ndarray
    _dealings: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)

    @property
    def points(self) -> list[int]:
        return list(range(1, self.n + 1))

    def shamir(self, t: int) -> dict[int, np.ndarray]:
        """Party j's share ``S_j = sum_i f_i(j)`` of the collective secret, for threshold t."""
        if t not in self._dealings:
            dealt = [keygen.deal_secret_shares(self.ctx, sk, t, self.points) for sk in self.secrets]
            self._dealings[t] = {
                j: combine_received_shares([d[j] for d in dealt], self.ctx.data_moduli) for j in self.points
            }
        return self._dealings[t]

    def decryption_key(self, party: int, t: int) -> np.ndarray:
        """What party j multiplies c1 by: its own s_j (n-of-n) or its Shamir share (t-of-n)."""
        return self.secrets[party - 1].data_level if t == self.n else self.shamir(t)[party]

    def encrypt_all(self, updates: list[list[np.ndarray]], counts: list[int]) -> EncryptedUpdate:
        """Each party encrypts its update; the server sums the serialized ciphertexts."""
        encryptor = UpdateEncryptor(self.ctx, self.public_key)
        total = CiphertextSum(self.ctx)
        for k, (update, count) in enumerate(zip(updates, counts, strict=True)):
            encrypted, _clipped = encryptor.encrypt(update, count)
            total.add(f"hospital-{k + 1}", encrypted.to_bytes(self.ctx))
        return total.result

    def decryption_shares(
        self, aggregate: EncryptedUpdate, parties: list[int], t: int, round_id: int = 1
    ) -> list[DecryptionShare]:
        bits = self.ctx.params.smudging_bits(self.n, t)
        return [
            gen_decryption_share(self.ctx, aggregate, self.decryption_key(j, t), j, round_id, bits)
            for j in parties
        ]

    def decrypt(self, aggregate: EncryptedUpdate, parties: list[int], t: int):
        """(arrays, total_examples) decrypted by ``parties`` for a t-of-n federation."""
        shares = self.decryption_shares(aggregate, parties, t)
        return decrypt_update(self.ctx, aggregate, combine(self.ctx, aggregate, shares, self.n, t))

    def collective_secret(self) -> np.ndarray:
        """TEST ORACLE ONLY: ``s = sum_i s_i`` at key level (NTT form)."""
        total = self.secrets[0].residues
        for sk in self.secrets[1:]:
            total = addmod(total, sk.residues, self.ctx.key_moduli)
        return total


def build_federation(ctx: HEContext, n: int) -> Federation:
    """Run the key-generation protocol of ``he.keygen`` for n parties."""
    contributions = [keygen.fresh_contribution() for _ in range(n)]
    crp = keygen.sample_crp(ctx, keygen.crs_seed(contributions))
    secrets = [keygen.gen_secret(ctx) for _ in range(n)]
    key_shares = [keygen.gen_public_key_share(ctx, sk, crp) for sk in secrets]
    public_key = keygen.gen_public_key(ctx, crp, keygen.aggregate_public_key_shares(ctx, key_shares))
    return Federation(ctx, n, secrets, crp, key_shares, public_key)


def random_updates(
    params: HEParams, n: int, sizes: tuple[int, ...], seed: int
) -> tuple[list[list[np.ndarray]], list[int]]:
    """n updates of arrays uniform in [-0.9, 0.9] and random example counts."""
    rng = np.random.default_rng(seed)
    updates = [[rng.uniform(-0.9, 0.9, size) for size in sizes] for _ in range(n)]
    high = min(params.max_samples_per_party, 5000)
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


def average_tolerance(params: HEParams, counts: list[int], max_abs_value: float) -> float:
    """Worst-case error of the decoded weighted average, derived from the quantization step.

    Party k encodes ``z_k = w_k v_k H / clip + d_k`` and its weight as ``w_k H + e_k``
    (``H = 2^(b-1)-1``, ``w_k = n_k / max_samples_per_party``) with ``|d_k|, |e_k| <= 1``:
    round-to-nearest errs by 1/2, stochastic rounding by < 1, plus at most half an ulp of the
    float64 product (1/2 once ``|z| ~ 2^53``). Decoding divides ``(A + a) / (W + b)`` with
    ``A = sum w_k v_k``, ``W = sum w_k``, ``|a| <= n clip / H``, ``|b| <= n / H``, so
    ``|decoded - A/W| <= (n clip / H + |A/W| n / H) / (W - n / H)``. The factor 2 covers the
    float64 conversion of the int64 field sums in ``UpdateEncoder.decode`` (another <= n/2 units).
    """
    n = len(counts)
    half_range = (1 << (params.value_bits - 1)) - 1
    weight = sum(counts) / params.max_samples_per_party
    slack = n / half_range
    return 2 * (n * params.clip / half_range + max_abs_value * slack) / (weight - slack)


@functools.cache
def context(name: str) -> HEContext:
    """One HEContext per parameter set for the whole session (they hold no key material)."""
    return HEContext(TEST_PARAMS if name == TEST_PARAMS.name else PRESETS[name])


@pytest.fixture(scope="session")
def test_ctx() -> HEContext:
    return context(TEST_PARAMS.name)


@pytest.fixture(scope="session")
def federation10(test_ctx) -> Federation:
    """10 parties (= TEST_PARAMS.max_parties) under the insecure test parameters."""
    return build_federation(test_ctx, 10)


@pytest.fixture(scope="session")
def federation5(test_ctx) -> Federation:
    """5 parties under the insecure test parameters (used 3-of-5)."""
    return build_federation(test_ctx, 5)

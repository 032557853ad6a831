"""The numpy modular arithmetic matches Python integers, on random and edge-case inputs."""

import numpy as np
import pytest

from he.modarith import addmod, mul_scalar, mulmod, negmod, submod

# SEAL's 60-bit NTT primes for N=16384, a 61-bit prime, a 50-bit and a small one.
PRIMES = [1152921504606748673, 1152921504599080961, (1 << 61) - 1, 1125899906826241, 65537]


def edge_values(q: int) -> list[int]:
    return [0, 1, 2, q - 1, q - 2, q // 2, q // 2 + 1, (1 << 30) - 1, 1 << 30, (1 << 31) % q]


@pytest.mark.parametrize("q", PRIMES, ids=lambda q: f"{q.bit_length()}bit")
def test_mulmod_matches_python_ints(q: int) -> None:
    rng = np.random.default_rng(q % 1000)
    a = rng.integers(0, q, size=20000, dtype=np.uint64)
    b = rng.integers(0, q, size=20000, dtype=np.uint64)
    edges = edge_values(q)
    a = np.concatenate([a, np.repeat(np.array(edges, dtype=np.uint64), len(edges))])
    b = np.concatenate([b, np.tile(np.array(edges, dtype=np.uint64), len(edges))])
    got = mulmod(a, b, q)
    want = [(int(x) * int(y)) % q for x, y in zip(a, b, strict=True)]
    assert got.tolist() == want


@pytest.mark.parametrize("q", PRIMES, ids=lambda q: f"{q.bit_length()}bit")
def test_add_sub_neg_match_python_ints(q: int) -> None:
    rng = np.random.default_rng(7)
    edges_a = np.array([0, q - 1, q - 1], dtype=np.uint64)
    edges_b = np.array([0, q - 1, 1], dtype=np.uint64)
    a = np.concatenate([rng.integers(0, q, 5000, dtype=np.uint64), edges_a])
    b = np.concatenate([rng.integers(0, q, 5000, dtype=np.uint64), edges_b])
    pairs = list(zip(a.tolist(), b.tolist(), strict=True))
    assert addmod(a, b, q).tolist() == [(x + y) % q for x, y in pairs]
    assert submod(a, b, q).tolist() == [(x - y) % q for x, y in pairs]
    assert negmod(a, q).tolist() == [(-x) % q for x in a.tolist()]


def test_rows_use_their_own_modulus() -> None:
    q = np.array(PRIMES[:2], dtype=np.uint64)
    rng = np.random.default_rng(1)
    a = np.stack([rng.integers(0, int(p), 100, dtype=np.uint64) for p in PRIMES[:2]])
    b = np.stack([rng.integers(0, int(p), 100, dtype=np.uint64) for p in PRIMES[:2]])
    got = mulmod(a, b, q)
    for row, p in enumerate(PRIMES[:2]):
        assert got[row].tolist() == [int(x) * int(y) % p for x, y in zip(a[row], b[row], strict=True)]


@pytest.mark.parametrize("scalar", [0, 1, -1, 362880, -(2**31 - 1), 2**31, -(2**45), 2**70])
def test_mul_scalar_matches_python_ints(scalar: int) -> None:
    moduli = np.array(PRIMES[:2], dtype=np.uint64)
    rng = np.random.default_rng(abs(scalar) % 97)
    a = np.stack([rng.integers(0, q, 1000, dtype=np.uint64) for q in PRIMES[:2]])
    for row, q in enumerate(PRIMES[:2]):
        a[row, :2] = [0, q - 1]
    got = mul_scalar(a, scalar, moduli)
    for row, q in enumerate(PRIMES[:2]):
        assert got[row].tolist() == [int(x) * scalar % q for x in a[row]]

"""Exact vectorized arithmetic modulo primes below 2^61, with numpy's uint64 only.

numpy has no 128-bit integers, so ``a*b mod q`` splits ``b`` into 30-bit halves: each partial
product is below 2^91, its quotient by ``q`` is estimated in float64 with an error of at most
one, and the remainder is computed in wrapping uint64 arithmetic and corrected by +-q. This is
exact on every platform (it needs no 80-bit long double). Tested against Python integers.
"""

from __future__ import annotations

import numpy as np

MAX_MODULUS_BITS = 61
_HALF = np.uint64(30)
_LOW_MASK = np.uint64((1 << 30) - 1)


def _as_column(q: np.ndarray | int, ndim: int) -> np.ndarray:
    """A vector of moduli applies one per RNS row (axis -2 of ``[..., L, N]`` arrays)."""
    q = np.asarray(q, dtype=np.uint64)
    return q.reshape(-1, 1) if q.ndim == 1 and ndim >= 2 else q


def _mul_small(a: np.ndarray, b: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(a*b) mod q for a < q < 2^61 and b < 2^31: quotient estimated in float64, fixed exactly."""
    quotient = np.floor(a.astype(np.float64) * b.astype(np.float64) / q.astype(np.float64))
    r = (a * b - quotient.astype(np.uint64) * q).view(np.int64)  # true value in [-q, 2q)
    qi = q.astype(np.int64)
    r += (r >> 63) & qi  # now in [0, 2q)
    r -= qi
    r += (r >> 63) & qi  # now in [0, q)
    return r.view(np.uint64)


def mul_scalar(a: np.ndarray, scalar: int, q: np.ndarray | int) -> np.ndarray:
    """Exact ``a*scalar mod q`` for a signed integer scalar; one step when ``|scalar| < 2^31``."""
    a = np.asarray(a, dtype=np.uint64)
    qc = _as_column(q, a.ndim)
    if abs(scalar) < 1 << 31:
        product = _mul_small(a, np.broadcast_to(np.uint64(abs(scalar)), a.shape), qc)
        return negmod(product, qc) if scalar < 0 else product
    residues = np.array([scalar % int(m) for m in np.ravel(qc)], dtype=np.uint64).reshape(qc.shape)
    return mulmod(a, np.broadcast_to(residues, a.shape), q)


def mulmod(a: np.ndarray, b: np.ndarray, q: np.ndarray | int) -> np.ndarray:
    """Exact ``a*b mod q`` elementwise, for ``a, b < q < 2^61`` (q broadcast per row)."""
    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    qc = _as_column(q, max(a.ndim, b.ndim))
    high = _mul_small(a, b >> _HALF, qc)
    shifted = _mul_small(high, np.broadcast_to(np.uint64(1 << 30), high.shape), qc)
    return addmod(shifted, _mul_small(a, b & _LOW_MASK, qc), qc)


def addmod(a: np.ndarray, b: np.ndarray, q: np.ndarray | int) -> np.ndarray:
    """``(a + b) mod q`` for ``a, b < q < 2^63``."""
    qc = _as_column(q, max(np.ndim(a), np.ndim(b)))
    s = np.asarray(a, dtype=np.uint64) + np.asarray(b, dtype=np.uint64)
    return np.minimum(s, s - qc)  # s - q wraps above 2^63 > s exactly when s < q


def submod(a: np.ndarray, b: np.ndarray, q: np.ndarray | int) -> np.ndarray:
    """``(a - b) mod q`` for ``a, b < q``."""
    qc = _as_column(q, max(np.ndim(a), np.ndim(b)))
    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    return np.where(a >= b, a - b, a + (qc - b))


def negmod(a: np.ndarray, q: np.ndarray | int) -> np.ndarray:
    """``-a mod q`` for ``a < q``."""
    a = np.asarray(a, dtype=np.uint64)
    qc = _as_column(q, a.ndim)
    return np.where(a == 0, a, qc - a)


def inverse(a: int, q: int) -> int:
    """Inverse of ``a`` modulo the prime ``q``."""
    return pow(a, -1, q)

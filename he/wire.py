"""Wire format of everything ``he`` sends: framed, typed, bound to one parameter set, validated.

``FQHE | u8 version | u8 kind | 16-byte parameter fingerprint | u32 meta length | meta (JSON) |
residues ([..., L, N], two 60-bit residues per 15 bytes, little endian)``. Every prime is below
2^60, so packing saves the 4 idle bits of each 64-bit word (6.25% of every message). Parsing
checks every field and that every residue is below its prime, so corrupt or foreign bytes fail
with a clear error instead of producing silent garbage after decryption.
"""

from __future__ import annotations

import json
import math
import struct
from enum import IntEnum

import numpy as np

from he.errors import CiphertextError

MAGIC = b"FQHE"
VERSION = 3  # 3: protocol v2 (seeded c1: updates carry c0 only)
RESIDUE_BITS = 60
_FRAME = struct.Struct("<4sBB16sI")
MAX_META_BYTES = 1 << 16  # metadata is a layout and a few numbers
MAX_DIMENSIONS = 4
MAX_DIMENSION = 1 << 24


class Kind(IntEnum):
    """What a frame holds; a frame of another kind is refused."""

    ENCRYPTED_UPDATE = 1
    DECRYPTION_SHARE = 3
    SECRET_SHARE = 4
    PUBLIC_KEY_SHARE = 5  # he.share_check: pk_i, NTT form
    CHECK_POLYNOMIAL = 6  # he.share_check: the check polynomial c1', NTT form


def pack(kind: Kind, fingerprint: bytes, meta: dict, residues: np.ndarray) -> bytes:
    """Frame ``residues`` (any shape ending in ``[L, N]``) with JSON metadata."""
    meta = {**meta, "shape": list(residues.shape)}
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    head = _FRAME.pack(MAGIC, VERSION, int(kind), fingerprint, len(meta_bytes))
    return head + meta_bytes + pack_residues(residues)


def pack_residues(residues: np.ndarray) -> bytes:
    """Two residues below 2^60 in 15 bytes: ``lo = r0 | r1 << 60`` (8 bytes), ``r1 >> 4`` (7 bytes)."""
    flat = np.ascontiguousarray(residues, dtype=np.uint64).reshape(-1, 2)
    if flat.size and int(flat.max()) >> RESIDUE_BITS:
        raise ValueError(f"residues must be below 2^{RESIDUE_BITS} to be packed")
    pairs = len(flat)
    out = np.zeros(15 * pairs + 1, dtype=np.uint8)  # one spare byte for the last 8-byte write
    # ``r1 >> 4`` has a zero top byte, so writing it as 8 bytes first and the next pair's low
    # word after it leaves every byte right.
    _words(out, 8, pairs)[:] = flat[:, 1] >> np.uint64(64 - RESIDUE_BITS)
    _words(out, 0, pairs)[:] = flat[:, 0] | (flat[:, 1] << np.uint64(RESIDUE_BITS))
    return out[:-1].tobytes()


def unpack_residues(body: bytes, count: int) -> np.ndarray:
    """Inverse of ``pack_residues`` for ``count`` residues (an even number)."""
    pairs = count // 2
    buffer = np.frombuffer(body, dtype=np.uint8)
    low = _words(buffer, 0, pairs)
    high = _words(buffer, 7, pairs) >> np.uint64(8)  # bytes 7..14, dropping byte 7 (low's)
    out = np.empty((pairs, 2), dtype=np.uint64)
    out[:, 0] = low & np.uint64((1 << RESIDUE_BITS) - 1)
    out[:, 1] = (low >> np.uint64(RESIDUE_BITS)) | (high << np.uint64(64 - RESIDUE_BITS))
    return out.reshape(-1)


def _words(buffer: np.ndarray, offset: int, pairs: int) -> np.ndarray:
    """Little-endian u64 views at ``offset + 15*k`` (unaligned, zero-copy)."""
    return np.ndarray((pairs,), dtype="<u8", buffer=buffer, offset=offset, strides=(15,))


def packed_size(count: int) -> int:
    return 15 * (count // 2)


def unpack(
    data: bytes, kind: Kind, fingerprint: bytes, moduli: np.ndarray, what: str
) -> tuple[dict, np.ndarray]:
    """Parse and validate a frame; ``what`` names the input in every error."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CiphertextError(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _FRAME.size:
        raise CiphertextError(f"{what}: {len(data)} bytes is too short for a fedquorum frame")
    magic, version, got_kind, got_fingerprint, meta_len = _FRAME.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise CiphertextError(f"{what}: not a fedquorum v{VERSION} frame (bad magic or version)")
    if got_kind != kind:
        raise CiphertextError(f"{what}: expected a {kind.name} frame, got kind {got_kind}")
    if got_fingerprint != fingerprint:
        raise CiphertextError(
            f"{what}: made under other HE parameters or for another federation or run "
            f"(fingerprint {got_fingerprint.hex()}, expected {fingerprint.hex()})"
        )
    if meta_len > MAX_META_BYTES or _FRAME.size + meta_len > len(data):
        raise CiphertextError(
            f"{what}: frame metadata of {meta_len} bytes does not fit (at most {MAX_META_BYTES})"
        )
    meta = parse_meta(data[_FRAME.size : _FRAME.size + meta_len], what)
    shape = meta.get("shape")
    if (
        not isinstance(shape, list)
        or not 2 <= len(shape) <= MAX_DIMENSIONS
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIMENSION for d in shape)
    ):
        raise CiphertextError(
            f"{what}: frame shape {str(shape)[:80]} is not a list of 2 to {MAX_DIMENSIONS} sizes in "
            f"[0, {MAX_DIMENSION}]"
        )
    shape = tuple(shape)
    body = data[_FRAME.size + meta_len :]
    count = math.prod(shape)  # a Python int: no overflow, and nothing is allocated yet
    expected = packed_size(count)
    if shape[-2] != len(moduli) or count % 2 or len(body) != expected:
        raise CiphertextError(
            f"{what}: residue block of {len(body)} bytes, shape {shape}; expected "
            f"{len(moduli)} primes and {expected} bytes"
        )
    residues = unpack_residues(body, count).reshape(shape)
    if np.any(residues >= moduli.reshape(-1, 1)):
        raise CiphertextError(f"{what}: residues out of range for their primes (corrupt data)")
    return meta, residues


def parse_meta(raw: bytes, what: str) -> dict:
    """Frame metadata: a JSON object of finite values, or ``CiphertextError`` (never another type)."""
    try:
        meta = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise CiphertextError(f"{what}: unreadable frame metadata (expected a JSON object)") from None
    if not isinstance(meta, dict):
        raise CiphertextError(f"{what}: frame metadata is not a JSON object")
    return meta


def int_field(meta: dict, key: str, what: str) -> int:
    """An integer metadata field (not a bool, a float or a string), or ``CiphertextError``."""
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 1 << 62:
        raise CiphertextError(f"{what}: metadata field {key!r} must be an integer, got {str(value)[:40]}")
    return value


def _refuse_constant(name: str):
    raise ValueError(f"non-finite JSON constant {name}")

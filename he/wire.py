"""Wire format of everything ``he`` sends: framed, typed, bound to one parameter set, validated.

``FQHE | u8 version | u8 kind | 16-byte parameter fingerprint | u32 meta length | meta (JSON) |
residues (little-endian u64, [..., L, N])``. Parsing checks every field and that every residue
is below its prime, so corrupt or foreign bytes fail with a clear error instead of producing
silent garbage after decryption.
"""

from __future__ import annotations

import json
import struct
from enum import IntEnum

import numpy as np

from he.errors import CiphertextError

MAGIC = b"FQHE"
VERSION = 1
_FRAME = struct.Struct("<4sBB16sI")


class Kind(IntEnum):
    """What a frame holds; a frame of another kind is refused."""

    ENCRYPTED_UPDATE = 1
    PUBLIC_KEY_SHARE = 2
    DECRYPTION_SHARE = 3
    SECRET_SHARE = 4
    CIPHERTEXT_SUM = 5


def pack(kind: Kind, fingerprint: bytes, meta: dict, residues: np.ndarray) -> bytes:
    """Frame ``residues`` (any shape ending in ``[L, N]``) with JSON metadata."""
    meta = {**meta, "shape": list(residues.shape)}
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    head = _FRAME.pack(MAGIC, VERSION, int(kind), fingerprint, len(meta_bytes))
    return head + meta_bytes + np.ascontiguousarray(residues, dtype="<u8").tobytes()


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
            f"{what}: made under other HE parameters (fingerprint {got_fingerprint.hex()}, "
            f"expected {fingerprint.hex()})"
        )
    try:
        meta = json.loads(data[_FRAME.size : _FRAME.size + meta_len])
        shape = tuple(int(d) for d in meta["shape"])
    except (ValueError, KeyError, TypeError) as err:
        raise CiphertextError(f"{what}: unreadable frame metadata") from err
    body = data[_FRAME.size + meta_len :]
    expected = 8 * int(np.prod(shape, dtype=np.int64))
    if len(shape) < 2 or shape[-2] != len(moduli) or len(body) != expected:
        raise CiphertextError(
            f"{what}: residue block of {len(body)} bytes, shape {shape}; expected "
            f"{len(moduli)} primes and {expected} bytes"
        )
    residues = np.frombuffer(body, dtype="<u8").reshape(shape)
    if np.any(residues >= moduli.reshape(-1, 1)):
        raise CiphertextError(f"{what}: residues out of range for their primes (corrupt data)")
    return meta, residues

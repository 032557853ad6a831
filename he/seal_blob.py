"""Read and write SEAL's serialized ciphertexts and keys as numpy arrays (SEAL 4.x layout).

TenSEAL's ``sealapi`` objects only save to and load from file paths and offer no array view,
so the multiparty layer moves polynomials in and out of SEAL through this byte layout
(see ``shared/notes/seal-raw-access.md``)::

    header (16 B): u16 magic 0xA15E | u8 16 | u8 major | u8 minor | u8 compr | u16 0 | u64 size
    poly body:     parms_id 4*u64 | u8 is_ntt | u64 size | u64 N | u64 L | f64 scale | u64 1 | DynArray
    DynArray:      header (compr 0) | u64 count | count*u64, ordered [poly][prime][coefficient]
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass

import numpy as np
import zstandard

from he.errors import CiphertextError

SEAL_MAGIC = 0xA15E
HEADER = struct.Struct("<HBBBBHQ")
POLY_META = struct.Struct("<4QBQQQdQ")
COMPR_NONE, COMPR_ZLIB, COMPR_ZSTD = 0, 1, 2
SEAL_VERSION = (4, 3)


@dataclass(frozen=True)
class PolyBlob:
    """The content of a SEAL ``Ciphertext``/``PublicKey``: ``polys[size, L, N]`` plus metadata."""

    parms_id: tuple[int, int, int, int]
    is_ntt_form: bool
    polys: np.ndarray
    scale: float = 1.0


def _body(blob: bytes) -> bytes:
    if len(blob) < HEADER.size:
        raise CiphertextError(f"SEAL blob of {len(blob)} bytes is shorter than its 16-byte header")
    magic, hsize, _major, _minor, compr, _res, total = HEADER.unpack_from(blob)
    if magic != SEAL_MAGIC or hsize != HEADER.size or total != len(blob):
        raise CiphertextError("bytes are not a SEAL object (bad magic, header size or length)")
    body = blob[HEADER.size :]
    if compr == COMPR_ZSTD:
        return zstandard.ZstdDecompressor().decompress(body)
    if compr == COMPR_NONE:
        return body
    raise CiphertextError(f"unsupported SEAL compression mode {compr} (expected none or zstd)")


def _header(body_len: int) -> bytes:
    return HEADER.pack(SEAL_MAGIC, HEADER.size, *SEAL_VERSION, COMPR_NONE, 0, HEADER.size + body_len)


def parse_poly_blob(blob: bytes) -> PolyBlob:
    """Parse a serialized SEAL ``Ciphertext`` or ``PublicKey`` into arrays."""
    body = _body(blob)
    *pid, is_ntt, size, n, nprimes, scale, _corr = POLY_META.unpack_from(body)
    arr = _dynarray(body[POLY_META.size :], size * nprimes * n)
    return PolyBlob(tuple(pid), bool(is_ntt), arr.reshape(size, nprimes, n), scale)


def build_poly_blob(blob: PolyBlob) -> bytes:
    """Serialize arrays as an uncompressed SEAL ``Ciphertext``/``PublicKey`` blob."""
    size, nprimes, n = blob.polys.shape
    meta = POLY_META.pack(*blob.parms_id, int(blob.is_ntt_form), size, n, nprimes, blob.scale, 1)
    body = meta + _dynarray_bytes(blob.polys)
    return _header(len(body)) + body


def parse_secret_key(blob: bytes) -> np.ndarray:
    """Parse a serialized SEAL ``SecretKey`` (a plaintext body) into ``[L, N]`` residues."""
    body = _body(blob)
    _pid, count = struct.unpack_from("<32sQ", body)
    return _dynarray(body[32 + 8 + 8 :], count)


def _dynarray(raw: bytes, expected: int) -> np.ndarray:
    _magic, _h, _ma, _mi, _c, _r, size = HEADER.unpack_from(raw)
    (count,) = struct.unpack_from("<Q", raw, HEADER.size)
    if count != expected or size != HEADER.size + 8 + 8 * count:
        raise CiphertextError(f"SEAL array holds {count} values where {expected} were expected")
    return np.frombuffer(raw, dtype="<u8", count=count, offset=HEADER.size + 8).copy()


def _dynarray_bytes(values: np.ndarray) -> bytes:
    flat = np.ascontiguousarray(values, dtype="<u8").reshape(-1)
    return _header(8 + flat.nbytes) + struct.pack("<Q", flat.size) + flat.tobytes()


class BlobFile:
    """A scratch file in memory (tmpfs where available) for SEAL's path-only save/load."""

    def __init__(self) -> None:
        directory = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, self.path = tempfile.mkstemp(prefix="fedquorum-", suffix=".seal", dir=directory)
        os.close(fd)

    def write(self, blob: bytes) -> str:
        with open(self.path, "wb") as f:
            f.write(blob)
        return self.path

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def close(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)

    def __del__(self) -> None:
        self.close()

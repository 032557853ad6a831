"""Hospital identities: Ed25519 signing keys, and signed statements bound to one federation and run.

Every set-up message, contribution and decryption request a hospital acts on carries a signature
of the hospital that made it, checked against the signing keys of the roster the hospital pinned
out of band (``he.roster``). A coordinator that relays messages can drop them, but it cannot
forge, alter or swap them (for example, replace a hospital's channel key with its own).

A statement is ``b"fedquorum-v2" | 0 | label | 0 | canonical JSON of the fields``; the label
names the message kind, so a signature on one kind never verifies as another.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from he.errors import SignatureError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_SIGNED_BYTES = 1 << 20  # a signed statement is metadata; anything larger is refused unread
DOMAIN = b"fedquorum-v2"


def statement(label: str, fields: dict) -> bytes:
    """The exact bytes that are signed: domain, label and the fields as canonical JSON."""
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return DOMAIN + b"\0" + label.encode() + b"\0" + body.encode()


class SigningKey:
    """A hospital's Ed25519 signing key; the private half never leaves this object or its file."""

    __slots__ = ("_private",)

    def __init__(self, private: Ed25519PrivateKey) -> None:
        if not isinstance(private, Ed25519PrivateKey):
            raise TypeError(f"expected an Ed25519PrivateKey, got {type(private).__name__}")
        self._private = private

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | Path) -> SigningKey:
        """A PEM (PKCS#8, unencrypted) key file, which must be readable by its owner only."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"signing key {path} does not exist (expected a PEM Ed25519 key)")
        if path.stat().st_mode & 0o077:
            raise PermissionError(f"signing key {path} is readable by others; run: chmod 600 {path}")
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError):
            raise SignatureError(f"signing key {path} is not an unencrypted PEM Ed25519 key") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise SignatureError(f"signing key {path} is not an Ed25519 key")
        return cls(private)

    def save(self, path: str | Path) -> None:
        """Write the key as PEM with mode 0600 (created so, never world-readable in between)."""
        pem = self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # the mode above applies only to a new file, not to one overwritten
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)

    def public_bytes(self) -> bytes:
        return self._private.public_key().public_bytes_raw()

    def sign(self, label: str, fields: dict) -> bytes:
        """A signed statement: JSON ``{"label", "fields", "signature"}`` (bytes as hex in fields)."""
        signature = self._private.sign(statement(label, fields))
        return json.dumps({"label": label, "fields": fields, "signature": signature.hex()}).encode()

    def __repr__(self) -> str:
        return f"SigningKey(public={self.public_bytes().hex()[:16]}…)"

    def __reduce__(self):
        raise TypeError("SigningKey holds a private key and cannot be pickled or copied")


def open_signed(data: bytes, label: str, public_key: bytes, what: str) -> dict:
    """The fields of a signed statement of kind ``label`` by ``public_key``, or ``SignatureError``."""
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_SIGNED_BYTES:
        raise SignatureError(f"{what}: expected a signed statement of at most {MAX_SIGNED_BYTES} bytes")
    try:
        message = json.loads(data, parse_constant=_refuse_constant)
        fields, signature = message["fields"], bytes.fromhex(message["signature"])
        got_label = message["label"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise SignatureError(f"{what}: not a readable signed statement") from None
    if got_label != label or not isinstance(fields, dict):
        raise SignatureError(f"{what}: expected a {label!r} statement, got {got_label!r}")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, statement(label, fields))
    except (InvalidSignature, ValueError):
        raise SignatureError(f"{what}: the signature does not verify with the roster's key") from None
    return fields


def _refuse_constant(name: str):
    raise ValueError(f"non-finite JSON constant {name}")

"""Pairwise authenticated-encryption channel for hospitals' Shamir shares, relayed by the server.

Threat model: the server relays sealed shares but cannot read them or alter them undetected.
Authenticity rests on the channel public keys being genuine: each hospital signs its channel key
in its hello (``he.identity``), checked against the roster, so a coordinator that swaps keys is
caught; both public keys are also bound into the HKDF info.

Construction: X25519 static key agreement, HKDF-SHA256 (salt ``None``, info
``b"fedquorum-shamir-v1" || min(pk_a, pk_b) || max(pk_a, pk_b) || context``) giving an
AES-256-GCM key, a random 96-bit nonce, and ``version || context`` as associated data, so a
share cannot be replayed into another run or redirected to another recipient. Wire format::

    version (1 B, 0x01) | nonce (12 B) | ciphertext + tag (len(plaintext) + 16 B)
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from he.errors import CiphertextError

__all__ = ["ChannelKeyPair", "mask_key", "open_sealed", "seal"]

VERSION = 0x01
PUBLIC_KEY_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16
KEY_LEN = 32
HKDF_LABEL = b"fedquorum-shamir-v1"
MASK_LABEL = b"fedquorum-mask-v1"
MIN_SEALED_LEN = 1 + NONCE_LEN + TAG_LEN


class ChannelKeyPair:
    """A hospital's X25519 channel key pair; the private key never leaves this object."""

    __slots__ = ("_private", "_public")

    def __init__(self, private: X25519PrivateKey) -> None:
        if not isinstance(private, X25519PrivateKey):
            raise TypeError(f"expected an X25519PrivateKey, got {type(private).__name__}")
        self._private = private
        self._public = private.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> ChannelKeyPair:
        """A fresh key pair from the OS CSPRNG."""
        return cls(X25519PrivateKey.generate())

    def public_bytes(self) -> bytes:
        """The 32-byte raw X25519 public key, to publish through the server."""
        return self._public

    def private_bytes_for_node_state(self) -> bytes:
        """Raw private key, only for the hospital node's in-memory run state (never sent)."""
        return self._private.private_bytes_raw()

    @classmethod
    def from_node_state(cls, private: bytes) -> ChannelKeyPair:
        return cls(X25519PrivateKey.from_private_bytes(private))

    def __repr__(self) -> str:
        # A fingerprint of the public key only: no key bytes, public or private.
        fingerprint = hashlib.sha256(self._public).hexdigest()[:16]
        return f"ChannelKeyPair(public_sha256={fingerprint}…)"

    def __reduce__(self):
        raise TypeError("ChannelKeyPair holds a private key and cannot be pickled or copied")

    def __reduce_ex__(self, protocol):
        return self.__reduce__()


def _check_bytes(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")


def _check_peer(own: ChannelKeyPair, peer_public: bytes, name: str) -> X25519PublicKey:
    if not isinstance(own, ChannelKeyPair):
        raise TypeError(f"expected a ChannelKeyPair, got {type(own).__name__}")
    _check_bytes(name, peer_public)
    if len(peer_public) != PUBLIC_KEY_LEN:
        raise CiphertextError(
            f"{name} is {len(peer_public)} bytes (expected a {PUBLIC_KEY_LEN}-byte X25519 key)"
        )
    if peer_public == own.public_bytes():
        raise CiphertextError(
            f"{name} equals this hospital's own public key (expected the peer's key; "
            "the relayed key may have been swapped)"
        )
    return X25519PublicKey.from_public_bytes(peer_public)


def _aead(own: ChannelKeyPair, peer_public: bytes, peer: X25519PublicKey, context: bytes) -> AESGCM:
    return AESGCM(_derive(own, peer_public, peer, HKDF_LABEL, context))


def mask_key(own: ChannelKeyPair, peer_public: bytes, context: bytes) -> bytes:
    """The 32-byte key two keyholders share for their zero-sum decryption masks (``he.decrypt``).

    Same X25519 agreement as the sealed channel, a separate HKDF label: the coordinator, which
    only relays the (signed) public keys, cannot compute it.
    """
    peer = _check_peer(own, peer_public, "peer_public")
    _check_bytes("context", context)
    return _derive(own, peer_public, peer, MASK_LABEL, context)


def _derive(
    own: ChannelKeyPair, peer_public: bytes, peer: X25519PublicKey, label: bytes, context: bytes
) -> bytes:
    """HKDF-SHA256 of the X25519 secret; info binds the label, both public keys and the context."""
    try:
        shared = own._private.exchange(peer)
    except ValueError:
        raise CiphertextError(
            "peer public key is a low-order X25519 point (expected a valid peer key)"
        ) from None
    lo, hi = sorted((own.public_bytes(), peer_public))
    info = label + lo + hi + context
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=None, info=info).derive(shared)


def seal(sender: ChannelKeyPair, recipient_public: bytes, plaintext: bytes, context: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` for ``recipient_public`` under ``context``.

    ``context`` (e.g. run id + sender id + recipient id) is bound into the key and the
    associated data; the recipient must pass the same bytes to :func:`open_sealed`.
    """
    peer = _check_peer(sender, recipient_public, "recipient_public")
    _check_bytes("plaintext", plaintext)
    _check_bytes("context", context)
    aead = _aead(sender, recipient_public, peer, context)
    header = bytes([VERSION])
    nonce = os.urandom(NONCE_LEN)
    return header + nonce + aead.encrypt(nonce, plaintext, header + context)


def open_sealed(recipient: ChannelKeyPair, sender_public: bytes, sealed: bytes, context: bytes) -> bytes:
    """Verify and decrypt the output of :func:`seal`; raise ``CiphertextError`` on any failure."""
    peer = _check_peer(recipient, sender_public, "sender_public")
    _check_bytes("sealed", sealed)
    _check_bytes("context", context)
    if len(sealed) < MIN_SEALED_LEN:
        raise CiphertextError(
            f"sealed share is {len(sealed)} bytes (expected at least {MIN_SEALED_LEN}: "
            f"1 version + {NONCE_LEN} nonce + {TAG_LEN} tag)"
        )
    if sealed[0] != VERSION:
        raise CiphertextError(
            f"sealed share has channel version 0x{sealed[0]:02x} (expected 0x{VERSION:02x})"
        )
    header, nonce, body = sealed[:1], sealed[1 : 1 + NONCE_LEN], sealed[1 + NONCE_LEN :]
    aead = _aead(recipient, sender_public, peer, context)
    try:
        return aead.decrypt(nonce, body, header + context)
    except InvalidTag:
        raise CiphertextError(
            "sealed share failed authentication (expected one sealed by sender_public for this "
            "recipient under the same context; wrong key or context, or the bytes were altered)"
        ) from None

"""Tests of the pairwise share channel (X25519 + HKDF-SHA256 + AES-256-GCM)."""

from __future__ import annotations

import copy
import os
import pickle

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from he.channel import (
    HKDF_LABEL,
    MIN_SEALED_LEN,
    NONCE_LEN,
    TAG_LEN,
    ChannelKeyPair,
    _derive,
    mask_key,
    open_sealed,
    seal,
)
from he.errors import CiphertextError

CTX = b"run-7|from=hospital-1|to=hospital-2"


@pytest.fixture()
def pair() -> tuple[ChannelKeyPair, ChannelKeyPair]:
    return ChannelKeyPair.generate(), ChannelKeyPair.generate()


@pytest.mark.parametrize("size", [0, 1, 31, 32, 257, 4096, 1 << 20])
def test_round_trip_random_payloads(pair, size):
    alice, bob = pair
    plaintext = os.urandom(size)
    sealed = seal(alice, bob.public_bytes(), plaintext, CTX)
    assert len(sealed) == 1 + NONCE_LEN + size + TAG_LEN
    assert open_sealed(bob, alice.public_bytes(), sealed, CTX) == plaintext


def test_public_bytes_is_32_raw_bytes(pair):
    alice, bob = pair
    assert isinstance(alice.public_bytes(), bytes)
    assert len(alice.public_bytes()) == 32
    assert alice.public_bytes() != bob.public_bytes()


@pytest.mark.parametrize(
    ("sealer", "opener", "claimed_sender"),
    [
        pytest.param("alice", "eve", "alice", id="third_party_cannot_open"),
        pytest.param("alice", "bob", "mallory", id="wrong_claimed_sender_cannot_open"),
        # The server seals under its own key but the recipient trusts alice's genuine key.
        pytest.param("server", "bob", "alice", id="server_forgery_with_own_key_is_rejected"),
    ],
)
def test_a_share_opens_only_between_its_sender_and_recipient(pair, sealer, opener, claimed_sender):
    """A share alice seals for bob; each case puts an outsider's key in one of the three roles."""
    alice, bob = pair
    keys = {"alice": alice, "bob": bob} | {
        name: ChannelKeyPair.generate() for name in ("eve", "mallory", "server")
    }
    sealed = seal(keys[sealer], bob.public_bytes(), b"share", CTX)
    with pytest.raises(CiphertextError):
        open_sealed(keys[opener], keys[claimed_sender].public_bytes(), sealed, CTX)


@pytest.mark.parametrize(
    "where",
    ["version", "nonce_first", "nonce_last", "body_first", "body_middle", "tag_first", "tag_last"],
)
def test_single_byte_flip_is_detected(pair, where):
    alice, bob = pair
    plaintext = os.urandom(64)
    sealed = bytearray(seal(alice, bob.public_bytes(), plaintext, CTX))
    body_start = 1 + NONCE_LEN
    tag_start = len(sealed) - TAG_LEN
    position = {
        "version": 0,
        "nonce_first": 1,
        "nonce_last": NONCE_LEN,
        "body_first": body_start,
        "body_middle": (body_start + tag_start) // 2,
        "tag_first": tag_start,
        "tag_last": len(sealed) - 1,
    }[where]
    for mask in (0x01, 0x80, 0xFF):
        tampered = bytearray(sealed)
        tampered[position] ^= mask
        with pytest.raises(CiphertextError):
            open_sealed(bob, alice.public_bytes(), bytes(tampered), CTX)


def test_wrong_version_names_expected(pair):
    alice, bob = pair
    sealed = seal(alice, bob.public_bytes(), b"share", CTX)
    with pytest.raises(CiphertextError, match="expected 0x01"):
        open_sealed(bob, alice.public_bytes(), b"\x02" + sealed[1:], CTX)


@pytest.mark.parametrize(
    "other_context",
    [
        b"run-8|from=hospital-1|to=hospital-2",  # replay into another run
        b"run-7|from=hospital-1|to=hospital-3",  # redirected to another recipient
        b"",
        CTX + b"\x00",
    ],
)
def test_wrong_context_raises(pair, other_context):
    alice, bob = pair
    sealed = seal(alice, bob.public_bytes(), b"share", CTX)
    with pytest.raises(CiphertextError):
        open_sealed(bob, alice.public_bytes(), sealed, other_context)


@pytest.mark.parametrize("keep", [0, 1, NONCE_LEN, MIN_SEALED_LEN - 1, MIN_SEALED_LEN, -1])
def test_truncated_input_raises(pair, keep):
    alice, bob = pair
    sealed = seal(alice, bob.public_bytes(), b"a share of some length", CTX)
    with pytest.raises(CiphertextError):
        open_sealed(bob, alice.public_bytes(), sealed[:keep], CTX)


def test_short_input_message_names_minimum(pair):
    alice, bob = pair
    with pytest.raises(CiphertextError, match=f"at least {MIN_SEALED_LEN}"):
        open_sealed(bob, alice.public_bytes(), b"\x01" * 5, CTX)


def test_two_seals_of_same_plaintext_differ(pair):
    alice, bob = pair
    first = seal(alice, bob.public_bytes(), b"same share", CTX)
    second = seal(alice, bob.public_bytes(), b"same share", CTX)
    assert first != second
    assert first[1 : 1 + NONCE_LEN] != second[1 : 1 + NONCE_LEN]
    assert open_sealed(bob, alice.public_bytes(), first, CTX) == b"same share"
    assert open_sealed(bob, alice.public_bytes(), second, CTX) == b"same share"


def test_repr_has_no_key_bytes():
    keys = ChannelKeyPair.generate()
    text = repr(keys) + str(keys)
    private = keys._private.private_bytes_raw()
    public = keys.public_bytes()
    for secret in (private, public):
        assert secret.hex() not in text
        assert secret.hex()[:8] not in text
        assert secret.hex().upper()[:8] not in text
        assert repr(secret)[2:-1] not in text
    assert text.startswith("ChannelKeyPair(")


def test_private_key_not_serializable():
    keys = ChannelKeyPair.generate()
    assert not hasattr(keys, "private_bytes")
    assert not hasattr(keys, "__dict__")
    with pytest.raises(TypeError):
        pickle.dumps(keys)
    with pytest.raises(TypeError):
        copy.deepcopy(keys)


def test_error_message_has_no_plaintext_or_key(pair):
    alice, bob = pair
    eve = ChannelKeyPair.generate()
    plaintext = b"SECRET-SHAMIR-SHARE-0123456789"
    sealed = seal(alice, bob.public_bytes(), plaintext, CTX)
    with pytest.raises(CiphertextError) as info:
        open_sealed(eve, alice.public_bytes(), sealed, CTX)
    message = str(info.value)
    assert "expected" in message
    assert "SECRET" not in message
    assert plaintext.hex() not in message
    for keys in (alice, bob, eve):
        assert keys.public_bytes().hex()[:8] not in message
        assert keys._private.private_bytes_raw().hex()[:8] not in message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


# --- one negative test per validation rule ---------------------------------------------------


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_seal_rejects_recipient_key_not_32_bytes(pair, length):
    alice, _ = pair
    with pytest.raises(CiphertextError, match="expected a 32-byte"):
        seal(alice, b"\x09" * length, b"share", CTX)


@pytest.mark.parametrize("length", [0, 31, 33])
def test_open_rejects_sender_key_not_32_bytes(pair, length):
    alice, bob = pair
    sealed = seal(alice, bob.public_bytes(), b"share", CTX)
    with pytest.raises(CiphertextError, match="expected a 32-byte"):
        open_sealed(bob, b"\x09" * length, sealed, CTX)


def test_seal_refuses_own_public_key_as_recipient(pair):
    alice, _ = pair
    with pytest.raises(CiphertextError, match="own public key"):
        seal(alice, alice.public_bytes(), b"share", CTX)


def test_open_refuses_own_public_key_as_sender(pair):
    alice, bob = pair
    sealed = seal(alice, bob.public_bytes(), b"share", CTX)
    with pytest.raises(CiphertextError, match="own public key"):
        open_sealed(bob, bob.public_bytes(), sealed, CTX)


def test_low_order_public_key_is_rejected(pair):
    alice, bob = pair
    with pytest.raises(CiphertextError, match="low-order"):
        seal(alice, bytes(32), b"share", CTX)
    sealed = seal(alice, bob.public_bytes(), b"share", CTX)
    with pytest.raises(CiphertextError, match="low-order"):
        open_sealed(bob, bytes(32), sealed, CTX)


@pytest.mark.parametrize("bad_context", ["run-7", None, 7, bytearray(CTX)])
def test_context_must_be_bytes(pair, bad_context):
    alice, bob = pair
    with pytest.raises(TypeError, match="context must be bytes"):
        seal(alice, bob.public_bytes(), b"share", bad_context)
    sealed = seal(alice, bob.public_bytes(), b"share", CTX)
    with pytest.raises(TypeError, match="context must be bytes"):
        open_sealed(bob, alice.public_bytes(), sealed, bad_context)


def test_public_key_must_be_bytes(pair):
    alice, bob = pair
    with pytest.raises(TypeError, match="recipient_public must be bytes"):
        seal(alice, bob.public_bytes().hex(), b"share", CTX)


def test_sender_must_be_a_key_pair(pair):
    _, bob = pair
    with pytest.raises(TypeError, match="ChannelKeyPair"):
        seal(os.urandom(32), bob.public_bytes(), b"share", CTX)


# --- mask keys for the zero-sum decryption masks ---------------------------------------------


def test_mask_key_is_symmetric_between_the_two_parties(pair):
    alice, bob = pair
    key = mask_key(alice, bob.public_bytes(), CTX)
    assert isinstance(key, bytes) and len(key) == 32
    assert mask_key(bob, alice.public_bytes(), CTX) == key
    assert mask_key(alice, bob.public_bytes(), CTX) == key  # deterministic


def test_mask_key_differs_per_context_and_per_pair(pair):
    alice, bob = pair
    carol = ChannelKeyPair.generate()
    key = mask_key(alice, bob.public_bytes(), CTX)
    others = {
        mask_key(alice, bob.public_bytes(), b"run-8|from=hospital-1|to=hospital-2"),
        mask_key(alice, bob.public_bytes(), b""),
        mask_key(alice, bob.public_bytes(), CTX + b"\x00"),
        mask_key(alice, carol.public_bytes(), CTX),
        mask_key(bob, carol.public_bytes(), CTX),
    }
    assert key not in others and len(others) == 5


def test_third_party_cannot_derive_the_mask_key(pair):
    alice, bob = pair
    eve = ChannelKeyPair.generate()
    key = mask_key(alice, bob.public_bytes(), CTX)
    # eve knows both public keys (the coordinator relays them) but neither private key
    assert mask_key(eve, alice.public_bytes(), CTX) != key
    assert mask_key(eve, bob.public_bytes(), CTX) != key


def test_mask_key_is_not_the_channel_key(pair):
    """Separate HKDF labels: a mask key never equals (and so never reveals) the AEAD key that
    seals the Shamir shares between the same two hospitals under the same context."""
    alice, bob = pair
    aead_key = _derive(
        alice, bob.public_bytes(), X25519PublicKey.from_public_bytes(bob.public_bytes()), HKDF_LABEL, CTX
    )
    assert mask_key(alice, bob.public_bytes(), CTX) != aead_key
    sealed = seal(alice, bob.public_bytes(), b"share", CTX)
    nonce, body = sealed[1 : 1 + NONCE_LEN], sealed[1 + NONCE_LEN :]
    assert AESGCM(aead_key).decrypt(nonce, body, sealed[:1] + CTX) == b"share"  # the right key
    with pytest.raises(InvalidTag):
        AESGCM(mask_key(alice, bob.public_bytes(), CTX)).decrypt(nonce, body, sealed[:1] + CTX)


def test_mask_key_refuses_own_key_as_peer(pair):
    alice, _ = pair
    with pytest.raises(CiphertextError, match="own public key"):
        mask_key(alice, alice.public_bytes(), CTX)


@pytest.mark.parametrize(
    ("peer", "context", "error", "message"),
    [
        (b"\x09" * 31, CTX, CiphertextError, "expected a 32-byte"),
        (bytes(32), CTX, CiphertextError, "low-order"),
        ("not bytes", CTX, TypeError, "peer_public must be bytes"),
        (None, CTX, TypeError, "peer_public must be bytes"),
        ("peer", "run-7", TypeError, "context must be bytes"),
    ],
    ids=["short", "low-order", "str-key", "none-key", "str-context"],
)
def test_mask_key_refuses_bad_inputs(pair, peer, context, error, message):
    alice, bob = pair
    peer = bob.public_bytes() if peer == "peer" else peer
    with pytest.raises(error, match=message):
        mask_key(alice, peer, context)


def test_mask_key_needs_a_key_pair(pair):
    _, bob = pair
    with pytest.raises(TypeError, match="ChannelKeyPair"):
        mask_key(os.urandom(32), bob.public_bytes(), CTX)

"""Hospital identities (``he.identity``): Ed25519 key files and signed statements."""

from __future__ import annotations

import copy
import json
import os
import pickle
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from he.errors import SignatureError
from he.identity import (
    DOMAIN,
    MAX_SIGNED_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    SigningKey,
    open_signed,
    statement,
)

FIELDS = {"federation": "fed-1", "round": 3, "update": "ab" * 32, "parties": [1, 2, 4]}


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- key files -----------------------------------------------------------------------------------


def test_save_and_load_with_mode_0600(key, tmp_path):
    path = tmp_path / "hospital.key"
    key.save(path)
    assert _mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = SigningKey.load(path)
    assert loaded.public_bytes() == key.public_bytes()
    signed = loaded.sign("test", FIELDS)
    assert open_signed(signed, "test", key.public_bytes(), "statement") == FIELDS


def test_save_over_a_readable_file_leaves_it_0600(key, tmp_path):
    path = tmp_path / "hospital.key"
    path.write_text("old")
    path.chmod(0o644)
    key.save(path)
    assert _mode(path) == 0o600
    assert SigningKey.load(path).public_bytes() == key.public_bytes()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o601])
def test_key_readable_by_others_refused(key, tmp_path, mode):
    path = tmp_path / "hospital.key"
    key.save(path)
    path.chmod(mode)
    with pytest.raises(PermissionError, match=rf"readable by others; run: chmod 600 {path}"):
        SigningKey.load(path)
    path.chmod(0o400)  # owner read-only is fine
    assert SigningKey.load(path).public_bytes() == key.public_bytes()


def test_missing_key_file_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a PEM Ed25519 key"):
        SigningKey.load(tmp_path / "absent.key")


def _write_private(path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a key",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ],
    ids=["empty", "text", "bad-pem"],
)
def test_unreadable_key_file_refused(tmp_path, content):
    path = tmp_path / "hospital.key"
    _write_private(path, content)
    with pytest.raises(SignatureError, match="is not an unencrypted PEM Ed25519 key"):
        SigningKey.load(path)


def test_encrypted_pem_refused(key, tmp_path):
    path = tmp_path / "hospital.key"
    pem = key._private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    _write_private(path, pem)
    with pytest.raises(SignatureError, match="not an unencrypted PEM Ed25519 key"):
        SigningKey.load(path)


@pytest.mark.parametrize("make", [X25519PrivateKey.generate, lambda: generate_private_key(SECP256R1())],
                         ids=["x25519", "p256"])  # fmt: skip
def test_key_of_another_algorithm_refused(tmp_path, make):
    path = tmp_path / "hospital.key"
    pem = make().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(path, pem)
    with pytest.raises(SignatureError, match="is not an Ed25519 key"):
        SigningKey.load(path)


def test_constructor_takes_only_an_ed25519_key():
    with pytest.raises(TypeError, match="expected an Ed25519PrivateKey, got X25519PrivateKey"):
        SigningKey(X25519PrivateKey.generate())


def test_private_key_never_shown_or_copied(key):
    private = key._private.private_bytes_raw()
    text = repr(key) + str(key)
    assert private.hex()[:8] not in text
    assert text.startswith("SigningKey(public=" + key.public_bytes().hex()[:16])
    assert not hasattr(key, "__dict__")
    with pytest.raises(TypeError, match="cannot be pickled or copied"):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        copy.deepcopy(key)


def test_public_key_and_signature_sizes(key):
    assert len(key.public_bytes()) == PUBLIC_KEY_BYTES
    signed = json.loads(key.sign("test", FIELDS))
    assert len(bytes.fromhex(signed["signature"])) == SIGNATURE_BYTES
    assert SigningKey.generate().public_bytes() != key.public_bytes()


# -- signed statements ---------------------------------------------------------------------------


def test_statement_is_domain_label_and_canonical_json():
    text = statement("hello", {"b": 1, "a": [1, 2]})
    assert text == DOMAIN + b"\0hello\0" + b'{"a":[1,2],"b":1}'
    assert statement("hello", {"a": [1, 2], "b": 1}) == text  # key order does not matter
    assert statement("dealing", {"b": 1, "a": [1, 2]}) != text
    with pytest.raises(ValueError):
        statement("hello", {"x": float("nan")})  # no non-finite numbers in what is signed


def test_signed_statement_opens_to_its_fields(key):
    signed = key.sign("contribution", FIELDS)
    assert open_signed(signed, "contribution", key.public_bytes(), "contribution of alpha") == FIELDS
    assert open_signed(bytearray(signed), "contribution", key.public_bytes(), "x") == FIELDS


def test_signature_by_another_key_refused(key):
    signed = SigningKey.generate().sign("contribution", FIELDS)
    with pytest.raises(SignatureError, match="contribution of alpha: the signature does not verify"):
        open_signed(signed, "contribution", key.public_bytes(), "contribution of alpha")


def test_signature_for_another_label_refused(key):
    signed = key.sign("dealing", FIELDS)
    with pytest.raises(SignatureError, match="expected a 'contribution' statement, got 'dealing'"):
        open_signed(signed, "contribution", key.public_bytes(), "x")
    # relabelling the envelope does not help: the label is inside what is signed
    message = json.loads(signed)
    message["label"] = "contribution"
    with pytest.raises(SignatureError, match="the signature does not verify"):
        open_signed(json.dumps(message).encode(), "contribution", key.public_bytes(), "x")


@pytest.mark.parametrize(
    "alter",
    [
        lambda f: f | {"round": 4},
        lambda f: f | {"update": "cd" * 32},
        lambda f: f | {"parties": [1, 2, 3]},
        lambda f: f | {"extra": 1},
        lambda f: {k: v for k, v in f.items() if k != "round"},
        lambda f: f | {"round": 3.0},
        lambda f: f | {"round": "3"},
    ],
    ids=["round", "update", "parties", "added", "removed", "float", "string"],
)
def test_signature_over_altered_fields_refused(key, alter):
    message = json.loads(key.sign("contribution", FIELDS))
    message["fields"] = alter(message["fields"])
    with pytest.raises(SignatureError, match="the signature does not verify"):
        open_signed(json.dumps(message).encode(), "contribution", key.public_bytes(), "x")


def test_altered_signature_refused(key):
    message = json.loads(key.sign("contribution", FIELDS))
    signature = bytearray.fromhex(message["signature"])
    for position in (0, 31, 63):
        tampered = bytearray(signature)
        tampered[position] ^= 1
        message["signature"] = tampered.hex()
        with pytest.raises(SignatureError, match="does not verify"):
            open_signed(json.dumps(message).encode(), "contribution", key.public_bytes(), "x")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"label": "contribution", "fields": {}}',
        b'{"label": "contribution", "signature": "00"}',
        b'{"label": "contribution", "fields": {}, "signature": "zz"}',
        b'{"fields": {}, "signature": "00"}',
        b'{"label": "contribution", "fields": {"x": NaN}, "signature": "00"}',
        b'{"label": "contribution", "fields": {"x": Infinity}, "signature": "00"}',
        b"[" * 100_000,
    ],
    ids=["empty", "text", "list", "no-signature", "no-fields", "bad-hex", "no-label", "nan", "inf", "deep"],
)
def test_unreadable_statement_refused(key, data):
    with pytest.raises(SignatureError, match="x: not a readable signed statement"):
        open_signed(data, "contribution", key.public_bytes(), "x")


def test_fields_must_be_an_object(key):
    message = json.loads(key.sign("contribution", FIELDS))
    message["fields"] = [1, 2]
    with pytest.raises(SignatureError, match="expected a 'contribution' statement"):
        open_signed(json.dumps(message).encode(), "contribution", key.public_bytes(), "x")


def test_oversized_or_non_bytes_statement_refused(key):
    signed = key.sign("contribution", FIELDS)
    with pytest.raises(SignatureError, match=f"at most {MAX_SIGNED_BYTES} bytes"):
        open_signed(signed + b" " * MAX_SIGNED_BYTES, "contribution", key.public_bytes(), "x")
    with pytest.raises(SignatureError, match="expected a signed statement"):
        open_signed(signed.decode(), "contribution", key.public_bytes(), "x")


@pytest.mark.parametrize("public", [b"", b"\x00" * 31, b"\x00" * 33], ids=["empty", "31", "33"])
def test_malformed_public_key_refused(key, public):
    with pytest.raises(SignatureError, match="does not verify"):
        open_signed(key.sign("contribution", FIELDS), "contribution", public, "x")


def test_error_messages_carry_no_key_material(key, tmp_path):
    private = key._private.private_bytes_raw()
    path = tmp_path / "hospital.key"
    key.save(path)
    pem = path.read_bytes()
    path.chmod(0o644)
    errors = []
    for bad in (
        lambda: SigningKey.load(path),
        lambda: open_signed(SigningKey.generate().sign("x", FIELDS), "x", key.public_bytes(), "x"),
        lambda: open_signed(pem, "x", key.public_bytes(), "x"),
    ):
        with pytest.raises((SignatureError, PermissionError)) as info:
            bad()
        errors.append(str(info.value) + repr(info.value))
    body = b"".join(pem.splitlines()[1:-1]).decode()
    for text in errors:
        assert private.hex()[:12] not in text
        assert body[:16] not in text and body[-16:] not in text

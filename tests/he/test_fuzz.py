"""Fuzzing every parser of untrusted bytes: whatever arrives, the error is a typed ``HEError``.

A server that lies can send anything; a crash (RecursionError, OverflowError, a numpy error)
would stop a hospital's daemon or the server's run. Each test mutates valid messages (flipped
bytes, cuts, extensions, replaced metadata, hostile JSON) and random bytes; 2000 cases each,
12k in all.
"""

from __future__ import annotations

import contextlib
import json
import struct

import numpy as np
import pytest
from he_federation import TEST_PARAMS, build_federation, context
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from he import wire
from he.ciphertext import CiphertextSum, EncryptedUpdate
from he.decrypt import DecryptionShare
from he.errors import HEError
from he.identity import SigningKey, open_signed
from he.keygen import DealtShare
from he.roster import Roster
from he.transcript import hello_sender, sign_contribution, sign_hello, verify_contribution

CASES = settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,  # the same cases in every run: CI never flakes on a new one
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HEADER = struct.Struct("<4sBB16sI")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
hostile_json = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * depth),  # deep nesting
    st.sampled_from([b"NaN", b"Infinity", b'{"shape": [Infinity, 2]}', b'{"shape": [1e400, 4096]}']),
    st.binary(max_size=64),
)


@pytest.fixture(scope="module")
def ctx():
    return context(TEST_PARAMS.name)


@pytest.fixture(scope="module")
def valid(ctx):
    """One valid frame of each kind, and the pieces to rebuild them."""
    fed = build_federation(ctx, 3, threshold=2)
    update = EncryptedUpdate.from_bytes(ctx, fed.encrypt(1, [np.ones(30)], 10, fed.label()), "h1")
    request = fed.request(update, [1, 2, 3], [1, 2, 3])
    share = fed.share(1, request)
    return {
        "update": update.to_bytes(ctx),
        "layout": update.layout,
        "share": share.to_bytes(ctx),
        "dealt": DealtShare(residues=share.polys[0]).to_bytes(ctx),
    }


def mutate(data: bytes, where: int, value: int, cut: int, extra: bytes, how: int) -> bytes:
    where %= max(1, len(data))
    if how == 0:  # flip one byte
        return data[:where] + bytes([data[where] ^ (value or 1)]) + data[where + 1 :]
    if how == 1:  # cut
        return data[: cut % max(1, len(data))]
    if how == 2:  # extend
        return data + extra
    if how == 3:  # rewrite the metadata length
        return data[: HEADER.size - 4] + struct.pack("<I", value * 2654435761 % 2**32) + data[HEADER.size :]
    return data[:where] + extra + data[where:]  # insert


mutations = st.tuples(
    st.integers(0, 2**31),
    st.integers(0, 255),
    st.integers(0, 2**31),
    st.binary(max_size=32),
    st.integers(0, 4),
)


def reframe(data: bytes, meta: bytes) -> bytes:
    """The same frame with its metadata replaced by ``meta`` (header length fixed up)."""
    magic, version, kind, fingerprint, length = HEADER.unpack_from(data)
    body = data[HEADER.size + length :]
    return HEADER.pack(magic, version, kind, fingerprint, len(meta)) + meta + body


def only_typed_errors(parse, data: bytes) -> None:
    """``parse`` either accepts ``data`` or raises an ``HEError``; anything else fails the test."""
    with contextlib.suppress(HEError):
        parse(data)


@CASES
@given(mutation=mutations, meta=hostile_json, replace_meta=st.booleans())
def test_encrypted_update_parser(ctx, valid, mutation, meta, replace_meta):
    data = reframe(valid["update"], meta) if replace_meta else mutate(valid["update"], *mutation)
    only_typed_errors(lambda d: EncryptedUpdate.from_bytes(ctx, d, "h"), data)
    total = CiphertextSum(ctx, valid["layout"])
    only_typed_errors(lambda d: total.add(7, d), data)


@CASES
@given(mutation=mutations, meta=hostile_json, replace_meta=st.booleans())
def test_decryption_share_parser(ctx, valid, mutation, meta, replace_meta):
    data = reframe(valid["share"], meta) if replace_meta else mutate(valid["share"], *mutation)
    only_typed_errors(lambda d: DecryptionShare.from_bytes(ctx, d, "h"), data)


@CASES
@given(mutation=mutations, random=st.binary(max_size=200), use_random=st.booleans())
def test_dealt_share_parser(ctx, valid, mutation, random, use_random):
    data = random if use_random else mutate(valid["dealt"], *mutation)
    only_typed_errors(lambda d: DealtShare.from_bytes(ctx, d, "h"), data)


@pytest.fixture(scope="module")
def signed():
    keys = {f"h{i}": SigningKey.generate() for i in range(3)}
    roster = Roster.create("fuzz", {n: k.public_bytes() for n, k in keys.items()}, min_contributors=2)
    hello = sign_hello(keys["h0"], roster, "h0", 1, bytes(32), bytes(range(32)))
    frame = b"frame"
    run = b"r" * 32
    contribution = sign_contribution(
        keys["h1"], roster, run, "train", 1, 2, frame, 1, 40, {"a": 1}, "model:x"
    )
    return roster, hello, contribution, frame


@CASES
@given(mutation=mutations, fields=json_values, replace_fields=st.booleans())
def test_signed_statement_parsers(signed, mutation, fields, replace_fields):
    roster, hello, contribution, frame = signed
    if replace_fields:
        message = json.loads(hello)
        message["fields"] = fields
        hello = json.dumps(message).encode()
    else:
        hello = mutate(hello, *mutation)
    only_typed_errors(lambda d: hello_sender(roster, d), hello)
    only_typed_errors(lambda d: open_signed(d, "hello", roster.hospital(1).signing_key, "h"), hello)
    statement = mutate(contribution, *mutation)
    only_typed_errors(lambda d: verify_contribution(roster, b"r" * 32, "train", 1, 2, d, frame), statement)


@CASES
@given(mutation=mutations, value=json_values, key=st.sampled_from(["threshold", "hospitals", "committee",
       "min_contributors", "max_attempts", "federation_id", "format"]))  # fmt: skip
def test_roster_parser(signed, mutation, value, key):
    roster = signed[0]
    only_typed_errors(Roster.from_bytes, mutate(roster.to_bytes(), *mutation))
    altered = roster.to_json() | {key: value}
    only_typed_errors(Roster.from_bytes, json.dumps(altered).encode())


@CASES
@given(meta=hostile_json)
def test_frame_metadata_parser(meta):
    only_typed_errors(lambda d: wire.parse_meta(d, "frame"), meta)

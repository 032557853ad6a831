"""``he.seal_blob`` reads and writes real SEAL 4.x objects, and refuses anything else."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
import tenseal.sealapi as seal

from he.errors import CiphertextError
from he.seal_blob import (
    COMPR_NONE,
    COMPR_ZSTD,
    HEADER,
    POLY_META,
    SEAL_MAGIC,
    BlobFile,
    PolyBlob,
    build_poly_blob,
    parse_poly_blob,
    parse_secret_key,
)

SCALE = 2.0**40


@pytest.fixture(scope="module")
def single_key(test_ctx):
    """A plain single-key SEAL setup under the test parameters (no threshold involved)."""
    keygen = seal.KeyGenerator(test_ctx.seal)
    public_key = seal.PublicKey()
    keygen.create_public_key(public_key)
    return keygen.secret_key(), public_key


@pytest.fixture(scope="module")
def scratch():
    blob_file = BlobFile()
    yield blob_file
    blob_file.close()


def save(obj, scratch: BlobFile) -> bytes:
    obj.save(scratch.path)
    return scratch.read()


def encrypt(ctx, public_key, values: list[float]) -> seal.Ciphertext:
    plaintext = seal.Plaintext()
    seal.CKKSEncoder(ctx.seal).encode(values, SCALE, plaintext)
    ciphertext = seal.Ciphertext()
    seal.Encryptor(ctx.seal, public_key).encrypt(plaintext, ciphertext)
    return ciphertext


def decrypt(ctx, secret_key, ciphertext) -> np.ndarray:
    plaintext = seal.Plaintext()
    seal.Decryptor(ctx.seal, secret_key).decrypt(ciphertext, plaintext)
    return np.array(seal.CKKSEncoder(ctx.seal).decode_double(plaintext))


def test_ciphertext_round_trip(test_ctx, single_key, scratch):
    secret_key, public_key = single_key
    values = np.random.default_rng(0).uniform(-1, 1, test_ctx.n // 2)
    raw = save(encrypt(test_ctx, public_key, values.tolist()), scratch)
    blob = parse_poly_blob(raw)
    assert blob.parms_id == test_ctx.data_parms_id
    assert blob.is_ntt_form  # CKKS ciphertexts live in NTT form
    assert blob.scale == SCALE
    assert blob.polys.shape == (2, len(test_ctx.data_moduli), test_ctx.n)
    assert np.all(blob.polys < test_ctx.data_moduli.reshape(-1, 1))
    rebuilt = build_poly_blob(blob)
    reparsed = parse_poly_blob(rebuilt)
    assert (reparsed.parms_id, reparsed.is_ntt_form, reparsed.scale) == (blob.parms_id, True, SCALE)
    assert np.array_equal(reparsed.polys, blob.polys)
    # SEAL itself loads our bytes, and they still decrypt to the message
    loaded = seal.Ciphertext()
    loaded.load(test_ctx.seal, scratch.write(rebuilt))
    np.testing.assert_allclose(decrypt(test_ctx, secret_key, loaded), values, atol=1e-6)
    again = parse_poly_blob(save(loaded, scratch))
    assert again.parms_id == blob.parms_id and again.scale == blob.scale
    assert np.array_equal(again.polys, blob.polys)


def test_modified_ciphertext_changes_the_decryption(test_ctx, single_key, scratch):
    """The arrays really are the ciphertext: adding 1 to c0 under every prime shifts the phase."""
    secret_key, public_key = single_key
    blob = parse_poly_blob(save(encrypt(test_ctx, public_key, [0.5] * 8), scratch))
    # +Delta*X^0 in coefficient form is +Delta in every NTT slot: adds Delta/scale to the decoding
    delta = int(SCALE)
    shift = np.array([delta % int(q) for q in test_ctx.data_moduli], dtype=np.uint64).reshape(-1, 1)
    polys = blob.polys.copy()
    polys[0] = (polys[0] + shift) % test_ctx.data_moduli.reshape(-1, 1)  # no overflow: q < 2^61
    loaded = seal.Ciphertext()
    loaded.load(test_ctx.seal, scratch.write(build_poly_blob(PolyBlob(blob.parms_id, True, polys, SCALE))))
    decoded = decrypt(test_ctx, secret_key, loaded)
    # a constant polynomial Delta decodes to 1.0 in every slot
    np.testing.assert_allclose(decoded[:8], 1.5, atol=1e-6)


def test_public_key_round_trip(test_ctx, single_key, scratch):
    """Key-level objects (one more prime, the special one) parse and rebuild too."""
    secret_key, public_key = single_key
    blob = parse_poly_blob(save(public_key, scratch))
    assert blob.parms_id == tuple(test_ctx.seal.key_parms_id())
    assert blob.is_ntt_form
    assert blob.polys.shape == (2, len(test_ctx.key_moduli), test_ctx.n)
    assert np.all(blob.polys < test_ctx.key_moduli.reshape(-1, 1))
    # rebuilt bytes load into SEAL as a PublicKey that still encrypts to the secret key
    loaded = seal.PublicKey()
    loaded.load(test_ctx.seal, scratch.write(build_poly_blob(blob)))
    assert np.array_equal(parse_poly_blob(save(loaded, scratch)).polys, blob.polys)
    values = [0.25, -0.75, 0.125]
    decoded = decrypt(test_ctx, secret_key, encrypt(test_ctx, loaded, values))
    np.testing.assert_allclose(decoded[:3], values, atol=1e-6)


def test_secret_key_parses_to_a_ternary_polynomial(test_ctx, single_key, scratch):
    secret_key, _ = single_key
    residues = parse_secret_key(save(secret_key, scratch)).reshape(len(test_ctx.key_moduli), test_ctx.n)
    scratch.write(b"")
    coefficients = test_ctx.intt(residues[None, :-1])[0]
    lifted = []
    for row, q in zip(coefficients, test_ctx.data_moduli.tolist(), strict=True):
        assert set(np.unique(row).tolist()) <= {0, 1, q - 1}
        lifted.append(np.where(row == q - 1, -1, row.astype(np.int64)))
    assert all(np.array_equal(lifted[0], row) for row in lifted[1:])  # one integer polynomial
    assert 0.5 < np.mean(lifted[0] != 0) < 0.85  # ~2/3 non-zero


def test_ntt_matches_seal(test_ctx):
    """HEContext.ntt/intt (SEAL's NTT through a packed ciphertext) are inverse and linear."""
    rng = np.random.default_rng(1)
    shape = (3, len(test_ctx.data_moduli), test_ctx.n)
    polys = (rng.integers(0, 2**62, shape, dtype=np.uint64) % test_ctx.data_moduli.reshape(-1, 1)).astype(
        np.uint64
    )
    assert np.array_equal(test_ctx.intt(test_ctx.ntt(polys)), polys)
    assert np.array_equal(test_ctx.ntt(polys[:1]), test_ctx.ntt(polys)[:1])  # single-poly path
    one = np.zeros(shape[1:], dtype=np.uint64)
    one[:, 0] = 1  # the constant 1 transforms to all ones
    assert np.all(test_ctx.ntt(one[None]) == 1)


# -- garbage -----------------------------------------------------------------------------------


def _header(magic=SEAL_MAGIC, size=HEADER.size, compr=COMPR_NONE, total=None, body=b"") -> bytes:
    total = HEADER.size + len(body) if total is None else total
    return HEADER.pack(magic, size, 4, 3, compr, 0, total) + body


@pytest.fixture(scope="module")
def valid_blob(test_ctx, single_key, scratch) -> bytes:
    return build_poly_blob(parse_poly_blob(save(single_key[1], scratch)))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda v: b"", "shorter than its 16-byte header"),
        (lambda v: os.urandom(15), "shorter than its 16-byte header"),
        (lambda v: os.urandom(4096), "not a SEAL object"),
        (lambda v: _header(magic=0xA15F, body=v[16:]), "not a SEAL object"),
        (lambda v: _header(size=17, body=v[16:]), "not a SEAL object"),
        (lambda v: v + b"\0", "not a SEAL object"),
        (lambda v: v[:-8], "not a SEAL object"),
        (lambda v: _header(compr=1, body=v[16:]), "unsupported SEAL compression mode 1"),
        (lambda v: _header(compr=7, body=v[16:]), "unsupported SEAL compression mode 7"),
    ],
    ids=["empty", "short", "random", "magic", "header-size", "longer", "shorter", "zlib", "mode-7"],
)
def test_garbage_refused(valid_blob, make, message):
    with pytest.raises(CiphertextError, match=message):
        parse_poly_blob(make(valid_blob))


def test_inconsistent_array_count_refused(valid_blob):
    body = bytearray(valid_blob[HEADER.size :])
    # the poly metadata says one more prime than the array holds
    fields = list(POLY_META.unpack_from(body))
    fields[7] += 1  # number of primes
    POLY_META.pack_into(body, 0, *fields)
    with pytest.raises(CiphertextError, match="SEAL array holds"):
        parse_poly_blob(_header(body=bytes(body)))
    # the array's own count disagrees with its length
    body = bytearray(valid_blob[HEADER.size :])
    count_at = POLY_META.size + HEADER.size
    (count,) = struct.unpack_from("<Q", body, count_at)
    struct.pack_into("<Q", body, count_at, count - 1)
    with pytest.raises(CiphertextError, match="SEAL array holds"):
        parse_poly_blob(_header(body=bytes(body)))


def test_zstd_compressed_blob_parses(valid_blob):
    import zstandard

    body = zstandard.ZstdCompressor().compress(valid_blob[HEADER.size :])
    compressed = _header(compr=COMPR_ZSTD, body=body)
    assert np.array_equal(parse_poly_blob(compressed).polys, parse_poly_blob(valid_blob).polys)

"""One negative test per refusal of a malformed encrypted update or wire frame: truncated,
extended or corrupt frames, residues out of range, bad metadata or shapes, frames made under
other parameters or for another run (refused by the sender's name), and the server's sum, which
refuses a second update, a claimed aggregate or another layout from one hospital and keeps the
others'; the 60-bit residue packing at its edges and the frame kinds of wire v3.

Parameters and encodings are in ``test_validation_params.py``; dealt shares, Shamir points,
decryption shares and secrets in error messages in ``test_validation_shares.py``.
The refusals of ``he.roster``, ``he.identity`` and ``he.transcript`` are in ``test_roster.py``,
``test_identity.py`` and ``test_transcript.py``; those of ``he.channel`` in ``test_channel.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from he_federation import _set_last_residue, params

from he import keygen, wire
from he.ciphertext import KINDS, CiphertextLabel, CiphertextSum, EncryptedUpdate, SecretKeyEncryptor
from he.context import HEContext
from he.errors import CiphertextError

# -- encrypted updates on the wire ------------------------------------------------------------


def test_encrypted_update_round_trip(test_ctx, encrypted):
    update, blob = encrypted
    back = EncryptedUpdate.from_bytes(test_ctx, blob, "h1")
    assert back.layout == update.layout
    assert back.contributors == 1
    assert np.array_equal(back.c0, update.c0)
    assert not hasattr(back, "c1")  # only c0 travels
    assert len(blob) < test_ctx.params.ciphertext_bytes + 200


@pytest.mark.parametrize("kind", ["training", "", "TRAIN", None])
def test_ciphertext_kind_not_in_kinds_refused(kind):
    assert KINDS == ("train", "statistics")
    with pytest.raises(CiphertextError, match=r"kind must be one of \('train', 'statistics'\)"):
        CiphertextLabel("fed", b"run", kind, 1)


def test_update_needing_too_many_ciphertexts_refused(federation5):
    ctx = HEContext(params(name="test-one-ciphertext", max_ciphertexts=1))
    encryptor = SecretKeyEncryptor(ctx, keygen.gen_secret(ctx))
    label = federation5.label()
    encryptor.encrypt([np.zeros(ctx.params.values_per_ciphertext - 8)], 10, label)  # one: fine
    with pytest.raises(CiphertextError, match="the update needs 2 ciphertexts; the preset allows 1"):
        encryptor.encrypt([np.zeros(ctx.params.values_per_ciphertext)], 10, label)


def test_foreign_ciphertext_refused(test_ctx, encrypted):
    update, blob = encrypted
    other = HEContext(params(name="test-other", clip=32.0))  # same primes, other parameters
    assert np.array_equal(other.data_moduli, test_ctx.data_moduli)
    with pytest.raises(
        CiphertextError,
        match="encrypted update from h7: made under other HE parameters or for another federation or run "
        r"\(fingerprint [0-9a-f]{32}, expected",
    ):
        EncryptedUpdate.from_bytes(other, blob, "h7")
    total = CiphertextSum(other, update.layout)
    with pytest.raises(CiphertextError, match=r"hospital 7.*fingerprint"):
        total.add(7, blob)
    assert total.contributors == []


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda b: _set_last_residue(b, (1 << 64) - 1), "residues out of range for their primes"),
        (lambda b: b[:-1], "residue block of"),
        (lambda b: b[: len(b) // 2], "residue block of"),
        (lambda b: b + b"\0" * 8, "residue block of"),
        (lambda b: b[:20], "too short for a fedquorum frame"),
        (lambda b: b"", "too short"),
        (lambda b: b"FQHX" + b[4:], "bad magic or version"),
        (lambda b: b[:4] + bytes([wire.VERSION - 1]) + b[5:], "bad magic or version"),
        (lambda b: b[:5] + bytes([wire.Kind.DECRYPTION_SHARE]) + b[6:], "ENCRYPTED_UPDATE frame, got kind 3"),
        (lambda b: b[:26] + b"x" + b[27:], "unreadable frame metadata"),
    ],
    ids=["u64-max", "truncated-1", "truncated-poly", "extended", "header-only", "empty",
         "bad-magic", "v2-frame", "wrong-kind", "bad-json"],
)  # fmt: skip
def test_corrupt_encrypted_update_refused(test_ctx, encrypted, corrupt, message):
    update, blob = encrypted
    with pytest.raises(CiphertextError, match=message):
        EncryptedUpdate.from_bytes(test_ctx, corrupt(blob), "h3")
    total = CiphertextSum(test_ctx, update.layout)
    with pytest.raises(CiphertextError, match="hospital 3"):
        total.add(3, corrupt(blob))
    assert total.contributors == []


def test_residue_equal_to_prime_refused(test_ctx, encrypted):
    _, blob = encrypted
    q_last = int(test_ctx.data_moduli[-1])
    with pytest.raises(CiphertextError, match="out of range"):
        EncryptedUpdate.from_bytes(test_ctx, _set_last_residue(blob, q_last), "h3")
    EncryptedUpdate.from_bytes(test_ctx, _set_last_residue(blob, q_last - 1), "h3")  # q-1 is valid


def _reframe(update: EncryptedUpdate, ctx, meta: dict, c0: np.ndarray | None = None) -> bytes:
    return wire.pack(wire.Kind.ENCRYPTED_UPDATE, ctx.fingerprint, meta, update.c0 if c0 is None else c0)


def test_bad_metadata_refused(test_ctx, encrypted):
    update, _ = encrypted
    layout = update.layout.to_json()
    cases = [
        ({"contributors": 1}, "invalid layout"),
        ({"layout": layout}, "'contributors' must be an integer"),
        ({"layout": layout, "contributors": "x"}, "'contributors' must be an integer"),
        ({"layout": layout, "contributors": 1.0}, "'contributors' must be an integer"),
        ({"layout": "nonsense", "contributors": 1}, "invalid layout"),
        ({"layout": layout, "contributors": 0}, "expected"),
        ({"layout": {**layout, "clip": -1.0}, "contributors": 1}, "invalid layout"),
        ({"layout": {**layout, "weight_scale": 0}, "contributors": 1}, "invalid layout"),
        ({"layout": {**layout, "weight_scale": 2.5}, "contributors": 1}, "invalid layout"),
        ({"layout": {**layout, "weight_scale": True}, "contributors": 1}, "invalid layout"),
        ({"layout": {"shapes": [[50], [-7]], "clip": 1.0, "weight_scale": 5}, "contributors": 1}, "layout"),
        (
            {"layout": {"shapes": [[2**32, 2**32], [40]], "clip": 1.0, "weight_scale": 5}, "contributors": 1},
            "layout",
        ),
        (
            {"layout": {"shapes": [[100000]], "clip": 1.0, "weight_scale": 5}, "contributors": 1},
            rf"shape \(1, 4, {update.coefficients}\), expected \(13, 4, 4096\)",
        ),
    ]
    for meta, message in cases:
        with pytest.raises(CiphertextError, match=message):
            EncryptedUpdate.from_bytes(test_ctx, _reframe(update, test_ctx, meta), "h2")
    good = {"layout": layout, "contributors": 1}
    EncryptedUpdate.from_bytes(test_ctx, _reframe(update, test_ctx, good), "h2")
    doubled = np.concatenate([update.c0, update.c0])
    k = update.coefficients
    with pytest.raises(CiphertextError, match=rf"shape \(2, 4, {k}\), expected \(1, 4, {k}\)"):
        EncryptedUpdate.from_bytes(test_ctx, _reframe(update, test_ctx, good, doubled), "h2")
    # residues framed for 3 primes instead of 4
    with pytest.raises(CiphertextError, match="expected 4 primes"):
        EncryptedUpdate.from_bytes(test_ctx, _reframe(update, test_ctx, good, update.c0[:, :3]), "h2")
    # a (c0, c1) pair, as protocol v1 sent, is not a c0-only update
    pair = np.stack([update.c0[0], update.c0[0]])[None]
    with pytest.raises(CiphertextError, match=rf"shape \(1, 2, 4, {k}\), expected \(1, 4, {k}\)"):
        EncryptedUpdate.from_bytes(test_ctx, _reframe(update, test_ctx, good, pair), "h2")


def test_upload_claiming_several_contributors_refused(test_ctx, encrypted):
    update, _ = encrypted
    claimed = _reframe(update, test_ctx, {"layout": update.layout.to_json(), "contributors": 3})
    assert EncryptedUpdate.from_bytes(test_ctx, claimed, "h2").contributors == 3  # a valid aggregate
    total = CiphertextSum(test_ctx, update.layout)
    with pytest.raises(CiphertextError, match="from hospital 2: claims 3 contributors, expected 1"):
        total.add(2, claimed)
    assert total.contributors == []


def test_wrong_layout_in_sum_names_contributor_and_keeps_sum(federation5, encrypted, encryptor):
    """The round's layout is the server's, not the first reply's: a first reply with another
    layout (layout poisoning) is refused and the honest updates after it are still summed."""
    ctx = federation5.ctx
    update, blob = encrypted
    label = federation5.label()
    other, _ = encryptor.encrypt([np.zeros(50), np.zeros(8)], 10, label)  # 58 values instead of 57
    total = CiphertextSum(ctx, update.layout)
    with pytest.raises(CiphertextError, match=r"from hospital 2: layout .*\(50,\), \(8,\).* differs"):
        total.add(2, other.to_bytes(ctx))  # first, and still refused
    total.add(1, blob)
    with pytest.raises(CiphertextError, match=r"from hospital 2: layout .*\(50,\), \(8,\).* differs"):
        total.add(2, other.to_bytes(ctx))
    narrower, _ = encryptor.encrypt([np.zeros(50), np.zeros(7)], 10, label, clip=0.5)
    with pytest.raises(CiphertextError, match=r"from hospital 3: .*clip=0.5.* differs from the round's"):
        total.add(3, narrower.to_bytes(ctx))
    rescaled, _ = encryptor.encrypt([np.zeros(50), np.zeros(7)], 10, label, weight_scale=77)
    with pytest.raises(CiphertextError, match="from hospital 4: layout"):
        total.add(4, rescaled.to_bytes(ctx))
    assert total.contributors == [1]
    assert total.result.contributors == 1
    assert np.array_equal(total.result.c0, update.c0)


def test_duplicate_contributor_refused(test_ctx, encrypted):
    update, blob = encrypted
    total = CiphertextSum(test_ctx, update.layout)
    total.add(1, blob)
    with pytest.raises(CiphertextError, match="from hospital 1: a second update this round"):
        total.add(1, blob)
    assert total.contributors == [1]
    assert np.array_equal(total.result.c0, update.c0)


def test_empty_sum_has_no_result(test_ctx, encrypted):
    with pytest.raises(CiphertextError, match="no valid encrypted update"):
        _ = CiphertextSum(test_ctx, encrypted[0].layout).result


def test_residue_packing_round_trips_at_the_edges() -> None:
    from he.wire import pack_residues, packed_size, unpack_residues

    rng = np.random.default_rng(5)
    values = rng.integers(0, 1 << 60, 1000, dtype=np.uint64)
    values[:4] = [0, (1 << 60) - 1, 1, (1 << 60) - 2]
    body = pack_residues(values)
    assert len(body) == packed_size(values.size) == 7500
    assert np.array_equal(unpack_residues(body, values.size), values)
    with pytest.raises(ValueError, match="below 2\\^60"):
        pack_residues(np.array([1 << 60, 0], dtype=np.uint64))


def test_the_wire_kinds_of_protocol_v2() -> None:
    """No c1 aggregates on the wire (v3 frames); public-key shares only for the share check
    (``he.share_check``: nobody encrypts under them), and the check polynomial."""
    assert wire.VERSION == 3
    assert {k.name for k in wire.Kind} == {
        "ENCRYPTED_UPDATE",
        "DECRYPTION_SHARE",
        "SECRET_SHARE",
        "PUBLIC_KEY_SHARE",
        "CHECK_POLYNOMIAL",
    }


def test_frames_of_another_run_refused_by_name(test_ctx, encrypted):
    """Bound contexts (``HEContext.bound(run_id)``): an update, share or dealt share made for one
    run does not parse in another, and the error names the sender."""
    update, _ = encrypted
    run_a, run_b = test_ctx.bound(b"run-a"), test_ctx.bound(b"run-b")
    frame = update.to_bytes(run_a)
    assert EncryptedUpdate.from_bytes(run_a, frame, "h1").contributors == 1
    with pytest.raises(CiphertextError, match="from h1: made under other HE parameters or for another"):
        EncryptedUpdate.from_bytes(run_b, frame, "h1")
    dealt = keygen.DealtShare(residues=update.c0[0]).to_bytes(run_a)
    with pytest.raises(CiphertextError, match="secret share from h2: made under other"):
        keygen.DealtShare.from_bytes(run_b, dealt, "h2")
    assert run_a.data_moduli is test_ctx.data_moduli  # a view: same primes and tables

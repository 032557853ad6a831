"""A keyholder that cheats: one packed field of its decryption share shifted on a payload row only,
so the share still parses and the decrypted noise stays within its bound (the attack of issue 19;
``he.share_check`` catches it). Shared by the simulation (``tests/integration/sim_helpers.py``) and
the handler-level integrity tests (``tests/client/test_share_integrity.py``)."""

from __future__ import annotations

import numpy as np

from he.decrypt import DecryptionShare


def field_position(ctx, ciphertexts: int, field: int) -> tuple[int, int, int, int]:
    """(ciphertext, field within the residue, payload row, coefficient) of a packed field
    (``he.encoding.UpdateEncoder._pack``)."""
    p = ctx.params
    grid = (ciphertexts, p.poly_modulus_degree, ctx.num_payload, p.fields_per_prime)
    c, j, row, f = (int(i) for i in np.unravel_index(field, grid))
    return c, f, row, j


def shifted_share(ctx, blob: bytes, field: int, delta: int) -> bytes:
    """The framed share ``blob`` with ``delta`` added to packed field ``field`` (payload row only)."""
    share = DecryptionShare.from_bytes(ctx, blob, "this keyholder")
    coefficients = share.polys.copy()  # coefficient form, the request's leading coefficients
    c, f, row, j = field_position(ctx, coefficients.shape[0], field)
    q = int(ctx.data_moduli[row])
    coefficients[c, row, j] = (int(coefficients[c, row, j]) + (delta << (f * ctx.params.slot_bits))) % q
    return DecryptionShare(share.party, share.round_id, share.attempt, coefficients).to_bytes(ctx)

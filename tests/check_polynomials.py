"""What the server sends a keyholder with each decryption request since the share check
(``he.share_check``): a check polynomial derived from a seed, for the tests that drive
``client.keyholder.KeyHolder`` directly. One seed per (kind, round, attempt), so a resent request
carries the same polynomial, as the server's does."""

from __future__ import annotations

import hashlib

from he import share_check, wire
from he.ciphertext import seeded_c1


def check_seed(kind: str, round_id: int, attempt: int) -> bytes:
    return hashlib.sha256(f"test-check-seed|{kind}|{round_id}|{attempt}".encode()).digest()


def check_polynomial(holder, kind: str, round_id: int, attempt: int, ciphertexts: int = 1) -> bytes:
    """The framed check polynomial of ``check_seed`` for the run ``holder`` belongs to."""
    ctx = holder.ctx
    budget = share_check.check_budget(
        ctx.params, len(holder.roster.committee), holder.roster.max_attempts, ciphertexts
    )
    challenge = share_check.derive_challenge(
        ctx, check_seed(kind, round_id, attempt), ciphertexts, budget.gain_bits
    )
    a_pk = share_check.check_key_c1(ctx, holder.roster.federation_id, holder.run_id)
    c1 = seeded_c1(ctx, holder._label(kind, round_id), ciphertexts)
    poly = share_check.check_polynomial(ctx, c1, a_pk, challenge)
    return share_check.polynomial_to_bytes(holder.frame_context(), wire.Kind.CHECK_POLYNOMIAL, poly)


def answer(holder, kind: str, round_id: int, attempt: int, keyholders, contributions) -> bytes:
    """``holder``'s decryption share for one request (its commitment is dropped)."""
    poly = check_polynomial(holder, kind, round_id, attempt)
    share, _commitment = holder.partial_decrypt(kind, round_id, attempt, keyholders, contributions, poly)
    return share

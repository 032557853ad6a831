"""The share check (``he.share_check``): honest shares pass it, and a keyholder that shifts the
payload rows of its decryption share (the attack the noise bound cannot see) is caught, at every
position of the decryption set, in three committee shapes, unless it guesses the server's gain.

The attacker here is a keyholder that knows everything a keyholder knows when it answers: its
own shares, the request, the check polynomial it was sent; not the server's seed.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import pytest
from he_federation import (
    MAX_ATTEMPTS,
    TEST_PARAMS,
    average_tolerance,
    build_federation,
    max_abs_error,
    random_updates,
    tampered,
    weighted_average,
)

from he.ciphertext import seeded_c1
from he.decrypt import DecryptionShare, combine, decrypt_update, gen_decryption_share, pairwise_masks
from he.errors import InsecureParametersError, ShareMismatchError
from he.modarith import mul_scalar
from he.params import PRESETS
from he.share_check import (
    CHECK_STREAM,
    CheckBudget,
    check_budget,
    check_key_c1,
    check_polynomial,
    commitment,
    derive_challenge,
    derives,
    polynomial_digest,
    public_key_share,
    verify,
)
from he.threshold import sum_shares

SHIFT = 12_345  # what the cheater adds to one field residue: far beyond any quantization step


@pytest.fixture(scope="module")
def nn_federation(test_ctx):
    """4 parties, 4-of-4 committee: every keyholder in every decryption set."""
    return build_federation(test_ctx, 4)


@pytest.fixture(params=["3-of-5", "6-of-10", "4-of-4"])
def shape(request, federation5, federation10, nn_federation):
    """(federation, contributors U, decryption set T) of one committee shape."""
    return {
        "3-of-5": (federation5, [1, 2, 3, 5], (1, 2, 4, 5)),
        "6-of-10": (federation10, [1, 2, 3, 4, 5, 6, 7, 8], (1, 2, 3, 5, 6, 7, 8, 10)),
        "4-of-4": (nn_federation, [1, 2, 3, 4], (1, 2, 3, 4)),
    }[request.param]


@dataclass
class CheckedDecryption:
    """One decryption of U's aggregate by T, with the check: everything the server holds."""

    fed: object
    aggregate: object
    request: object
    shares: list[DecryptionShare]
    public_key: np.ndarray
    check_poly: np.ndarray
    budget: CheckBudget

    def check_shares(self) -> list[DecryptionShare]:
        """What each member of T opens: its share of the check polynomial (masks of their own stream)."""
        fed, request = self.fed, self.request
        return [
            gen_decryption_share(
                fed.ctx,
                request,
                k,
                self.check_poly[None],
                fed.key_share(k, list(request.contributors)),
                pairwise_masks(fed.ctx, k, fed.mask_keys(k, request.keyholders), request, [CHECK_STREAM]),
                self.budget.smudging_bits,
            )
            for k in request.keyholders
        ]


def decryption(fed, contributors, keyholders, sizes=(300, 41), budget=None, seed=None):
    """The aggregate of ``contributors``, T's shares, and a check with ``seed`` (default: fresh)."""
    ctx = fed.ctx
    updates, counts = random_updates(TEST_PARAMS, len(contributors), sizes, seed=5)
    aggregate = fed.encrypt_all(updates, counts, contributors)
    request = fed.request(aggregate, contributors, keyholders)
    a_pk = check_key_c1(ctx, fed.federation_id, fed.run_id)
    keys = [public_key_share(ctx, fed.secrets[i - 1], a_pk) for i in contributors]  # set-up's pk_i
    public_key = sum_shares(keys, ctx.data_moduli)  # the server's P_U
    budget = budget or check_budget(
        ctx.params, len(fed.quorum.committee), MAX_ATTEMPTS, request.num_ciphertexts
    )
    challenge = derive_challenge(ctx, seed or os.urandom(32), request.num_ciphertexts, budget.gain_bits)
    check_poly = check_polynomial(
        ctx, seeded_c1(ctx, request.label, request.num_ciphertexts), a_pk, challenge
    )
    checked = CheckedDecryption(fed, aggregate, request, fed.shares(request), public_key, check_poly, budget)
    return checked, challenge, (updates, counts)


def test_honest_shares_pass_the_check_and_decrypt_the_sum(shape):
    fed, contributors, keyholders = shape
    checked, challenge, (updates, counts) = decryption(fed, contributors, keyholders)
    ctx = fed.ctx
    verify(
        ctx,
        checked.request,
        checked.shares,
        checked.check_shares(),
        checked.public_key,
        challenge,
        checked.budget,
    )
    fields = combine(ctx, checked.aggregate, checked.shares, checked.request, fed.noise_bits)
    average, total = decrypt_update(ctx, checked.aggregate, fields)
    assert total == sum(counts)
    assert max_abs_error(average, weighted_average(updates, counts)) < average_tolerance(ctx.params, counts)


def test_a_shifted_decryption_share_is_caught_at_every_position(shape):
    """The attack of issue 19: a shift on one payload residue passes the noise bound and moves a
    decoded field; with the check, it fails for every member of T that tries it."""
    fed, contributors, keyholders = shape
    checked, challenge, _ = decryption(fed, contributors, keyholders)
    ctx = fed.ctx
    honest_checks = checked.check_shares()
    reference = combine(ctx, checked.aggregate, checked.shares, checked.request, fed.noise_bits)
    for position in range(len(keyholders)):
        shares = list(checked.shares)
        shares[position] = tampered(ctx, shares[position], 17, SHIFT, [0])
        moved = combine(ctx, checked.aggregate, shares, checked.request, fed.noise_bits)
        assert not np.array_equal(moved, reference), "the shift must get past the noise bound"
        with pytest.raises(ShareMismatchError, match="check value"):
            verify(ctx, checked.request, shares, honest_checks, checked.public_key, challenge, checked.budget)


def test_a_shift_of_a_later_ciphertext_is_caught(federation5):
    """Each ciphertext has its own gain: a shift of the second one of two is caught too."""
    checked, challenge, _ = decryption(federation5, [1, 2, 3], (1, 2, 3, 4), sizes=(9000,))
    ctx = federation5.ctx
    assert checked.request.num_ciphertexts == 2
    shares = [tampered(ctx, checked.shares[0], 4000, SHIFT, [1], ciphertext=1), *checked.shares[1:]]
    with pytest.raises(ShareMismatchError, match="check value"):
        verify(
            ctx,
            checked.request,
            shares,
            checked.check_shares(),
            checked.public_key,
            challenge,
            checked.budget,
        )


def test_a_cheater_passes_only_when_it_guesses_the_gain(federation5):
    """With 2-bit gains (1..3, for the test only) a cheater that scales its check-share shift by its
    guess g0 passes exactly when the server's gain is g0: its chance is one in 2^a - 1."""
    ctx, guess = federation5.ctx, 2
    real = check_budget(ctx.params, 5, MAX_ATTEMPTS, 1)
    budget = CheckBudget(2, real.smudging_bits, real.bound_bits)
    outcomes = {}
    for attempt in range(40):
        seed = attempt.to_bytes(32, "little")
        checked, challenge, _ = decryption(federation5, [1, 2, 3], (1, 2, 3, 4), budget=budget, seed=seed)
        checks = checked.check_shares()
        shares = [tampered(ctx, checked.shares[0], 17, SHIFT, [0]), *checked.shares[1:]]
        checks[0] = tampered(ctx, checks[0], 17, guess * SHIFT, [0])
        try:
            verify(ctx, checked.request, shares, checks, checked.public_key, challenge, budget)
            outcomes.setdefault(challenge.gains[0], set()).add("passed")
        except ShareMismatchError:
            outcomes.setdefault(challenge.gains[0], set()).add("caught")
        if len(outcomes) == 3:
            break
    assert outcomes == {1: {"caught"}, 2: {"passed"}, 3: {"caught"}}


def test_a_check_polynomial_the_revealed_seed_does_not_derive_is_not_opened(federation5):
    """The server must not pick the multiplier a keyholder's share is opened on (docs/security.md,
    item 4): a keyholder opens only after the seed re-derives the check polynomial it was sent."""
    ctx = federation5.ctx
    seed, other = os.urandom(32), os.urandom(32)
    label = federation5.label()
    c1 = seeded_c1(ctx, label, 1)
    a_pk = check_key_c1(ctx, federation5.federation_id, federation5.run_id)
    bits = check_budget(ctx.params, 5, MAX_ATTEMPTS, 1).gain_bits
    honest = polynomial_digest(check_polynomial(ctx, c1, a_pk, derive_challenge(ctx, seed, 1, bits)))
    assert derives(ctx, honest, seed, c1, a_pk, bits)
    huge_multiplier = mul_scalar(c1[0], 1 << 40, ctx.data_moduli)  # W * c1: would reveal c1*s mod 2^j
    assert not derives(ctx, polynomial_digest(huge_multiplier), seed, c1, a_pk, bits)
    assert not derives(ctx, honest, other, c1, a_pk, bits)
    assert not derives(ctx, honest, seed, c1, a_pk, bits + 1)


def test_an_opened_check_share_must_match_its_commitment_and_uses_masks_of_its_own(federation5):
    checked, _, _ = decryption(federation5, [1, 2, 3], (1, 2, 3, 4))
    ctx, request = federation5.ctx, checked.request
    opened = checked.check_shares()[0].to_bytes(ctx)
    committed = commitment(request, 1, opened)
    assert commitment(request, 1, opened) == committed
    assert commitment(request, 1, opened[:-1] + bytes([opened[-1] ^ 1])) != committed
    assert commitment(request, 2, opened) != committed
    keys = federation5.mask_keys(1, request.keyholders)
    share_masks = pairwise_masks(ctx, 1, keys, request)
    check_masks = pairwise_masks(ctx, 1, keys, request, [CHECK_STREAM])
    assert not np.array_equal(share_masks[0], check_masks[0]), "equal masks would unmask d_k - d'_k"


def test_the_check_budget_per_preset():
    """Every preset holds at least a 17-bit check for the largest committee (32 keyholders, 16
    attempts) and a model in one ciphertext; 64 ciphertexts with such a committee do not fit
    ``compact`` (its gains would add 6 bits), and the noise primes of the old ``small`` (2 x 50
    bits) held none."""
    assert check_budget(PRESETS["compact"], 32, 16, 1).gain_bits == 17
    assert check_budget(PRESETS["compact"], 5, 3, 1).gain_bits == 25
    assert check_budget(PRESETS["precise"], 32, 16, 1).gain_bits == 19
    assert check_budget(PRESETS["small"], 32, 16, 1).gain_bits == 20
    with pytest.raises(InsecureParametersError, match="64 ciphertexts"):
        check_budget(PRESETS["compact"], 32, 16, 64)
    old_small = dataclasses.replace(PRESETS["small"], name="old-small", coeff_modulus_bits=(50,) * 4 + (18,))
    with pytest.raises(InsecureParametersError, match="old-small: the noise primes"):
        check_budget(old_small, 3, 3, 1)

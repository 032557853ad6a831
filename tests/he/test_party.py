"""A hospital's protocol steps (``he.party``), which ``client.keyholder`` and ``bench_he`` share:
a dealt share opens for its keyholder and run only, and t of them give back the secret."""

from __future__ import annotations

import numpy as np
import pytest

from he import party, transcript
from he.channel import ChannelKeyPair
from he.errors import CiphertextError
from he.identity import SigningKey
from he.keygen import gen_secret
from he.roster import Roster
from he.threshold import interpolate_at

NAMES = ("alpha", "beta", "gamma")
RUN_ID, OTHER_RUN = bytes(range(32)), bytes(32)


@pytest.fixture(scope="module")
def signers() -> dict[int, SigningKey]:
    return {party_index: SigningKey.generate() for party_index in (1, 2, 3)}


@pytest.fixture(scope="module")
def roster(signers) -> Roster:
    """Three hospitals, all keyholders, threshold 2."""
    keys = {NAMES[i - 1]: key.public_bytes() for i, key in signers.items()}
    return Roster.create("fed-party", keys, threshold=2, min_contributors=2, committee_size=3)


@pytest.fixture(scope="module")
def channels() -> dict[int, ChannelKeyPair]:
    return {i: ChannelKeyPair.generate() for i in (1, 2, 3)}


@pytest.fixture(scope="module")
def dealing(test_ctx, channels):
    """Dealer 1's secret, its own share and the shares it sealed for keyholders 2 and 3."""
    secret = gen_secret(test_ctx)
    keys = {i: pair.public_bytes() for i, pair in channels.items()}
    own, sealed = party.deal(
        test_ctx, test_ctx.bound(RUN_ID), secret, 2, [1, 2, 3], 1, channels[1], keys, RUN_ID
    )
    return secret, own, sealed


def open_share(test_ctx, roster, signers, channels, sealed, keyholder: int, run_id: bytes = RUN_ID):
    statement = transcript.sign_dealing(signers[1], run_id, 1, sealed, b"public-key share")
    return party.open_dealt_share(
        test_ctx,
        test_ctx.bound(run_id),
        roster,
        run_id,
        1,
        keyholder,
        channels[keyholder],
        channels[1].public_bytes(),
        statement,
        sealed[keyholder],
    )


def test_the_dealer_keeps_its_own_share_and_seals_one_per_other_keyholder(dealing):
    _, own, sealed = dealing
    assert own is not None
    assert sorted(sealed) == [2, 3]


def test_threshold_many_opened_shares_give_back_the_secret(test_ctx, roster, signers, channels, dealing):
    secret, own, sealed = dealing
    share3 = open_share(test_ctx, roster, signers, channels, sealed, 3).expand(test_ctx)
    recovered = interpolate_at(0, {1: own, 3: share3}, test_ctx.data_moduli)
    assert np.array_equal(recovered, secret.residues)


def test_a_share_sealed_for_one_keyholder_does_not_open_for_another(
    test_ctx, roster, signers, channels, dealing
):
    _, _, sealed = dealing
    with pytest.raises(CiphertextError):  # signed as gamma's, but sealed to beta's key and context
        open_share(test_ctx, roster, signers, channels, {**sealed, 3: sealed[2]}, 3)


def test_a_share_sealed_for_one_run_does_not_open_in_another(test_ctx, roster, signers, channels, dealing):
    _, _, sealed = dealing
    with pytest.raises(CiphertextError):  # signed for the other run, but sealed under this one's context
        open_share(test_ctx, roster, signers, channels, sealed, 2, run_id=OTHER_RUN)

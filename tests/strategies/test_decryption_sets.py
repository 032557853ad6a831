"""Elimination: a keyholder whose shares fail the noise check is named and then left out."""

from __future__ import annotations

import itertools

import pytest

from he.roster import Quorum
from strategies.decryption_sets import DecryptionSets


def decrypt(sets: DecryptionSets, available: set[int], cheater: int, attempts: int):
    """One decryption against an oracle: a set fails iff it holds the cheater. Returns the
    successful set (or None) and the suspects named."""
    sets.begin()
    for _ in range(attempts):
        chosen = sets.choose(available)
        assert chosen is not None and len(chosen) == sets.min_size and set(chosen) <= available
        if cheater in chosen:
            sets.failed(chosen)
        else:
            sets.succeeded(chosen)
            return chosen, sets.finish()
    return None, sets.finish()


@pytest.mark.parametrize(("committee", "threshold"), [(5, 3), (6, 2), (10, 6), (16, 11), (16, 8)])
def test_a_cheater_is_always_named_and_soon_left_out(committee: int, threshold: int) -> None:
    """Whatever the cheater's position and the tie-breaks: every decryption that met it names it,
    an honest member of a passing set is never named, and once named it is met in at most two
    more of the next eleven decryptions (each costing one extra attempt, not the round)."""
    quorum = Quorum(tuple(range(1, committee + 1)), threshold)
    for cheater, seed in itertools.product(quorum.committee, range(5)):
        sets = DecryptionSets(quorum.min_decryption_set, seed)
        available = set(quorum.committee)
        met_after_naming, named = [], False
        for _ in range(12):
            succeeded, suspects = decrypt(sets, available, cheater, attempts=3)
            met = cheater in sets.failures
            if met:
                assert cheater in suspects
                assert not set(suspects) & set(succeeded or ())
            elif named:
                assert succeeded is not None and suspects == []
            met_after_naming.append(met and named)
            named = named or met
        assert sum(met_after_naming) <= 2


def test_every_set_has_the_quorum_minimum_and_any_two_share_t_members() -> None:
    quorum = Quorum(tuple(range(1, 17)), 11)
    sets = DecryptionSets(quorum.min_decryption_set, seed=1)
    chosen = []
    for cheater in (3, 9, 14):
        sets.begin()
        for _ in range(3):
            members = sets.choose(quorum.committee)
            quorum.check_decryption_set(members)
            chosen.append(set(members))
            sets.failed(members) if cheater in members else sets.succeeded(members)
    assert all(len(a & b) >= quorum.threshold for a, b in itertools.combinations(chosen, 2))


def test_a_silent_keyholder_is_asked_last_and_too_few_left_gives_none() -> None:
    sets = DecryptionSets(min_size=3, seed=0)
    sets.silent([2])
    for _ in range(10):
        assert 2 not in sets.choose({1, 2, 3, 4})
    assert sets.choose({1, 2}) is None

"""A hospital refuses decryption requests that could reveal more than one round's aggregate."""

import numpy as np
import pytest

from client.keyholder import KeyHolder, RefusedRequest


@pytest.fixture(scope="module")
def holders() -> list[KeyHolder]:
    """Three hospitals after n-of-n key set-up (real precise preset)."""
    hs = [KeyHolder("precise", party=j, num_parties=3, threshold=3, run_id=7) for j in (1, 2, 3)]
    hello = [h.hello() for h in hs]
    contributions = [c for c, _ in hello]
    keys = {j + 1: k for j, (_, k) in enumerate(hello)}
    for h in hs:
        h.keygen(contributions, keys)
    return hs


def c1_of(holder: KeyHolder) -> np.ndarray:
    return np.ones((1, len(holder.ctx.data_moduli), holder.ctx.n), dtype=np.uint64)


def test_keygen_refuses_a_seed_without_own_contribution() -> None:
    h = KeyHolder("precise", party=1, num_parties=2, threshold=2, run_id=1)
    h.hello()
    with pytest.raises(RefusedRequest, match="omits this hospital's contribution"):
        h.keygen([b"\0" * 32, b"\1" * 32], {})


def test_refuses_a_second_decryption_of_the_same_round(holders) -> None:
    h = holders[0]
    h.trained_round = 1
    h.partial_decrypt(1, c1_of(h), [1, 2, 3], 2)
    with pytest.raises(RefusedRequest, match="already decrypted"):
        h.partial_decrypt(1, c1_of(h), [1, 2, 3], 2)


def test_refuses_too_few_contributors(holders) -> None:
    h = holders[1]
    h.trained_round = 1
    with pytest.raises(RefusedRequest, match="fewer than the minimum"):
        h.partial_decrypt(1, c1_of(h), [2], 2)


def test_refuses_a_round_it_did_not_reach(holders) -> None:
    h = holders[2]
    h.trained_round = 1
    with pytest.raises(RefusedRequest, match="last trained round 1"):
        h.partial_decrypt(5, c1_of(h), [1, 2, 3], 2)


def test_refuses_an_aggregate_that_omits_its_own_update(holders) -> None:
    h = holders[2]
    h.trained_round = 2
    with pytest.raises(RefusedRequest, match="missing from the aggregate"):
        h.partial_decrypt(2, c1_of(h), [1, 2], 2)


def test_secrets_never_show_in_repr(holders) -> None:
    text = repr(holders[0])
    assert "secrets" not in text and "decryption-key" not in text


def test_statistics_passes_decrypt_once_and_only_if_sent(holders) -> None:
    h = holders[1]
    with pytest.raises(RefusedRequest, match="never sent"):
        h.partial_decrypt(-1, c1_of(h), [1, 2, 3], 2)
    h.statistics_rounds.append(-1)
    h.partial_decrypt(-1, c1_of(h), [1, 2, 3], 2)
    with pytest.raises(RefusedRequest, match="already decrypted"):
        h.partial_decrypt(-1, c1_of(h), [1, 2, 3], 2)

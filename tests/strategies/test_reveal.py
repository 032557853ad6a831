"""The reveal on its own: whom it asks, and the skip it returns when no decryption set is left."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.supercore.task_identity import TaskIdentity

from common import protocol as p
from common.simulated_federation import write_simulated_federation
from he.context import HEContext
from he.params import preset
from models.pooled_metrics import EvaluationLayout
from strategies.decryption_sets import DecryptionSets
from strategies.plausibility import AggregateChecks
from strategies.reachability import Reachability
from strategies.reveal import Reveal, Skipped

NODES = {1: 11, 2: 22, 3: 33, 4: 44}  # party -> Flower node id, as the set-up leaves them
STATEMENTS = {1: b"s1", 2: b"s2", 3: b"s3"}  # the signed contributions of U


class SilentKeyholders:
    """An exchange in which no keyholder answers; records what was sent."""

    def __init__(self) -> None:
        self.sent: list[list] = []

    def __call__(self, messages, what):
        self.sent.append(messages)
        return iter(())


def reveal(tmp_path: Path, online: list[int], exchange) -> Reveal:
    """2-of-4: a decryption set needs ceil((4 + 2)/2) = 3 keyholders."""
    roster = write_simulated_federation(tmp_path, 4, threshold=2)
    grid = SimpleNamespace(get_node_ids=lambda: online)
    reachability = Reachability(roster, dict(NODES), set(), grid=grid)
    ctx = HEContext(preset("compact"))
    checks = AggregateChecks(EvaluationLayout(2, 10), dp=False)
    public_keys = {party: np.zeros((len(ctx.data_moduli), ctx.n), np.uint64) for party in STATEMENTS}
    sets = DecryptionSets(3, seed=0)
    return Reveal(roster, b"run", ctx, reachability, sets, checks, exchange, public_keys)


def test_a_round_the_keyholders_left_cannot_serve_asks_no_one(tmp_path: Path) -> None:
    exchange = SilentKeyholders()
    result = reveal(tmp_path, [11, 22, 33, 44], exchange).decrypt(
        "train", 2, SimpleNamespace(num_ciphertexts=1, coefficients=2), STATEMENTS, None, replied={11, 22}
    )
    assert result == Skipped(
        "keyholder(s) hospital-3 (silent this round), hospital-4 (silent this round) missing: "
        "2 of 4 keyholders left, a decryption set needs 3"
    )
    assert exchange.sent == []


def test_silent_keyholders_are_left_out_until_too_few_are_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for field in ("_run_id", "_node_id", "_task_id"):  # messages are built as inside a ServerApp
        monkeypatch.setattr(TaskIdentity, field, 1)
    exchange = SilentKeyholders()
    result = reveal(tmp_path, [11, 22, 33, 44], exchange).decrypt(
        "train", 2, SimpleNamespace(num_ciphertexts=1, coefficients=2), STATEMENTS, None
    )
    assert result == Skipped("1 keyholders left, a decryption set needs 3")
    (first,) = exchange.sent  # one attempt: its three keyholders said nothing
    assert len({m.metadata.dst_node_id for m in first}) == 3
    assert {m.metadata.message_type for m in first} == {p.DECRYPT}
    config = first[0].content[p.CONFIG]
    assert (config[p.ROUND], config[p.ATTEMPT]) == (2, 1)

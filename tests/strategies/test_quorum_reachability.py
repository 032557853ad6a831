"""Who is left to decrypt: a round that no decryption set can serve is skipped at once (no
message sent, no timeout waited), a run whose restarted keyholders leave too few stops, and a
hospital that restarted is named as such."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from common import protocol as p
from common.settings import RunSettings
from common.simulated_federation import write_simulated_federation
from server.tracking import rounds_completed
from strategies.encrypted_fedavg import EncryptedFedAvg
from strategies.reachability import Reachability
from strategies.run_record import RoundFailedError, RoundNotes

NODES = {1: 11, 2: 22, 3: 33, 4: 44}  # party -> Flower node id, as the set-up leaves them


class OfflineGrid:
    """A grid on which only ``online`` nodes are connected; sending anything fails the test."""

    def __init__(self, online: list[int]) -> None:
        self.online = online

    def get_node_ids(self) -> list[int]:
        return list(self.online)

    def push_messages(self, messages):
        raise AssertionError("a round no decryption set can serve must send no message")


def strategy_after_setup(
    tmp_path: Path, hospitals: int, threshold: int, online: list[int]
) -> EncryptedFedAvg:
    strategy = EncryptedFedAvg(RunSettings(num_rounds=3, threshold=threshold))
    strategy.roster = write_simulated_federation(tmp_path, hospitals, threshold=threshold)
    strategy.party_nodes = {k: NODES[k] for k in range(1, hospitals + 1)}
    strategy.node_ids = list(strategy.party_nodes.values())
    strategy.grid = OfflineGrid(online)
    strategy.reachability = Reachability(
        strategy.roster, strategy.party_nodes, strategy.keys_lost, strategy.grid
    )
    return strategy


def restart_reply(node_id: int) -> SimpleNamespace:
    """The error reply of a hospital whose node restarted after the set-up (``client.refusals.KeysLost``)."""
    reason = f"<class 'client.refusals.KeysLost'>:<'{p.KEYS_LOST}: this hospital holds no key set-up'>"
    return SimpleNamespace(
        has_error=lambda: True,
        error=SimpleNamespace(code=0, reason=reason),
        metadata=SimpleNamespace(src_node_id=node_id),
    )


def test_an_offline_keyholder_of_an_n_of_n_committee_skips_the_round_at_once(tmp_path: Path) -> None:
    strategy = strategy_after_setup(tmp_path, 3, threshold=0, online=[11, 22])
    delta, metrics, missing = strategy.play_round(2, [np.zeros(2)], strategy.grid)
    assert delta is None and dict(metrics) == {"contributors": 0, "round_skipped": 1}
    assert missing == ["hospital-3"]
    assert strategy.notes.outcome == (
        "skipped at once: keyholder(s) hospital-3 (offline) missing: 2 of 3 keyholders left, "
        "a decryption set needs 3"
    )


def test_a_round_runs_while_the_keyholders_left_can_decrypt(tmp_path: Path) -> None:
    strategy = strategy_after_setup(tmp_path, 4, threshold=2, online=[11, 22, 33])  # sets of 3 of 4
    assert strategy.skip_reason(2) is None
    strategy.grid.online = [11, 22]
    reason, missing = strategy.skip_reason(2)
    assert missing == ["hospital-3", "hospital-4"] and "2 of 4 keyholders left" in reason


def test_a_keyholder_silent_in_the_train_phase_is_not_asked_to_decrypt(tmp_path: Path) -> None:
    """Silent (no reply, not even an error) means likely gone: asking it would cost a timeout.
    A keyholder whose training failed or was refused replied, so it is still asked."""
    strategy = strategy_after_setup(tmp_path, 3, threshold=0, online=[11, 22, 33])
    assert strategy.reachability.keyholders_down(replied={11, 33}) == {2: "silent this round"}
    assert strategy.reachability.keyholders_down(replied={11, 22, 33}) == {}
    assert strategy.reachability.quorum_shortfall({2: "silent this round"}) == (
        "keyholder(s) hospital-2 (silent this round) missing: 2 of 3 keyholders left, "
        "a decryption set needs 3"
    )
    assert strategy.reachability.quorum_shortfall({}) is None


def test_a_restarted_keyholder_is_named_and_the_run_goes_on_while_a_quorum_remains(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    strategy = strategy_after_setup(tmp_path, 4, threshold=2, online=[11, 22, 33, 44])
    reason = strategy.failure_reason(restart_reply(44))
    assert reason == f"hospital-4 failed: {p.KEYS_LOST}: this hospital holds no key set-up"
    assert strategy.keys_lost == {4}
    assert (
        f"hospital-4 {p.KEYS_LOST}: it is left out of the rest of this run (3 of 4 keyholders keep "
        "their keys, a decryption set needs 3)"
    ) in caplog.text
    assert strategy.report_missing(2, {11, 22, 33}) == [f"hospital-4 ({p.KEYS_LOST})"]  # the MLflow tag
    assert strategy.reachability.keyholders_down() == {4: p.KEYS_LOST}
    assert strategy.skip_reason(3) is None  # hospitals 1-3 still decrypt


def test_restarted_keyholders_that_leave_no_quorum_stop_the_run(tmp_path: Path) -> None:
    strategy = strategy_after_setup(tmp_path, 3, threshold=0, online=[11, 22, 33])
    strategy.failure_reason(restart_reply(33))
    with pytest.raises(RoundFailedError) as stopped:
        strategy.play_round(3, [np.zeros(2)], strategy.grid)
    assert str(stopped.value) == (
        f"round 3: keyholder(s) hospital-3 ({p.KEYS_LOST}) missing: 2 of 3 keyholders left, a decryption "
        "set needs 3; no later round can be decrypted, stopping the run (resume it once the keyholders "
        "are back)"
    )


def test_rounds_completed_counts_only_rounds_with_an_aggregate() -> None:
    history = [{"round": 1}, {"round": 2, "round_skipped": 1}, {"round": 3, "round_skipped": 0}]
    assert rounds_completed(history) == 2
    assert rounds_completed([{"round": 1, "round_skipped": 1}]) == 0
    assert rounds_completed([]) == 0


def test_the_round_line_names_contributors_decryption_set_and_outcome() -> None:
    notes = RoundNotes(["hospital-1", "hospital-2"], ["hospital-1", "hospital-2", "hospital-3"], "")
    notes.outcome = "aggregated (decryption attempt 1)"
    assert notes.line(2, 10, True, 12.34) == (
        "round 2/10: contributors hospital-1, hospital-2; decryption set hospital-1, hospital-2, "
        "hospital-3; aggregated (decryption attempt 1); 12.3 s"
    )
    assert RoundNotes().line(3, 10, False, 0.04) == (
        "round 3/10: contributors none; decryption set none; no aggregate, the previous model kept; 0.0 s"
    )

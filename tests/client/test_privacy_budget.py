"""DP is owned by the hospital: a lying coordinator's DP settings meet the real ClientApp (audit and
policy mods, then ``client.app.train``), and the hospital refuses, before anything is sent, noise
below its policy's floor, rounds its epsilon was not accounted for, and runs over its per-run or
lifetime epsilon; what it spends is in its release ledger and in the audit summary.

The runs are plaintext DP runs (``strategy=fedavg dp=distributed``, allowed by the test policy):
the budget is charged on the path both modes share, before the encrypted/plaintext split, and a
plaintext round needs no key set-up.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flower_messages import message_for
from flwr.app import Context, Message, RecordDict

from client.app import app
from client.audit import AUDIT_FILE
from client.audit_summary import main as summary_main
from client.audit_summary import read_entries
from client.ledger import DP, ReleaseLedger
from client.policy import NODE_POLICY, POLICY_FILE
from client.refusals import PolicyRefusal, RefusedRequest
from common import protocol as p
from common.settings import RunSettings
from privacy.config import KEYS as DP_KEYS
from privacy.mechanism import plan_from_config
from server.app import initial_weights

SETTINGS = RunSettings()
WEIGHTS = initial_weights(SETTINGS)  # the breast-cancer MLP: 1058 values
DELTA = 1e-5


def dp_config(noise_multiplier: float, rounds: int, server_round: int) -> dict:
    """A plaintext DP round's config as the coordinator sends it."""
    dp = {
        "dp": "distributed",
        "dp_clip_norm": 1.0,
        "dp_noise_multiplier": noise_multiplier,
        "dp_target_epsilon": 0.0,
        "dp_delta": DELTA,
        "dp_min_contributors": 2,
        "num_rounds": rounds,
        "he_preset": "precise",
    }
    return {
        **SETTINGS.task_config(),
        **{DP_KEYS[name]: value for name, value in dp.items()},
        p.ENCRYPTED: False,
        p.ROUND: server_round,
        p.FEATURE_MEAN: [0.0] * SETTINGS.num_features,
        p.FEATURE_STD: [1000.0] * SETTINGS.num_features,
    }


def run_epsilon(noise_multiplier: float, rounds: int) -> float:
    """The run's epsilon as the hospital's own code computes it."""
    return plan_from_config(dp_config(noise_multiplier, rounds, 1), WEIGHTS, "precise").epsilon(rounds, DELTA)


class Hospital:
    """One hospital's node: with a state dir, as the daemon sets it up (policy, audit log and
    ledger); without, as in simulation. A context per Flower run."""

    def __init__(self, state_dir: Path | None, policy: str = "") -> None:
        self.state_dir = state_dir
        self.node_config = {"partition-id": 0, "num-partitions": 3}
        if state_dir is not None:
            (state_dir / POLICY_FILE).write_text("require_encrypted = false\n" + policy)
            self.node_config |= {"state-dir": str(state_dir), NODE_POLICY: str(state_dir / POLICY_FILE)}
        self.contexts: dict[int, Context] = {}

    def train(self, run: int, config: dict) -> Message:
        context = self.contexts.setdefault(run, Context(run, 7, self.node_config, RecordDict(), {}))
        message = message_for(p.TRAIN, config, arrays=WEIGHTS, run_id=run, group_id=str(config[p.ROUND]))
        return app(message, context)

    def spends(self) -> list[tuple[str, int, float]]:
        return [
            (r["run"], r["round"], r["epsilon"])
            for r in ReleaseLedger.in_state_dir(self.state_dir).records(DP)
        ]

    def last_audit_line(self) -> dict:
        return read_entries(self.state_dir / AUDIT_FILE)[-1]


def assert_refused_and_nothing_sent(hospital: Hospital, spends_before: list) -> None:
    entry = hospital.last_audit_line()
    assert entry["outcome"] == "refused" and entry["sent"] == {}
    assert hospital.spends() == spends_before  # nothing charged either


def test_a_noise_multiplier_below_the_policy_floor_is_refused(tmp_path: Path) -> None:
    hospital = Hospital(tmp_path, "min_dp_noise_multiplier = 1.0\n")
    with pytest.raises(
        PolicyRefusal,
        match=re.escape("policy min_dp_noise_multiplier=1.0: this run adds noise multiplier 1e-09"),
    ):
        hospital.train(1, dp_config(1e-9, 500, 1))
    assert_refused_and_nothing_sent(hospital, [])


def test_a_round_beyond_the_accounted_rounds_is_refused(tmp_path: Path) -> None:
    hospital = Hospital(tmp_path)
    reply = hospital.train(1, dp_config(5.0, 1, 1))
    assert not reply.has_error() and p.ARRAYS in reply.content.array_records
    spent = hospital.spends()
    assert spent == [("1", 1, pytest.approx(run_epsilon(5.0, 1)))]
    with pytest.raises(
        RefusedRequest,
        match=re.escape(
            "DP round 500 is outside the 1 round(s) this run's epsilon was accounted for (dp-rounds=1)"
        ),
    ):
        hospital.train(1, dp_config(5.0, 1, 500))
    assert_refused_and_nothing_sent(hospital, spent)


def test_dp_settings_changed_or_a_round_replayed_within_a_run_are_refused(tmp_path: Path) -> None:
    hospital = Hospital(tmp_path)
    hospital.train(1, dp_config(5.0, 3, 1))
    spent = hospital.spends()
    with pytest.raises(RefusedRequest, match="DP round 1 is not after round 1"):
        hospital.train(1, dp_config(5.0, 3, 1))
    with pytest.raises(RefusedRequest, match="DP settings changed after its first round"):
        hospital.train(1, dp_config(5.0, 2, 2))  # fewer rounds: a smaller epsilon on paper
    assert_refused_and_nothing_sent(hospital, spent)
    hospital.train(1, dp_config(5.0, 3, 2))
    assert [r for _, r, _ in hospital.spends()] == [1, 2]


def test_a_run_over_the_policy_epsilon_per_run_is_refused_before_its_first_round(tmp_path: Path) -> None:
    hospital = Hospital(tmp_path)  # default max_epsilon_per_run = 10
    assert run_epsilon(1.0, 5) > 10
    with pytest.raises(
        PolicyRefusal,
        match=re.escape("policy max_epsilon_per_run=10.0: this run reaches epsilon 12.3 over its 5"),
    ):
        hospital.train(1, dp_config(1.0, 5, 1))
    assert_refused_and_nothing_sent(hospital, [])


def test_the_lifetime_budget_spent_by_one_run_refuses_the_next_before_anything_is_sent(
    tmp_path: Path, capsys
) -> None:
    per_run = run_epsilon(2.0, 2)
    hospital = Hospital(tmp_path, f"lifetime_epsilon = {1.5 * per_run}\n")
    for server_round in (1, 2):
        assert not hospital.train(1, dp_config(2.0, 2, server_round)).has_error()
    spent = hospital.spends()
    assert [(run, r) for run, r, _ in spent] == [("1", 1), ("1", 2)]
    assert spent[-1][2] == pytest.approx(per_run)  # the run's cumulative epsilon after its last round
    with pytest.raises(PolicyRefusal, match=f"policy lifetime_epsilon={1.5 * per_run}: earlier runs spent"):
        hospital.train(2, dp_config(2.0, 2, 1))
    assert_refused_and_nothing_sent(hospital, spent)

    assert summary_main(["--state-dir", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    assert f"run 1: epsilon {per_run:.4g} (delta {DELTA}) after round 2" in report
    left = 0.5 * per_run
    assert f"spent in all runs: epsilon {per_run:.4g} of the lifetime budget {1.5 * per_run:g}" in report
    assert f"left: {left:.4g}" in report
    assert "policy lifetime_epsilon=" in report  # run 2's refusal, with its reason


def test_without_a_policy_the_round_checks_still_hold() -> None:
    """Simulation (no policy, no state dir, no ledger): a round the run's epsilon does not cover
    is refused all the same."""
    hospital = Hospital(None)
    with pytest.raises(RefusedRequest, match="DP round 2 is outside the 1 round"):
        hospital.train(1, dp_config(5.0, 1, 2))


def record_config(noise_multiplier: float, rounds: int, server_round: int) -> dict:
    """A plaintext record-level (DP-SGD) round's config as the coordinator sends it."""
    config = dp_config(noise_multiplier, rounds, server_round)
    return config | {DP_KEYS["dp"]: "record"}


def test_record_level_dp_is_charged_to_the_same_ledger_and_policy(tmp_path: Path) -> None:
    """DP-SGD's epsilon is the hospital's too: the noise floor refuses before training, and what
    a round spends is in the ledger under the run; its update leaves with weight 1 (the exact
    record count is not covered by DP-SGD)."""
    hospital = Hospital(tmp_path, "min_dp_noise_multiplier = 1.0\n")
    with pytest.raises(PolicyRefusal, match=re.escape("policy min_dp_noise_multiplier=1.0")):
        hospital.train(1, record_config(0.5, 2, 1))
    assert_refused_and_nothing_sent(hospital, [])
    reply = hospital.train(2, record_config(2.0, 2, 1))
    assert not reply.has_error()
    assert reply.content.metric_records[p.METRICS][p.NUM_EXAMPLES] == 1
    [(run, server_round, epsilon)] = hospital.spends()
    assert (run, server_round) == ("2", 1) and 0 < epsilon < 10
    record = ReleaseLedger.in_state_dir(tmp_path).records(DP)[-1]
    assert record["mechanism"] == "dp-sgd"

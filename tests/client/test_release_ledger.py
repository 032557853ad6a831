"""A lying coordinator differences two runs; the hospitals' release ledgers refuse it.

Inside one run a keyholder answers one contributor set per (kind, round). Across runs the
coordinator could run the federation again (same seed, same starting model) without one
hospital, or resume a finished run from a checkpoint without it, or ask a statistics pass twice
under two round ids: the difference of the two aggregates is that hospital's update, example
count or feature means. Each test below runs such an attack against the real ClientApp
handlers (``lying_coordinator``) of four simulated hospitals with a ``state-dir`` each, and
shows it refused by every keyholder of the only valid decryption set (3-of-4: all four), by
what the hospital itself recorded in an earlier run (``client.ledger``).
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from lying_coordinator import PARTIES, Coordinator, contributions, decrypt_config, federation_of

from client import local_data as local
from client.audit import STATE_DIR_KEY
from client.ledger import ReleaseConflict, ReleaseLedger
from client.refusals import RefusedRequest
from common import protocol as p
from common.records import blobs_of
from common.settings import RunSettings
from he.roster import Roster
from server.app import initial_weights

FIRST_RUN = 77
ALREADY_RELEASED = r"release \S+/{}\S* was already released for another contributor set"
MODEL_RELEASED = ALREADY_RELEASED.format("model")


@dataclass
class Federation:
    """Four hospitals with their state dirs, and the model their first run decrypted round 1 from."""

    directory: Path
    settings: RunSettings
    roster: Roster
    node_configs: dict[int, dict]
    model: list[np.ndarray]

    def new_run(self, flower_run: int) -> Coordinator:
        """The same hospitals (same state dirs) in a new Flower run, set up honestly."""
        server = Coordinator(self.directory, self.settings, self.roster, flower_run, self.node_configs)
        server.set_up()
        return server

    def ledger(self, party: int) -> ReleaseLedger:
        return ReleaseLedger.in_state_dir(self.node_configs[party][STATE_DIR_KEY])


def share(server: Coordinator, keyholder: int, replies, contributors, round_id=1, kind="train") -> bytes:
    """``keyholder``'s decryption share of the aggregate of ``contributors``, if it answers."""
    config = decrypt_config(round_id=round_id, kind=kind)
    reply = server.send(keyholder, p.DECRYPT, config, contributions(replies, contributors))
    return blobs_of(reply)[p.DECRYPTION_SHARE]


def without(party: int) -> tuple[int, ...]:
    return tuple(q for q in PARTIES if q != party)


def test_a_release_is_claimed_for_one_contributor_set(tmp_path):
    """The ledger's own rule, without the protocol: the same set again adds nothing, another set
    is refused, naming the release and the run that made it."""
    ledger = ReleaseLedger.in_state_dir(tmp_path)
    ledger.claim_release("fed/model:x", ["b", "a"], run="r1", round=1)
    ledger.claim_release("fed/model:x", ["a", "b"], run="r2", round=5)
    with pytest.raises(
        ReleaseConflict, match=r"release fed/model:x was already released .*\(run r1, round 1\)"
    ):
        ledger.claim_release("fed/model:x", ["a"], run="r3", round=1)
    ledger.claim_release("fed/model:y", ["a"], run="r3", round=1)
    assert [(r["release_key"], r["contributors"]) for r in ledger.records("release")] == [
        ("fed/model:x", ["a", "b"]),
        ("fed/model:y", ["a"]),
    ]


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> Federation:
    """Run 1: set-up, round 1 from the initial model X, decrypted with all four hospitals."""
    directory = tmp_path_factory.mktemp("federation")
    settings, roster = federation_of(directory)
    node_configs = {q: {STATE_DIR_KEY: str(directory / f"state-{q}")} for q in PARTIES}
    fed = Federation(directory, settings, roster, node_configs, initial_weights(settings))
    server = fed.new_run(FIRST_RUN)
    replies = server.train(1, fed.model)
    assert all(share(server, k, replies, PARTIES) for k in PARTIES)
    return fed


def test_each_keyholder_recorded_the_release_in_its_own_ledger(federation):
    names = sorted(federation.roster.hospital(q).name for q in PARTIES)
    for k in PARTIES:
        (record,) = federation.ledger(k).records("release")
        assert record["contributors"] == names and record["flower_run"] == FIRST_RUN
        assert record["release_key"].startswith(f"{federation.roster.federation_id}/model:")
        assert stat.S_IMODE(federation.ledger(k).path.stat().st_mode) == 0o600


def test_an_exact_rerun_without_one_hospital_is_refused_and_the_same_hospitals_answered(federation):
    """Run 2 (a new Flower run: new KeyHolders, new secrets; only the state dirs remain) trains
    round 1 from the same model X. Whichever hospital it leaves out, every keyholder refuses
    by its ledger; the same contributor set as run 1 (a plain re-run) is answered, once."""
    server = federation.new_run(FIRST_RUN + 1)
    replies = server.train(1, federation.model)
    for left_out in PARTIES:
        for k in PARTIES:
            with pytest.raises(RefusedRequest, match=MODEL_RELEASED):
                share(server, k, replies, without(left_out))
    assert all(share(server, k, replies, PARTIES) for k in PARTIES)
    assert all(len(federation.ledger(k).records("release")) == 1 for k in PARTIES)  # nothing new


def test_resuming_from_a_decrypted_rounds_model_without_one_hospital_is_refused(federation):
    """A new run resumes at round 2 from the checkpoint of round 1's starting model X without
    hospital 4; then asks the final evaluation of X without it (it releases X's evaluation
    sums too, so it shares X's release key). Both refused; the round number does not matter."""
    server = federation.new_run(FIRST_RUN + 2)
    resumed = server.train(2, federation.model, parties=without(4))
    for k in PARTIES:
        with pytest.raises(RefusedRequest, match=MODEL_RELEASED):
            share(server, k, resumed, without(4), round_id=2)
    config = server.train_config(3)
    evaluated = {q: blobs_of(server.send(q, p.EVALUATE, config, arrays=federation.model)) for q in without(4)}
    for k in PARTIES:
        with pytest.raises(RefusedRequest, match=MODEL_RELEASED):
            share(server, k, evaluated, without(4), round_id=3)


def test_contributors_that_started_from_different_models_are_refused(federation):
    """Hospital 4 is sent another model than the others: their aggregate would mix releases."""
    server = federation.new_run(FIRST_RUN + 3)
    other = [w + 0.01 for w in federation.model]
    replies = server.train(1, other, parties=without(4)) | server.train(1, federation.model, parties=(4,))
    for k in PARTIES:
        with pytest.raises(RefusedRequest, match="different release keys"):
            share(server, k, replies, PARTIES)


def test_a_statistics_pass_is_released_for_one_set_of_hospitals_under_its_own_round_ids(federation):
    """The moments pass with everyone at round -2, then again at -1 (the 'rescaled' id) without
    hospital 4, would give away hospital 4's count and feature means: refused. A pass asked
    under another pass's round id (spread at -2) is not even encrypted."""
    server = federation.new_run(FIRST_RUN + 4)
    width = server.settings.num_features

    def statistics(q: int, pass_name: str, round_id: int) -> dict[str, bytes]:
        config = {p.STATISTICS_PASS: pass_name, p.ROUND: round_id, p.FEATURE_SCALE: [1.0] * width}
        return blobs_of(server.send(q, p.STATISTICS, config))

    for q in PARTIES:
        with pytest.raises(RefusedRequest, match="'statistics:spread' may not be released under round id -2"):
            statistics(q, "spread", -2)
    moments = {q: statistics(q, "moments", -2) for q in PARTIES}
    assert all(share(server, k, moments, PARTIES, -2, "statistics") for k in PARTIES)
    rescaled = {q: statistics(q, "moments", -1) for q in without(4)}
    for k in PARTIES:
        with pytest.raises(RefusedRequest, match=ALREADY_RELEASED.format("statistics:moments")):
            share(server, k, rescaled, without(4), -1, "statistics")


def test_a_hand_edited_ledger_makes_its_keyholder_refuse_everything(federation):
    """A ledger line changed by hand breaks the chain: hospital 1 cannot trust its record of
    what it released, so it refuses even a release it never made (fail closed)."""
    server = federation.new_run(FIRST_RUN + 5)
    fresh_model = [w - 0.01 for w in federation.model]
    replies = server.train(1, fresh_model)
    path = federation.ledger(1).path
    original = path.read_bytes()
    record = json.loads(original.splitlines()[0])
    record["contributors"] = record["contributors"][:3]
    path.write_bytes(
        json.dumps(record, sort_keys=True).encode() + b"\n" + b"\n".join(original.splitlines()[1:])
    )
    try:
        with pytest.raises(RefusedRequest, match="does not chain"):
            share(server, 1, replies, PARTIES)
    finally:
        path.write_bytes(original)
    assert all(share(server, k, replies, PARTIES) for k in PARTIES)


def test_a_rerun_from_the_same_model_trains_differently_unless_the_hospital_pinned_its_seed(
    federation, tmp_path
):
    """The coordinator's seed no longer fixes a hospital's shuffling and dropout: two runs from
    the same model give different updates, so a re-run is no exact copy. A hospital that pins
    ``training-seed`` (or a plain simulation, without a state dir) gets the same update twice.
    The train/test split is drawn once and kept in the state dir, across restarts."""

    def plaintext_update(node_config: dict, flower_run: int) -> list[np.ndarray]:
        server = Coordinator(
            federation.directory, federation.settings, federation.roster, flower_run, {1: node_config}
        )
        reply = server.send(1, p.TRAIN, {p.ROUND: 1, p.ENCRYPTED: False}, arrays=federation.model)
        return [array.numpy() for array in reply.content[p.ARRAYS].values()]

    def same(first, second) -> bool:
        return all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))

    own = {STATE_DIR_KEY: str(tmp_path / "own")}
    assert not same(plaintext_update(own, 90), plaintext_update(own, 91))
    pinned = own | {local.TRAINING_SEED_KEY: 1234}
    assert same(plaintext_update(pinned, 92), plaintext_update(pinned, 93))
    assert same(plaintext_update({}, 94), plaintext_update({}, 95))

    split_seed = tmp_path / "own" / local.SPLIT_SEED_FILE
    assert stat.S_IMODE(split_seed.stat().st_mode) == 0o600
    task = local.TaskConfig.from_config(federation.settings.task_config())
    node = {"partition-id": 0, "num-partitions": 4} | own
    before = local.raw_hospital_data(task, node).y_test
    local._cached_raw.cache_clear()  # a restart: the data are loaded again
    assert np.array_equal(local.raw_hospital_data(task, node).y_test, before)

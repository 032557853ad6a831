"""Encrypted FedAvg in Flower's Simulation Engine: equivalence with plaintext FedAvg, and dropouts."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation
from sim_helpers import (
    BACKEND,
    WEIGHT_TOLERANCE,
    asked_to_decrypt,
    hospital_app,
    offline_at_set_up,
    partition,
    simulate,
    stopped_runs,
    unreliable_hospitals,
    write_hospital_tables,
)

from client import app as hospital
from common import protocol as p
from common.records import blobs_of
from common.settings import RunSettings
from experiments.bench_metering import ForwardingGrid
from he.encoding import UpdateEncoder, weight_scale_for
from he.params import preset
from server.app import initial_weights, run_federation


@pytest.mark.slow
@pytest.mark.parametrize(
    "model",
    [
        {},  # the default preset, mlp
        {"model": "examples.tabular_net.TabularNet", "model_args": '{"blocks": 1, "width": 16}'},
    ],
    ids=["mlp", "tabular_net-by-import-path"],
)
def test_encrypted_run_matches_plaintext_fedavg(model: dict) -> None:
    common = {"num_rounds": 3, "seed": 3, "min_train_nodes": 2, "he_preset": "precise", **model}
    encrypted = simulate(RunSettings(strategy="encrypted_fedavg", threshold=2, **common), hospital.app, 3)
    plain = simulate(RunSettings(strategy="fedavg", **common), hospital.app, 3)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(encrypted.weights, plain.weights, strict=True))
    assert diff < WEIGHT_TOLERANCE
    assert encrypted.final_metrics["eval_accuracy"] == pytest.approx(plain.final_metrics["eval_accuracy"])
    assert encrypted.final_metrics["eval_accuracy"] > 0.8


@pytest.mark.slow
def test_dropouts_in_training_and_decryption_are_tolerated(tmp_path) -> None:
    """3-of-5: hospital 1 fails training in round 2; keyholder 2 fails every decryption. Sets
    have the quorum minimum ceil((5+3)/2) = 4: a round whose first set holds keyholder 2 decrypts
    on its second attempt, without it; once silent, it is asked last, so never again first."""
    record = tmp_path / "asked"
    faulty = unreliable_hospitals(
        train_down=lambda m, c: partition(c) == 0 and int(m.content["config"]["server-round"]) == 2,
        decrypt_down=lambda m, c: partition(c) == 1 and asked_to_decrypt(record, m, c),
    )
    settings = RunSettings(strategy="encrypted_fedavg", threshold=3, num_rounds=3, min_train_nodes=3)
    result = simulate(settings, faulty, 5)
    asked = [int(r) for r in record.read_text().split()] if record.exists() else []
    assert len(asked) <= 1
    assert [h["decryption_attempts"] for h in result.history] == [2 if r in asked else 1 for r in (1, 2, 3)]
    assert [h["contributors"] for h in result.history] == [5, 4, 5]
    assert result.final_metrics["eval_accuracy"] > 0.5


TAMPERED = {"num_rounds": 3, "seed": 5, "min_train_nodes": 2, "he_preset": "precise"}


def raise_correct_count(message, context) -> tuple[int, int] | None:
    """Hospital-1's payload tamper: 3 more correct predictions in the pooled evaluation of every
    training round and of the final evaluation (a better accuracy that stays below 1)."""
    config = message.content["config"]
    if partition(context) != 0 or config["kind"] != "train":
        return None
    encoder = UpdateEncoder(preset("precise"), 1)
    final = config["server-round"] > TAMPERED["num_rounds"]
    values = 0 if final else sum(w.size for w in initial_weights(RunSettings(**TAMPERED)))
    return values + 2 * encoder.count_chunks + encoder.sum_chunks, 3  # pooled_metrics.SCALARS[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("cheating", "caught_by"),
    [
        (unreliable_hospitals(tamper=lambda c: partition(c) == 0), "exceeds its bound"),
        (unreliable_hospitals(shift_field=raise_correct_count), "check value of this decryption"),
    ],
    ids=["noise-row", "payload-correct-count"],
)
def test_a_keyholder_that_tampers_with_its_shares_is_named_and_cannot_move_the_model(
    cheating, caught_by, caplog
) -> None:
    """2-of-6 (decryption sets of 4): hospital-1 adds 1 to its shares on a noise prime, or 3 to
    the pooled correct count on a payload row (the noise check passes; the share check does
    not). Every decryption it takes part in fails its check;
    elimination decrypts without it within the attempt budget and names it; the model and the
    pooled evaluation are the ones an honest federation computes."""
    with caplog.at_level(logging.WARNING, logger="strategies"):
        result = simulate(RunSettings(strategy="encrypted_fedavg", threshold=2, **TAMPERED), cheating, 6)
    named = [r.getMessage() for r in caplog.records if "SUSPECT" in r.getMessage()]
    assert named, "hospital-1 was never in a decryption set (change the seed)"
    assert any(caught_by in r.getMessage() for r in caplog.records)  # the check that failed it
    assert all(re.search(r"SUSPECT keyholder\(s\) [^:]*\bhospital-1\b", m) for m in named)
    assert all("round_skipped" not in h for h in result.history)
    assert sum(h["suspect_keyholders"] > 0 for h in result.history) <= 2
    plain = simulate(RunSettings(strategy="fedavg", **TAMPERED), hospital.app, 6)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(result.weights, plain.weights, strict=True))
    assert diff < WEIGHT_TOLERANCE
    assert result.final_metrics["eval_accuracy"] == pytest.approx(plain.final_metrics["eval_accuracy"])


never_decrypts = unreliable_hospitals(  # two keyholders down in every round's decryption
    decrypt_down=lambda m, c: partition(c) in (0, 1) and m.content["config"]["kind"] == "train",
)


@pytest.mark.slow
def test_a_round_without_decryption_quorum_keeps_the_model_and_the_run_goes_on() -> None:
    """2-of-3 needs all 3 keyholders (quorum minimum ceil((3+2)/2) = 3): with two of them down
    in decryption, every round keeps the initial model, says why, and the run still finishes.
    The final evaluation is decrypted like an update, so it too finds no quorum: no metrics."""
    settings = RunSettings(strategy="encrypted_fedavg", threshold=2, num_rounds=2, min_train_nodes=2)
    result = simulate(settings, never_decrypts, 3)
    assert [h.get("round_skipped") for h in result.history] == [1, 1]
    initial = [np.asarray(w, dtype=np.float32) for w in initial_weights(settings)]
    assert all(np.array_equal(w, i) for w, i in zip(result.weights, initial, strict=True))
    assert result.final_metrics == {} and result.evaluation is None


@pytest.mark.slow
def test_a_federation_too_large_for_the_default_weight_scale_is_rescaled(tmp_path, caplog) -> None:
    """33,600 training examples outgrow the statistics pass's default weight scale under
    ``precise`` (room for 2^10 * 32): the overflow is detected with the exact count, the moments
    pass runs again rescaled, and round 1 already uses the weight scale of the true total."""
    rng = np.random.default_rng(1)
    paths = write_hospital_tables(tmp_path, rng, hospitals=3, rows=(14000, 14000), features=4)
    settings = RunSettings(
        strategy="encrypted_fedavg",
        he_preset="precise",
        num_rounds=1,
        model="logreg",
        dataset="csv",
        num_features=4,
        num_classes=2,
        data_paths=paths,
    )
    with caplog.at_level(logging.INFO, logger="strategies.encrypted_statistics"):
        result = simulate(settings, hospital.app, 3)
    assert any("again at weight scale" in r.getMessage() for r in caplog.records)
    train_examples = 3 * (14000 - 2800)  # client.data keeps 20% of each table for testing
    assert train_examples > 32 * 1024
    assert result.history[0]["weight_scale"] == weight_scale_for(train_examples, preset("precise"))
    assert result.final_metrics["eval_accuracy"] > 0.8


def trains_from_another_model(message, context):
    """hospital-1 trains from a model other than the one the server sent (so it signs another
    release key): every keyholder would refuse an aggregate mixing release keys."""
    if partition(context) == 0:
        arrays = [a.numpy() + 1e-3 for a in message.content["arrays"].values()]
        message.content["arrays"] = ArrayRecord(arrays)
    return hospital.train(message, context)


@pytest.mark.slow
def test_a_contribution_signed_for_another_starting_model_is_left_out_not_fatal(caplog) -> None:
    """The server checks the release key each contributor signed against the model it sent: the
    odd one out is named and left out of the sum, and every round still decrypts."""
    settings = RunSettings(strategy="encrypted_fedavg", threshold=2, num_rounds=2, min_train_nodes=2)
    with caplog.at_level(logging.WARNING, logger="strategies.encrypted_fedavg"):
        result = simulate(settings, hospital_app({"train": trains_from_another_model}), 4)
    assert [h["contributors"] for h in result.history] == [3, 3]
    assert all("round_skipped" not in h for h in result.history)
    rejected = [r.getMessage() for r in caplog.records if "signed for release" in r.getMessage()]
    assert len(rejected) == 2 and all("update of hospital-1 rejected" in m for m in rejected)


def test_set_up_goes_on_without_an_offline_keyholder_and_every_round_decrypts(tmp_path, caplog) -> None:
    """2-of-4: hospital-4 gives no hello. The run's committee is the other three, which is the
    roster's minimum ceil((4+2)/2) = 3: the set-up names hospital-4 in one line and in the run's
    tags, and every decryption goes to the three online keyholders only, on its first attempt."""
    decrypted_by = tmp_path / "decrypted-by"
    settings = RunSettings(strategy="encrypted_fedavg", threshold=2, num_rounds=2, min_train_nodes=2)
    with caplog.at_level(logging.WARNING, logger="strategies"):
        result = simulate(settings, offline_at_set_up({3}, decrypted_by), 4)
    named = [r.getMessage() for r in caplog.records if "set-up proceeds without" in r.getMessage()]
    assert named == [
        "set-up proceeds without keyholder(s) hospital-4 (no valid hello): 3 of 4 keyholders take part, "
        "the roster's minimum is 3"
    ]
    assert result.tags == {"setup_missing_keyholders": "hospital-4"}
    assert [(h["contributors"], h["decryption_attempts"]) for h in result.history] == [(3, 1), (3, 1)]
    assert set(decrypted_by.read_text().split()) == {"0", "1", "2"}
    assert result.final_metrics["eval_accuracy"] > 0.5


def test_set_up_with_too_few_keyholders_online_stops_naming_them_and_the_minimum() -> None:
    """2-of-4 with hospital-3 and hospital-4 giving no hello: two keyholders are below the
    roster's minimum of 3, so the run stops in one line naming them, after their own reasons."""
    settings = RunSettings(strategy="encrypted_fedavg", threshold=2, num_rounds=1, min_train_nodes=2)
    errors = stopped_runs(settings, 4, offline_at_set_up({2, 3}))
    assert len(errors) == 1
    assert str(errors[0]).startswith("SetupFailedError: set-up failed: 2 of 4 hospitals refused: ")
    assert str(errors[0]).endswith(
        "; set-up has 2 of the 4 keyholders, fewer than the roster's minimum 3; "
        "missing keyholders: hospital-3, hospital-4"
    )


class MessageTypes(ForwardingGrid):
    """A Grid that notes the type of every message the strategy sends, in order."""

    def __init__(self, inner: Grid) -> None:
        super().__init__(inner)
        self.sent: list[str] = []

    def push_messages(self, messages):
        messages = list(messages)
        self.sent += [m.metadata.message_type for m in messages]
        return self.inner.push_messages(messages)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.sent += [m.metadata.message_type for m in messages]
        return self.inner.send_and_receive(messages, timeout=timeout)


def phases_before_round_one(settings: RunSettings, client_app, num_hospitals: int) -> list[str]:
    """The message phases (runs of one message type) a federation sends before its first ``train``."""
    sent: list[str] = []
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        recording = MessageTypes(grid)
        run_federation(recording, settings)
        sent.extend(recording.sent)

    run_simulation(app, client_app, num_supernodes=num_hospitals, backend_config=BACKEND)
    before = sent[: sent.index(p.TRAIN)]
    return [t for i, t in enumerate(before) if i == 0 or before[i - 1] != t]


def test_an_encrypted_tabular_run_sets_up_in_two_phases_before_the_statistics() -> None:
    """Issue 22: the dealings ride on the first statistics message, so before round 1 the run
    sends hello, deal, then the two statistics passes with their decryptions, nothing else."""
    settings = RunSettings(strategy="encrypted_fedavg", threshold=2, num_rounds=1, min_train_nodes=2)
    assert phases_before_round_one(settings, hospital.app, 3) == [
        p.HELLO,
        p.DEAL,
        p.STATISTICS,
        p.DECRYPT,
        p.STATISTICS,
        p.DECRYPT,
    ]


def deals_a_bad_share_to_hospital_one(message, context):
    """Hospital-3 (partition 2) deals honestly, then one byte of its share sealed for
    hospital-1 is flipped on the way: hospital-1 complains about it."""
    reply = hospital.deal(message, context)
    if partition(context) != 2:
        return reply
    blobs = blobs_of(reply)
    name = p.per_party(p.SEALED_SHARE, 1)
    blobs[name] = blobs[name][:-1] + bytes([blobs[name][-1] ^ 1])
    return hospital.reply(message, blobs)


def test_a_dealer_complained_about_in_the_statistics_replies_is_left_out_before_the_sum(caplog) -> None:
    """2-of-3: hospital-1 complains, in its first statistics reply, about hospital-3's share.
    The server reads the complaint before it sums that pass, so hospital-3's statistics never
    enter an aggregate hospital-1 would refuse to decrypt; the run goes on with the other two."""
    settings = RunSettings(strategy="encrypted_fedavg", threshold=2, num_rounds=1, min_train_nodes=2)
    app = hospital_app({p.DEAL: deals_a_bad_share_to_hospital_one})
    with caplog.at_level(logging.WARNING, logger="strategies"):
        result = simulate(settings, app, 3)
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "refused the share" in m] == [
        "keyholder hospital-1 refused the share dealt by hospital-3; "
        "hospital-3 is left out of every aggregate"
    ]
    assert not [m for m in messages if "dealt no valid share" in m]
    assert [h["contributors"] for h in result.history] == [2]

"""Dropouts are named, and a run that stops keeps what it had: the ServerApp's own log lines reach
Flower's log stream; a stopped deployment run keeps in MLflow its config, the rounds' metrics, the
last global model and the one-line reason; hospitals that sent nothing are warned about by name."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.supercore.task_identity import TaskIdentity
from mlflow.tracking import MlflowClient

from client import app as hospital_state
from common.settings import RunSettings
from he import protocol as p
from server import app as server_app
from strategies import fedavg, messaging
from strategies.encrypted_fedavg import EncryptedFedAvg
from strategies.fedavg import FedAvg, FederationResult, RoundFailedError

REASON = "round 2: 2 decryption shares, 3 needed; stopping the run"


class StoppingStrategy:
    """Set-up goes on without keyholder hospital-4; round 1 goes through without hospital-3;
    round 2 fails as an n-of-n round does."""

    def __init__(self) -> None:
        self.result: FederationResult | None = None
        self.node_ids = [1, 2, 3]

    def summary(self) -> None:
        pass

    def start(self, grid, weights, on_round) -> FederationResult:
        metrics = {"eval_loss": 0.5, "contributors": 2, "missing_hospitals": 1, "missing": "hospital-3"}
        self.result = FederationResult(
            weights, history=[{"round": 1, **metrics}], tags={"setup_missing_keyholders": "hospital-4"}
        )
        on_round(1, metrics)
        raise RoundFailedError(REASON)


def test_a_stopped_run_keeps_config_metrics_model_and_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(server_app, "build_strategy", lambda settings, *callbacks: StoppingStrategy())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = RunSettings(num_rounds=3, mlflow_tracking_uri=uri)
    with pytest.raises(server_app.RunStoppedError) as stopped:
        server_app.run_tracked(None, settings, flower_run_id=18446744073709551557)
    assert str(stopped.value) == f"RoundFailedError: {REASON}"
    assert f"run stopped: RoundFailedError: {REASON}" in caplog.text
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("fedquorum").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.params["num-rounds"] == "3"  # the config
    assert (run.data.params["model_class"], run.data.params["model_parameters"]) == (
        "models.tabular.MLP",
        "1058",
    )
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval_loss")] == [1]
    assert run.data.tags["failure_reason"] == f"RoundFailedError: {REASON}"
    assert run.data.tags["rounds_completed"] == "1"
    assert run.data.tags["missing_hospitals"] == "round 1: hospital-3"
    assert run.data.tags["setup_missing_keyholders"] == "hospital-4"
    assert run.data.tags["flower_run_id"] == "18446744073709551557"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"final_weights.npz", "learning_curve.png"} <= artifacts  # the last good model


def test_dropouts_are_named(caplog: pytest.LogCaptureFixture) -> None:
    strategy = FedAvg(RunSettings())
    strategy.node_ids = [11, 22, 33]
    assert strategy.report_missing(4, {11, 33}) == ["node 22"]
    assert "round 4: no update from node 22 (2 of 3 hospitals answered)" in caplog.text

    class Roster:
        @staticmethod
        def hospital(party: int):
            return type("Hospital", (), {"name": f"hospital-{party}"})

    encrypted = EncryptedFedAvg(RunSettings())
    encrypted.node_ids = [11, 22, 33]
    encrypted.roster, encrypted.party_nodes = Roster(), {1: 11, 2: 22, 3: 33}  # as the set-up leaves them
    assert encrypted.report_missing(5, {22}) == ["hospital-1", "hospital-3"]
    assert encrypted.report_missing(6, {11, 22, 33}) == []


def test_server_app_log_lines_reach_the_process_output(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    for name in server_app.LOGGED_PACKAGES:  # restored after the test
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", [])
        monkeypatch.setattr(logger, "propagate", logger.propagate)
        monkeypatch.setattr(logger, "level", logger.level)
    server_app.show_logs_in_flower_log()
    server_app.show_logs_in_flower_log()  # idempotent
    logging.getLogger("strategies.encrypted_fedavg").info("set-up for 3 hospitals ready")
    assert capsys.readouterr().err == "INFO fedquorum: set-up for 3 hospitals ready\n"


def after_round_1(message: Message, context: Context) -> bool:
    """The message is for the last hospital, after round 1 (training, decryption, final evaluation)."""
    config = message.content.config_records.get("config") or {}
    later = message.metadata.group_id == "final" or int(config.get("server-round", 0)) >= 2
    last = int(context.node_config["partition-id"]) == int(context.node_config["num-partitions"]) - 1
    return later and last


def killed_after_round_1(message: Message, context: Context, call_next) -> Message:
    """The last hospital answers nothing after round 1, training and decryption alike: the
    reply is the SuperLink's own for a node whose heartbeat stopped."""
    if after_round_1(message, context):
        return Message(Error(ErrorCode.NODE_UNAVAILABLE, "the last hospital is down"), reply_to=message)
    return call_next(message, context)


def restarted_after_round_1(message: Message, context: Context, call_next) -> Message:
    """The last hospital's node restarts after round 1: its run state (the run's keys) is gone."""
    if after_round_1(message, context) and hospital_state.STATE in context.state:
        del context.state[hospital_state.STATE]
    return call_next(message, context)


def simulate_n_of_n(settings: RunSettings, mod=killed_after_round_1, hospitals: int = 3, **callbacks) -> None:
    """Simulated hospitals (three), the last one killed (``mod``) after round 1."""
    from flwr.simulation import run_simulation

    from client import app as hospital

    os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    app = ClientApp(mods=[mod])
    for action in ("hello", "deal", "dealings", "statistics", "decrypt"):
        app.query(action)(getattr(hospital, action))
    app.train()(hospital.train)
    app.evaluate()(hospital.evaluate)
    server = server_app.make_server_app(settings, **callbacks)
    run_simulation(
        server, app, num_supernodes=hospitals, backend_config={"client_resources": {"num_cpus": 1}}
    )


N_OF_N = RunSettings(num_rounds=3, threshold=0, min_train_nodes=2, min_nodes=3, round_timeout=120)


def test_n_of_n_run_survives_a_killed_hospital_and_names_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rounds 2 and 3 keep the model of round 1, the run finishes, and the log and MLflow name
    hospital-3."""
    from server.tracking import MlflowTracker

    caplog.set_level(logging.INFO, logger="strategies")  # the round lines

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    results: list[FederationResult] = []
    with MlflowTracker(uri, "fedquorum") as tracker:
        simulate_n_of_n(N_OF_N, on_round=tracker.log_round, on_result=results.append)
    (result,) = results
    assert [h["contributors"] for h in result.history] == [3, 2, 2]
    assert [h.get("round_skipped") for h in result.history] == [None, 1, 1]  # the previous model kept
    assert [h["missing"] for h in result.history] == ["", "hospital-3", "hospital-3"]
    assert "round 2: no update from hospital-3 (2 of 3 hospitals answered)" in caplog.text
    # the keyholder that failed the train phase is not waited for again: no keyholder is asked
    shortfall = (
        "keyholder(s) hospital-3 (silent this round) missing: 2 of 3 keyholders left, "
        "a decryption set needs 3"
    )
    assert f"train round 2: {shortfall}; no keyholder asked" in caplog.text
    assert (
        f"round 2/3: contributors hospital-1, hospital-2; decryption set none; skipped: {shortfall}; "
        in caplog.text
    )
    assert re.search(
        r"round 1/3: contributors hospital-1, hospital-2, hospital-3; decryption set hospital-1, hospital-2, "
        r"hospital-3; aggregated \(decryption attempt 1\); \d+\.\d s",
        caplog.text,
    )
    tags = MlflowClient(uri).get_run(tracker.run_id).data.tags
    assert tags["missing_hospitals"] == "round 2: hospital-3; round 3: hospital-3"


def test_max_failed_rounds_stops_the_run_with_its_reason() -> None:
    stopped: list = []
    with pytest.raises(server_app.RunStoppedError):
        simulate_n_of_n(replace(N_OF_N, max_failed_rounds=1), on_stop=lambda *stop: stopped.append(stop))
    ((reason, partial),) = stopped
    assert reason == (
        "RoundFailedError: 1 round(s) in a row without an aggregate (max_failed_rounds=1); stopping the run"
    )
    assert [h.get("round_skipped") for h in partial.history] == [None, 1]  # rounds so far, for MLflow


def error_reply(node_id: int, reason: str) -> SimpleNamespace:
    """An error reply as the strategy reads one (its sender, and Flower's ``Error``)."""
    return SimpleNamespace(
        has_error=lambda: True,
        error=SimpleNamespace(code=1, reason=reason),
        metadata=SimpleNamespace(src_node_id=node_id, reply_to_message_id=""),
    )


POLICY = "policy require_encrypted=true: this run sends plaintext statistics; refused"
APP = "app sha256 ab12 refused: not in approved-apps.toml; approve it after review"


@pytest.mark.parametrize(
    "flower_reason",
    [
        f"<class 'client.refusals.PolicyRefusal'>:<'{POLICY}'>",  # deployment: the ClientApp raised
        f"<class 'flwr.clientapp.client_app.ClientAppException'>:<'\nException ClientAppException "
        f"occurred. Message: <class 'client.refusals.PolicyRefusal'>:<'{POLICY}'>'>",  # simulation
        POLICY,  # the launcher's own reply
        "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'ray::ClientAppActor.run() (pid=1) "
        'File "ray_actor.py", line 65, in run raise ClientAppException(str(ex)) from ex '
        "flwr.clientapp.client_app.ClientAppException: Exception ClientAppException occurred. "
        f"Message: {POLICY}'>",  # simulation, the first error of a Ray actor: its traceback too
    ],
)
def test_the_hospitals_reason_is_read_without_flowers_wrapping(flower_reason: str) -> None:
    assert messaging.hospital_reason(error_reply(3, flower_reason)) == POLICY
    named = error_reply(3, flower_reason.replace(POLICY, f"[hospital-c] {POLICY}"))
    assert messaging.hospital_reason(named) == POLICY  # the name it gives itself is read apart
    assert messaging.claimed_sender(named) == "hospital-c"


def test_refusals_are_one_line_naming_each_hospital_and_its_reason() -> None:
    refusals = messaging.Refusals()
    refusals.add("hospital-b", error_reply(2, APP))
    refusals.add("hospital-a", error_reply(1, f"<class 'client.refusals.PolicyRefusal'>:<'{POLICY}'>"))
    assert refusals.summary("set-up", 3) == (
        f"set-up failed: 2 of 3 hospitals refused: hospital-a ({POLICY}), hospital-b ({APP})"
    )


def test_a_statistics_pass_every_hospital_refused_fails_with_the_refusal_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    replies = [error_reply(11, POLICY), error_reply(22, f"[hospital-b] {APP}")]
    monkeypatch.setattr(fedavg, "stream_replies", lambda grid, messages, timeout: iter(replies))
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)  # messages are built as inside a ServerApp
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    strategy = FedAvg(RunSettings(strategy="fedavg", min_train_nodes=2))
    strategy.node_ids = [11, 22]
    with pytest.raises(RoundFailedError) as failed:
        strategy.statistics_replies(None, "moments", {})
    assert str(failed.value) == (
        "feature statistics (moments) failed: 2 of 2 hospitals refused: "
        f"hospital-b (node 22, by its own account) ({APP}), node 11 ({POLICY})"
    )
    assert f"feature statistics (moments): node 11 failed: {POLICY}; left out" in caplog.text


def test_a_restarted_hospital_is_named_and_the_run_goes_on_with_the_quorum_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Four hospitals, decryption sets of 3: hospital-4 restarts after round 1 and says so; every
    later round aggregates without it, and the log and MLflow say why it is missing."""
    from server.tracking import MlflowTracker

    caplog.set_level(logging.INFO, logger="strategies")

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    results: list[FederationResult] = []
    settings = replace(N_OF_N, threshold=2, min_nodes=4, round_timeout=300)  # no one is silent: load only
    with MlflowTracker(uri, "fedquorum") as tracker:
        simulate_n_of_n(
            settings, restarted_after_round_1, 4, on_round=tracker.log_round, on_result=results.append
        )
    (result,) = results
    assert [h["contributors"] for h in result.history] == [4, 3, 3]
    assert [h.get("round_skipped") for h in result.history] == [None, None, None]
    lost = f"hospital-4 ({p.KEYS_LOST})"
    assert f"hospital-4 {p.KEYS_LOST}: it is left out of the rest of this run" in caplog.text
    assert f"round 2: no update from {lost} (3 of 4 hospitals answered)" in caplog.text
    assert "decryption set hospital-1, hospital-2, hospital-3; aggregated" in caplog.text
    tags = MlflowClient(uri).get_run(tracker.run_id).data.tags
    assert tags["missing_hospitals"] == f"round 2: {lost}; round 3: {lost}"


def test_a_restarted_keyholder_of_an_n_of_n_committee_stops_the_run_keeping_its_checkpoint(
    tmp_path: Path,
) -> None:
    """Round 2 is skipped at once; no later round can be decrypted, so the run stops after it,
    with ``rounds_completed`` counting the one round that aggregated and the checkpoint of round 2."""
    from server.tracking import MlflowTracker
    from strategies.checkpoint import Checkpoint

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    stopped: list = []
    with MlflowTracker(uri, "fedquorum") as tracker:
        with pytest.raises(server_app.RunStoppedError):
            simulate_n_of_n(
                N_OF_N,
                restarted_after_round_1,
                on_round=tracker.log_round,
                on_stop=lambda *stop: stopped.append(stop),
                on_checkpoint=tracker.log_checkpoint,
            )
        ((reason, partial),) = stopped
        tracker.log_stop(reason, partial, N_OF_N)
    assert reason == (
        f"RoundFailedError: after round 2: keyholder(s) hospital-3 ({p.KEYS_LOST}) missing: 2 of 3 "
        "keyholders left, a decryption set needs 3; no later round can be decrypted, stopping the run "
        "(resume it once the keyholders are back)"
    )
    assert [h.get("round_skipped") for h in partial.history] == [None, 1]
    client = MlflowClient(uri)
    assert client.get_run(tracker.run_id).data.tags["rounds_completed"] == "1"
    saved = Checkpoint.load(
        Path(client.download_artifacts(tracker.run_id, "checkpoint/checkpoint.npz", str(tmp_path)))
    )
    assert saved.round == 2  # resume=<id> goes on with round 3 ...
    for kept, last in zip(saved.weights, partial.weights, strict=True):  # ... from the model of round 1
        np.testing.assert_array_equal(kept, last)

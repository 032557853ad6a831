"""Plaintext FedAvg over weight deltas: the baseline, and the round loop both strategies share.

``FedAvg.start`` is the loop: hospitals, set-up (``setup``), feature statistics
(``strategies.feature_statistics``), then per round ``play_round`` (``train``: hospitals evaluate
the global model, train, reply; aggregation, in which the encrypted strategy reveals the sum:
``strategies.reveal``), the server step and the round's record (``strategies.run_record``);
after the last round one ``evaluate`` phase scores the final model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from common import protocol as p
from common.settings import RunSettings
from models.pooled_metrics import add_sums
from models.tasks import get_task
from privacy.mechanism import plan_from_config
from strategies.checkpoint import Checkpoint
from strategies.feature_statistics import FeatureStatistics
from strategies.hospital_names import HospitalNames
from strategies.messaging import (
    content_bytes,
    make_content,
    metrics_of,
    stream_replies,
)
from strategies.participation import noting_senders, wait_for_nodes
from strategies.run_record import FederationResult, RoundFailedError, RoundNotes, RoundTraffic, round_metrics
from strategies.server_optimizer import ServerOptimizer

log = logging.getLogger(__name__)
CLIENT_METRICS = ("train_loss", "eval_loss", "eval_accuracy", "eval_auc", "encrypt_seconds")
SITE_METRICS = (  # a hospital's own, opt-in (those of the run's task)
    "train_loss",
    "eval_loss",
    "eval_accuracy",
    "eval_auc",
    "eval_mse",
    "eval_mae",
    "eval_r2",
    "eval_c_index",
)


class FedAvg(HospitalNames, FeatureStatistics, Strategy):
    """Plaintext FedAvg of weight deltas, weighted by each hospital's training examples."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.optimizer = ServerOptimizer(settings.server_optimizer, settings.server_lr)
        self.node_ids: list[int] = []
        self.grid: Grid | None = None
        self.traffic = RoundTraffic()
        self.notes = RoundNotes()
        self.round_answered: set[int] = set()  # of the current round: hospitals whose valid update came
        self.round_replied: set[int] = set()  # of the current round: hospitals that replied at all (alive)
        self.feature_statistics: dict = {}
        self.result: FederationResult | None = None  # so far: what a run that stops still logs
        self.task = get_task(settings.task)
        self.evaluation_layout = self.task.layout(settings.evaluation_settings())
        self.last_evaluation = None  # the task's pooled evaluation, of the last pooled_metrics call
        self.final_evaluation = None  # set by aggregate_evaluate
        self.resume_from: Checkpoint | None = None  # set by resume()
        self.on_checkpoint: Callable[[Checkpoint], None] | None = None  # after every round
        self.run_tags: dict[str, str] = {}  # facts of this run for MLflow tags, e.g. set-up's
        self.on_phase: Callable[[str], None] | None = None  # "key set-up: query.deal", "round 2/10", ...

    # -- the round loop ------------------------------------------------------------------------
    def start(
        self,
        grid: Grid,
        initial_weights: list[np.ndarray],
        on_round: Callable[[int, dict], None] | None = None,
    ) -> FederationResult:
        """The run: hospitals, set-up, feature statistics; then each round trains and reveals its
        aggregate (``play_round``) and the server steps the model; then the final evaluation."""
        self.grid = grid
        self.connect(grid)
        self.report_phase("key set-up")
        self.setup(grid)
        self.report_phase("feature statistics")
        self.feature_statistics = self.collect_feature_statistics(grid)
        result = self.result = FederationResult(
            [np.asarray(w, dtype=np.float32) for w in initial_weights], tags=dict(self.run_tags)
        )
        failed_in_a_row = 0
        for server_round in range(self.restore(result), self.settings.num_rounds + 1):
            if self.over_privacy_budget(server_round, result.weights):
                log.warning("round %d would spend more than dp_target_epsilon: the run stops", server_round)
                break
            started = time.perf_counter()
            self.traffic, self.notes = RoundTraffic(), RoundNotes()
            self.report_phase(f"round {server_round}/{self.settings.num_rounds}")
            delta_record, metrics_record, missing = self.play_round(server_round, result.weights, grid)
            if delta_record is not None:
                result.weights = self.server_step(result.weights, delta_record)
            seconds = time.perf_counter() - started
            self.record_round(
                server_round, delta_record is not None, metrics_record, missing, seconds, on_round
            )
            failed_in_a_row = failed_in_a_row + 1 if delta_record is None else 0
            self.stop_if_hopeless(server_round, failed_in_a_row)
        self.report_phase("final evaluation")
        self.evaluate_final(result)
        return result

    def connect(self, grid: Grid) -> None:
        """Wait for the hospitals; too few for a round stops the run."""
        minimum = max(self.settings.min_nodes, self.settings.min_train_nodes)
        self.report_phase(f"waiting for {minimum} hospitals")
        self.node_ids = wait_for_nodes(grid, minimum, self.settings.round_timeout)
        if len(self.node_ids) < self.settings.min_train_nodes:
            raise RoundFailedError(
                f"{len(self.node_ids)} hospitals connected, min_train_nodes={self.settings.min_train_nodes}"
            )

    def server_step(self, weights: list[np.ndarray], delta_record: ArrayRecord) -> list[np.ndarray]:
        """The server optimizer (``server_optimizer.py``) applied to the revealed average update."""
        delta = [a.numpy() for a in delta_record.values()]
        new = self.optimizer.step([w.astype(np.float64) for w in weights], delta)
        return [w.astype(np.float32) for w in new]

    def record_round(
        self,
        server_round: int,
        aggregated: bool,
        metrics_record: MetricRecord | None,
        missing: list[str],
        seconds: float,
        on_round: Callable[[int, dict], None] | None,
    ) -> None:
        """The round's metrics into the history, its log line, ``on_round`` and the checkpoint."""
        result = self.result
        metrics = round_metrics(metrics_record or {}, missing, seconds, self.traffic, len(self.node_ids))
        metrics |= self.privacy_spent(server_round, result.weights)
        result.history.append({"round": server_round, **metrics})
        log.info("%s", self.notes.line(server_round, self.settings.num_rounds, aggregated, seconds))
        if on_round:
            on_round(server_round, metrics)
        if self.on_checkpoint:
            self.on_checkpoint(self.checkpoint(server_round))

    def stop_if_hopeless(self, server_round: int, failed_in_a_row: int) -> None:
        """Stop the run when no later round can be decrypted or too many failed in a row."""
        if (gone := self.quorum_gone()) is not None:
            raise RoundFailedError(f"after round {server_round}: {gone}")
        if failed_in_a_row and failed_in_a_row == self.settings.max_failed_rounds:
            raise RoundFailedError(
                f"{failed_in_a_row} round(s) in a row without an aggregate "
                f"(max_failed_rounds={self.settings.max_failed_rounds}); stopping the run"
            )

    def evaluate_final(self, result: FederationResult) -> None:
        """The final model on the pooled test set, and the privacy spent by the whole run."""
        grid = self.grid
        messages = self.configure_evaluate(0, ArrayRecord(result.weights), ConfigRecord(), grid)
        final = self.aggregate_evaluate(0, stream_replies(grid, list(messages), self.settings.round_timeout))
        spent = self.privacy_spent(len(result.history), result.weights)
        result.final_metrics = dict(final or {}) | spent
        result.evaluation = self.final_evaluation

    # -- checkpoints -----------------------------------------------------------------------------
    def resume(self, checkpoint: Checkpoint) -> None:
        """Continue from ``checkpoint`` (``strategies.checkpoint``) when the run starts."""
        self.resume_from = checkpoint

    def checkpoint(self, server_round: int) -> Checkpoint:
        return Checkpoint(
            server_round,
            list(self.result.weights),
            self.optimizer.state(),
            self.strategy_state(),
            list(self.result.history),
        )

    def restore(self, result: FederationResult) -> int:
        """Apply ``resume_from`` to ``result`` and this strategy (after set-up and the feature
        statistics, which a resumed run does afresh); the first round to run."""
        checkpoint = self.resume_from
        if checkpoint is None:
            return 1
        checkpoint.check_fits(result.weights, self.settings.num_rounds)
        result.weights = [np.asarray(w, dtype=np.float32) for w in checkpoint.weights]
        result.history = list(checkpoint.history)
        self.optimizer.load_state(checkpoint.optimizer)
        self.load_strategy_state(checkpoint.strategy)
        log.info("resuming after round %d of %d", checkpoint.round, self.settings.num_rounds)
        return checkpoint.round + 1

    def play_round(
        self, server_round: int, weights: list[np.ndarray], grid: Grid
    ) -> tuple[ArrayRecord | None, MetricRecord | None, list[str]]:
        """One round's train phase and aggregation: (the aggregate or None, its metrics, the
        hospitals that sent no valid update). A round ``skip_reason`` rules out is skipped at
        once, with no message sent."""
        if (skip := self.skip_reason(server_round)) is not None:
            reason, missing = skip
            log.warning("round %d: %s; skipped at once, the global model is unchanged", server_round, reason)
            self.notes.outcome = f"skipped at once: {reason}"
            return None, MetricRecord({"contributors": 0, "round_skipped": 1}), missing
        messages = list(self.configure_train(server_round, ArrayRecord(weights), ConfigRecord(), grid))
        self.traffic.bytes_down += sum(content_bytes(m.content) for m in messages)
        self.round_answered, self.round_replied = set(), set()
        replies = noting_senders(
            stream_replies(grid, messages, self.settings.round_timeout),
            self.round_answered,
            self.round_replied,
        )
        try:
            delta_record, metrics_record = self.aggregate_train(server_round, replies)
        finally:  # named also when the round stops the run
            missing = self.report_missing(server_round, self.round_answered)
        if delta_record is None:  # e.g. no decryption quorum: the reason is logged already
            log.warning("round %d produced no aggregate; the global model is unchanged", server_round)
        return delta_record, metrics_record, missing

    def skip_reason(self, server_round: int) -> tuple[str, list[str]] | None:
        """Why ``server_round`` cannot succeed before it starts, with the hospitals to blame, or
        None to run it (plaintext FedAvg: always run it)."""
        return None

    def quorum_gone(self) -> str | None:
        """Why no later round (nor the final evaluation) can succeed, or None (plaintext: never)."""
        return None

    def report_phase(self, phase: str) -> None:
        """Tell ``on_phase`` (the progress bar, MLflow's ``phase`` tag) what the run is doing."""
        if self.on_phase:
            self.on_phase(phase)

    def strategy_state(self) -> dict[str, float]:
        """Scalars a subclass carries from round to round (plaintext FedAvg: none)."""
        return {}

    def load_strategy_state(self, state: dict[str, float]) -> None:
        """Restore ``strategy_state``."""

    def setup(self, grid: Grid) -> None:
        """Per-run set-up before the first round; plaintext FedAvg needs none."""

    def over_privacy_budget(self, server_round: int, weights: list[np.ndarray]) -> bool:
        """With both a noise multiplier and a target ε, whether ``server_round`` would take the
        run past the target (the run then stops; with the noise solved, the target is met at
        ``num_rounds`` and this never stops it)."""
        settings = self.settings
        if not (settings.dp == "distributed" and settings.dp_noise_multiplier and settings.dp_target_epsilon):
            return False
        return self.privacy_spent(server_round, weights)["dp_epsilon"] > settings.dp_target_epsilon

    def privacy_spent(self, rounds: int, weights: list[np.ndarray]) -> dict:
        """``dp_epsilon`` after ``rounds`` rounds of distributed DP at ``dp_delta`` (every round
        counted, released or not: docs/privacy.md); nothing when DP is off."""
        plan = plan_from_config(self.settings.dp_config(), weights, self.settings.he_preset)
        if plan is None:
            return {}
        delta = self.settings.dp_delta
        return {"dp_epsilon": plan.epsilon(rounds, delta), "dp_delta": delta}

    def task_config(self) -> dict:
        return {**self.settings.task_config(), **self.feature_statistics}

    def round_config(self, server_round: int) -> dict:
        return {**self.task_config(), p.ROUND: server_round, p.ENCRYPTED: self.settings.encrypted}

    # -- Flower's Strategy interface ---------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        weights = [a.numpy() for a in arrays.values()]
        return [
            Message(
                content=make_content({**self.round_config(server_round), p.PARTY: party}, arrays=weights),
                message_type=p.TRAIN,
                dst_node_id=node_id,
                group_id=str(server_round),
            )
            for party, node_id in enumerate(self.node_ids, start=1)
        ]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        total, weight, client_metrics, sums = None, 0, [], None
        for reply in replies:
            if (reason := self.failure_reason(reply)) is not None:
                log.warning("round %d: %s", server_round, reason)
                continue
            self.traffic.bytes_up += content_bytes(reply.content)
            metrics = metrics_of(reply)
            delta = [a.numpy().astype(np.float64) for a in reply.content[p.ARRAYS].values()]
            n = int(metrics[p.NUM_EXAMPLES])
            total = (
                [n * d for d in delta]
                if total is None
                else [t + n * d for t, d in zip(total, delta, strict=True)]
            )
            weight += n
            client_metrics.append(metrics)
            self.notes.contributors.append(self.hospital_name(reply.metadata.src_node_id))
            sums = evaluation_sums(reply, sums)
        if len(client_metrics) < self.settings.min_train_nodes:
            raise RoundFailedError(
                f"round {server_round}: {len(client_metrics)} valid updates, "
                f"min_train_nodes={self.settings.min_train_nodes}"
            )
        metrics = self.pooled_metrics(sums, client_metrics)
        self.notes.contributors.sort()
        self.notes.outcome = "aggregated in the clear (plaintext FedAvg)"
        return ArrayRecord([t / weight for t in total]), MetricRecord(metrics)

    def pooled_metrics(self, sums: list[int] | None, client_metrics: list[dict]) -> dict:
        """The pooled test set's metrics from the summed evaluation vectors (``eval_*``), the mean
        encryption time, and -- only if the run opted into per-hospital plaintext -- the sites'
        own metrics averaged as today's FedAvg does (``site_mean_*``)."""
        metrics = {}
        self.last_evaluation = None if sums is None else self.task.from_sums(self.evaluation_layout, sums)
        if self.last_evaluation is not None:
            metrics |= self.last_evaluation.metrics()
        timings = [m["encrypt_seconds"] for m in client_metrics if "encrypt_seconds" in m]
        if timings:
            metrics["encrypt_seconds"] = float(np.mean(timings))
        if self.settings.per_hospital_plaintext:
            own = weighted_client_metrics(client_metrics)
            metrics |= {f"site_mean_{k}": v for k, v in own.items() if k in SITE_METRICS}
        return metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        weights = [a.numpy() for a in arrays.values()]
        config = self.round_config(self.settings.num_rounds + 1)  # evaluation sums: one more round id
        return [
            Message(
                content=make_content(config, arrays=weights),
                message_type=p.EVALUATE,
                dst_node_id=node_id,
                group_id="final",
            )
            for node_id in self.node_ids
        ]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        metrics, sums = [], None
        for reply in replies:
            if (reason := self.failure_reason(reply)) is not None:
                log.warning("final evaluation: %s", reason)
                continue
            metrics.append(metrics_of(reply))
            sums = evaluation_sums(reply, sums)
        if not metrics:
            return None
        pooled = self.pooled_metrics(sums, metrics)
        self.final_evaluation = self.last_evaluation
        return MetricRecord(pooled)

    def summary(self) -> None:
        log.info("%s: %s", type(self).__name__, self.settings)


def evaluation_sums(reply: Message, total: list[int] | None) -> list[int] | None:
    """Add a plaintext reply's evaluation sums (``models.pooled_metrics``) to ``total``."""
    record = reply.content.array_records.get(p.EVALUATION)
    if record is None:
        return total
    sums = [int(v) for v in next(iter(record.values())).numpy().tolist()]
    return sums if total is None else add_sums(total, sums)


def weighted_client_metrics(metrics: list[dict]) -> dict:
    """Average client metrics weighted by their evaluation examples; NaN AUCs are skipped."""
    out = {}
    for key in dict.fromkeys((*CLIENT_METRICS, *SITE_METRICS)):
        pairs = [(m[key], m.get("eval_examples", 1)) for m in metrics if key in m and np.isfinite(m[key])]
        if pairs:
            values, weights = zip(*pairs, strict=True)
            out[key] = float(np.average(values, weights=weights))
    out["clipped_values"] = int(sum(m.get("clipped_values", 0) for m in metrics))
    return out

"""Encrypted FedAvg: the server adds ciphertexts and a quorum of keyholders decrypts only the sum.

Set-up once per run (``strategies.setup_stages``: roster, signed hellos, dealing, dealings).
Each round: ``train`` replies (``c0`` plus a signed digest) are verified and summed as they
arrive (memory: one aggregate); then the sum is revealed (``strategies.reveal``): a decryption
set T of keyholders answers ``query.decrypt`` with masked shares whose masks cancel only in the
sum over T, retried with other sets by elimination up to the roster's ``max_attempts``; past
that, or when too few keyholders are left (``strategies.reachability``), the round keeps the
previous model and says why. The feature statistics and the final evaluation are revealed the
same way. The server never holds a secret.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from common import protocol as p
from common.records import blobs_of
from common.settings import RunSettings
from he import transcript
from he.ciphertext import CiphertextSum, EncryptedUpdate
from he.context import HEContext
from he.encoding import UpdateLayout, WeightScaleError, weight_scale_for
from he.errors import HEError
from he.params import preset
from he.roster import Roster
from privacy.mechanism import plan_from_config
from strategies.decryption_sets import DecryptionSets
from strategies.encrypted_statistics import EncryptedFeatureStatistics
from strategies.fedavg import FedAvg, FederationResult, RoundFailedError
from strategies.messaging import Refusals, content_bytes, hospital_reason, metrics_of, stream_replies
from strategies.plausibility import AggregateChecks
from strategies.reachability import Reachability, names, party_of
from strategies.reveal import Decryption, Reveal, Skipped
from strategies.setup_stages import KeySetup, load_roster

log = logging.getLogger(__name__)


def next_clip(average: list[np.ndarray], margin: float, preset_clip: float) -> float:
    """The next round's clip: ``margin`` x the largest average value, as a power of two."""
    largest = max(float(np.max(np.abs(a))) for a in average if a.size)
    if margin <= 0 or largest <= 0:
        return preset_clip
    return float(min(preset_clip, 2.0 ** np.ceil(np.log2(margin * largest))))


class EncryptedFedAvg(EncryptedFeatureStatistics, FedAvg):
    """FedAvg whose aggregation happens under threshold HE (see module docstring)."""

    def __init__(self, settings: RunSettings, clip_margin: float = 8.0) -> None:
        """``clip_margin``: after each round the clip range becomes ``clip_margin`` times the
        largest value of the decrypted average update (as a power of two, never above the
        preset's clip), so the quantizer's bins follow the updates as they shrink; 0 keeps
        the preset's clip. Values a hospital clips are counted in ``clipped_values``."""
        super().__init__(settings)
        self.ctx = HEContext(preset(settings.he_preset))
        self.statistics_ctx = HEContext(self.ctx.params.for_feature_statistics())
        self.clip_margin = clip_margin
        self.round_clip = self.ctx.params.clip
        self.weight_scale = self.ctx.params.default_weight_scale  # S of he.encoding, per round
        self.statistics_scale = self.statistics_ctx.params.default_weight_scale
        self.roster: Roster | None = None
        self.setup_transcript: transcript.SetupTranscript | None = None
        self.party_nodes: dict[int, int] = {}  # filled by the set-up's hellos
        self.dealers: set[int] = set()
        self._simulation_dir: str | None = None
        self.round_layout: UpdateLayout | None = None  # set by configure_train
        self.round_release = ""  # set by configure_train: the starting model's release key
        self.evaluation_release = ""  # set by configure_evaluate
        self.checks = AggregateChecks(self.evaluation_layout, settings.dp != "off")
        self.evaluation_update_layout: UpdateLayout | None = None  # set by configure_evaluate
        self.keys_lost: set[int] = set()  # parties whose node restarted after the set-up (p.KEYS_LOST)
        self.reachability: Reachability | None = None  # set by setup
        self.reveal: Reveal | None = None  # set by setup
        self.key_setup: KeySetup | None = None  # set by setup; relays the dealings with the statistics

    def start(self, grid: Grid, initial_weights, on_round=None) -> FederationResult:
        try:
            return super().start(grid, initial_weights, on_round)
        finally:
            if self._simulation_dir:
                shutil.rmtree(self._simulation_dir, ignore_errors=True)

    def task_config(self) -> dict:
        extra = {p.PRESET: self.settings.he_preset}
        if self.roster is not None:
            extra[p.ROSTER_FINGERPRINT] = self.roster.fingerprint
        if self._simulation_dir:
            extra[p.SIMULATED_FEDERATION] = self._simulation_dir
        return {**super().task_config(), **extra}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's messages; the round's layout is fixed here, by the server, from the global
        model it sends and its own clip and weight scale (never from a hospital's reply)."""
        weights = [a.numpy() for a in arrays.values()]
        self.round_release = transcript.model_release(weights)  # what honest contributors sign
        plan = plan_from_config(self.settings.dp_config(), weights, self.settings.he_preset)
        clip, scale = (plan.layout_clip, plan.weight_scale) if plan else (self.round_clip, self.weight_scale)
        self.round_layout = UpdateLayout.of(
            weights, clip, scale, self.evaluation_layout.size
        )  # DP: the hospitals' own (privacy)
        return super().configure_train(server_round, arrays, config, grid)

    def round_config(self, server_round: int) -> dict:
        return {
            **super().round_config(server_round),
            p.CLIP: self.round_clip,
            p.WEIGHT_SCALE: self.weight_scale,
        }

    # -- set-up: strategies.setup_stages -------------------------------------------------------
    def setup(self, grid: Grid) -> None:
        started = time.perf_counter()
        if not self.settings.roster:
            self._simulation_dir = tempfile.mkdtemp(prefix="fedquorum-simulated-federation-")
        self.roster = roster = load_roster(self.settings, len(self.node_ids), self._simulation_dir)
        self.reachability = Reachability(roster, self.party_nodes, self.keys_lost, grid)
        stages = KeySetup(
            roster,
            int(grid.run.run_id),
            self.node_ids,
            self.task_config(),  # holds the preset and the roster fingerprint hospitals compare
            self.party_nodes,
            self.exchange,
            self.reply_name,
            self.report_phase,
        )
        self.key_setup = stages
        self.setup_transcript = setup = stages.run(dealings_ride_on_statistics=True)
        self.dealers = stages.dealers
        self.run_tags |= stages.tags
        self.node_ids = [self.party_nodes[party] for party in setup.parties]
        self.ctx = self.ctx.bound(setup.run_id)  # frames of this run only
        self.statistics_ctx = self.statistics_ctx.bound(setup.run_id)
        self.reachability.committee = tuple(setup.committee)
        sets = DecryptionSets(roster.quorum.min_decryption_set, self.settings.seed)
        public_keys = stages.public_key_shares(self.ctx)
        self.reveal = Reveal(
            roster, setup.run_id, self.ctx, self.reachability, sets, self.checks, self.exchange, public_keys
        )
        log.info(
            "set-up for %d hospitals (committee %d of %d, threshold %d, roster %s) ready in %.1f s",
            len(setup.parties),
            len(setup.committee),
            len(roster.committee),
            roster.threshold,
            roster.short_fingerprint,
            time.perf_counter() - started,
        )

    def exchange(
        self, messages: list[Message], what: str, refusals: Refusals | None = None
    ) -> Iterator[Message]:
        """Send ``messages``; yield the valid replies as they arrive. An error reply is logged as
        ``what: <hospital> failed: <reason>`` (and added to ``refusals``); bytes are counted."""
        self.traffic.bytes_down += sum(content_bytes(m.content) for m in messages)
        for reply in stream_replies(self.grid, messages, self.settings.round_timeout):
            if (reason := self.failure_reason(reply)) is not None:
                log.warning("%s: %s", what, reason)
                if refusals is not None:
                    refusals.add(self.reply_name(reply), reply)
                continue
            self.traffic.bytes_up += content_bytes(reply.content)
            yield reply

    def strategy_state(self) -> dict[str, float]:
        return {"round_clip": self.round_clip, "weight_scale": self.weight_scale}

    def load_strategy_state(self, state: dict[str, float]) -> None:
        self.round_clip = float(state.get("round_clip", self.round_clip))
        self.weight_scale = int(state.get("weight_scale", self.weight_scale))

    def known_name(self, node_id: int) -> str | None:
        """Its roster name once its signed hello has matched its node to the roster."""
        for party, node in self.party_nodes.items():
            if node == node_id:
                return self.roster.hospital(party).name
        return None

    # -- who is left: strategies.reachability -------------------------------------------------
    def failure_reason(self, reply: Message) -> str | None:
        """FedAvg's, and a hospital that says it restarted (``p.KEYS_LOST``) is out for the run."""
        reason = super().failure_reason(reply)
        if reason is not None and (hospital_reason(reply) or "").startswith(p.KEYS_LOST):
            node = reply.metadata.src_node_id
            party = next((k for k, n in self.party_nodes.items() if n == node), None)
            if party is not None:
                self.reachability.lose_keys(party)
        return reason

    def missing_name(self, node_id: int) -> str:
        name = self.hospital_name(node_id)
        lost = any(self.party_nodes.get(k) == node_id for k in self.keys_lost)
        return f"{name} ({p.KEYS_LOST})" if lost else name

    def quorum_gone(self) -> str | None:
        return self.reachability.quorum_gone()

    def skip_reason(self, server_round: int) -> tuple[str, list[str]] | None:
        """Skip a round no decryption set can serve; stop the run if that will not change (the
        model and the last checkpoint stay as they are)."""
        if (gone := self.quorum_gone()) is not None:
            raise RoundFailedError(f"round {server_round}: {gone}")
        down = self.reachability.keyholders_down()
        if (reason := self.reachability.quorum_shortfall(down)) is None:
            return None
        missing = [self.missing_name(self.party_nodes[k]) for k in sorted(down) if k in self.party_nodes]
        return reason, missing

    # -- aggregation ---------------------------------------------------------------------------
    def _sum_contributions(
        self, kind: str, round_id: int, replies, layout: UpdateLayout, release: str, what: str
    ):
        """Verified, summed contributions: (sum, signed statements, client metrics, seconds).

        A contribution signed for another release than the one the server asked for (another
        starting model or statistics pass) is left out here: every keyholder would refuse the
        whole aggregate for it (``client.keyholder``), so one hospital could sink the round."""
        total = CiphertextSum(self.statistics_ctx if kind == "statistics" else self.ctx, layout)
        statements, client_metrics, seconds = {}, [], 0.0
        for reply in replies:
            if (reason := self.failure_reason(reply)) is not None:
                log.warning("%s: %s; left out of the sum", what, reason)
                continue
            party = party_of(self.party_nodes, reply)
            self.traffic.bytes_up += content_bytes(reply.content)
            if kind == "statistics" and not metrics_of(reply).get("tabular"):
                continue
            started = time.perf_counter()
            try:
                if party not in self.dealers:
                    raise HEError("its secret was not dealt to the committee; it cannot contribute")
                blobs = blobs_of(reply)
                frame, statement = blobs[p.UPDATE], blobs[p.CONTRIBUTION]
                signed = transcript.verify_contribution(
                    self.roster, self.setup_transcript.run_id, kind, round_id, party, statement, frame
                )
                if signed.release != release:
                    raise HEError(f"signed for release {signed.release[:80]!r}, expected {release!r}")
                total.add(party, frame)
            except (HEError, KeyError) as err:
                log.warning("%s: update of %s rejected: %s", what, self.roster.hospital(party).name, err)
                continue
            finally:
                seconds += time.perf_counter() - started
            statements[party] = statement
            client_metrics.append(metrics_of(reply))
        return total, statements, client_metrics, seconds

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        total, statements, client_metrics, aggregate_seconds = self._sum_contributions(
            "train", server_round, replies, self.round_layout, self.round_release, f"round {server_round}"
        )
        self._check_contributors(len(statements), f"round {server_round}")
        self.notes.contributors = names(self.roster, sorted(statements))
        metrics = {"contributors": len(statements)}
        metrics["clip"] = self.round_clip
        try:
            result = self._reveal(
                "train", server_round, total.result, statements, self.ctx, self.round_replied
            )
        except WeightScaleError as err:
            self.weight_scale = weight_scale_for(err.total_examples, self.ctx.params)
            log.warning(
                "round %d: %s; the next round uses weight scale %d", server_round, err, self.weight_scale
            )
            result = None
        if result is None:
            metrics["round_skipped"] = 1
            return None, MetricRecord(metrics | self.pooled_metrics(None, client_metrics))
        metrics |= self.pooled_metrics(result.sums, client_metrics)
        self.notes.decryption_set = names(self.roster, result.keyholders)
        self.notes.outcome = f"aggregated (decryption attempt {result.attempts})"
        average, total_examples = result.average, result.total_examples
        metrics["decryption_attempts"] = result.attempts
        metrics["suspect_keyholders"] = len(result.suspects)
        metrics["weight_scale"] = self.weight_scale
        self.weight_scale = weight_scale_for(total_examples, self.ctx.params)
        self.round_clip = next_clip(average, self.clip_margin, self.ctx.params.clip)
        self.traffic.seconds = {
            "aggregate_seconds": aggregate_seconds,
            "decrypt_seconds": result.seconds,
            "client_decrypt_seconds": result.client_seconds,
        }
        return ArrayRecord([np.asarray(a, dtype=np.float64) for a in average]), MetricRecord(metrics)

    # -- final evaluation: the pooled sums, encrypted and decrypted like an update --------------
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's evaluate messages; hospitals encrypt only their evaluation sums, under the
        round id after the last (so no ``c1`` is reused), in a layout the server fixes here."""
        self.evaluation_update_layout = UpdateLayout.of(
            [], self.round_clip, self.weight_scale, self.evaluation_layout.size
        )
        self.evaluation_release = transcript.model_release([a.numpy() for a in arrays.values()])
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        round_id, what = self.settings.num_rounds + 1, "final evaluation"
        total, statements, client_metrics, _ = self._sum_contributions(
            "train", round_id, replies, self.evaluation_update_layout, self.evaluation_release, what
        )
        try:
            self._check_contributors(len(statements), what)
        except RoundFailedError as err:
            log.warning("%s", err)
            return None
        result = self._reveal("train", round_id, total.result, statements, self.ctx)
        if result is None:
            return None
        metrics = self.pooled_metrics(result.sums, client_metrics)
        self.final_evaluation = self.last_evaluation
        return MetricRecord(metrics)

    def _check_contributors(self, count: int, what: str) -> None:
        minimum = max(self.settings.min_train_nodes, self.roster.min_contributors)
        if count < minimum:
            raise RoundFailedError(
                f"{what}: {count} valid encrypted contributions, fewer than the minimum {minimum}; "
                "stopping the run"
            )
        self.ctx.params.check_contributors(count)

    def _reveal(
        self, kind: str, round_id: int, aggregate: EncryptedUpdate, statements: dict, encoding, replied=None
    ) -> Decryption | None:
        """``Reveal.decrypt`` for every caller: a skip is noted in the round line and is None."""
        result = self.reveal.decrypt(kind, round_id, aggregate, statements, encoding, replied)
        if isinstance(result, Skipped):
            self.notes.outcome = f"skipped: {result.reason}"
            return None
        return result

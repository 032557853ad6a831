"""Encrypted FedAvg: the server adds ciphertexts and a quorum of keyholders decrypts only the sum.

Set-up (once per run, three query phases, every message signed and checked against the
roster): signed hellos (``hello``), each hospital deals its per-run secret to the keyholders
that sent one, the run's committee K' (``deal``), each keyholder receives the sealed shares
dealt to it (``dealings``). Keyholders without a valid hello are named and left out while K'
keeps the roster's minimum (``Roster.setup_minimum``); below it the run stops, naming them.
Each round: ``train`` replies (``c0`` plus a signed digest) are verified and summed as they
arrive (memory: one aggregate); then ``query.decrypt`` goes to a decryption set T of keyholders,
which answer with masked shares; the masks cancel only in the sum over T. If a keyholder of T
does not answer, or the combined shares fail the noise check, or the decoded aggregate fails a
check against what the server knows (``strategies.plausibility``), a fresh attempt goes to another
set (``strategies.decryption_sets``: by elimination, naming suspects), up to the roster's
``max_attempts``; past that the round keeps the previous model and says why. The server never
holds a secret.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from common.records import blobs_of
from common.settings import RunSettings
from he import protocol as p
from he import transcript
from he.ciphertext import CiphertextLabel, CiphertextSum, EncryptedUpdate
from he.context import HEContext
from he.decrypt import DecryptionRequest, DecryptionShare, combine, decrypt_sums, decrypt_update
from he.encoding import UpdateLayout, WeightScaleError, decoding_error, weight_scale_for
from he.errors import HEError
from he.params import preset
from he.roster import Roster, write_simulated_federation
from privacy.mechanism import plan_from_config
from strategies import plausibility
from strategies.decryption_sets import DecryptionSets
from strategies.fedavg import FedAvg, FederationResult, RoundFailedError
from strategies.messaging import (
    Refusals,
    content_bytes,
    hospital_reason,
    make_content,
    metrics_of,
    stream_replies,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decryption:
    """A decrypted aggregate and what it took."""

    average: list[np.ndarray]
    total_examples: int
    seconds: float  # combining and decoding, on the server
    client_seconds: float  # mean partial-decryption time of a keyholder
    attempts: int
    suspects: list[str]  # keyholders named by elimination (see strategies.decryption_sets)
    keyholders: tuple[int, ...]  # the decryption set whose shares combined
    sums: list[int]  # the exact sums section: the pooled evaluation (models.pooled_metrics)


def next_clip(average: list[np.ndarray], margin: float, preset_clip: float) -> float:
    """The next round's clip: ``margin`` x the largest average value, as a power of two."""
    largest = max(float(np.max(np.abs(a))) for a in average if a.size)
    if margin <= 0 or largest <= 0:
        return preset_clip
    return float(min(preset_clip, 2.0 ** np.ceil(np.log2(margin * largest))))


def software_of(blob: bytes) -> str:
    """A hospital's self-reported versions, for the log only (bounded, never trusted)."""
    try:
        versions = json.loads(blob[:200])
        return ", ".join(f"{k} {str(versions[k])[:20]}" for k in ("fedquorum", "flwr"))
    except (ValueError, KeyError, TypeError):
        return "unreported versions"


class SetupFailedError(RuntimeError):
    """Key set-up could not complete (too few keyholders online, or the roster is contradicted)."""


class EncryptedFedAvg(FedAvg):
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
        self.party_nodes: dict[int, int] = {}
        self.dealers: set[int] = set()
        self._simulation_dir: str | None = None
        self.round_layout: UpdateLayout | None = None  # set by configure_train
        self.round_release = ""  # set by configure_train: the starting model's release key
        self.evaluation_release = ""  # set by configure_evaluate
        self.decryption_sets: DecryptionSets | None = None  # set by setup, from the roster's quorum
        self.known_totals = plausibility.KnownTotals()  # exact totals decrypted in this run
        self.evaluation_update_layout: UpdateLayout | None = None  # set by configure_evaluate
        self.software: dict[int, str] = {}  # party -> "fedquorum x, flwr y", from its hello reply
        self.hello_refusals = Refusals()  # hospitals whose hello was an error reply, with their reason
        self.keys_lost: set[int] = set()  # parties whose node restarted after the set-up (p.KEYS_LOST)

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

    # -- set-up ------------------------------------------------------------------------------
    def load_roster(self, num_hospitals: int) -> Roster:
        """The roster of ``settings.roster``; in simulation (none given), a fresh one per run."""
        settings = self.settings
        if settings.roster:
            roster = Roster.load(settings.roster)
        else:
            self._simulation_dir = tempfile.mkdtemp(prefix="fedquorum-simulated-federation-")
            roster = write_simulated_federation(
                self._simulation_dir,
                num_hospitals,
                threshold=settings.threshold,
                min_contributors=settings.min_train_nodes,
                preset=settings.he_preset,
            )
        if roster.preset != settings.he_preset:
            raise SetupFailedError(
                f"he_preset {settings.he_preset!r} differs from the roster's {roster.preset!r}"
            )
        if settings.threshold and settings.threshold != roster.threshold:
            raise SetupFailedError(
                f"threshold {settings.threshold} differs from the roster's {roster.threshold}"
            )
        self.ctx.params.check_federation(len(roster.committee), roster.max_attempts)
        if settings.num_rounds > self.ctx.params.max_rounds:
            raise SetupFailedError(
                f"num_rounds={settings.num_rounds} exceeds the {self.ctx.params.max_rounds} rounds "
                f"the {roster.preset} preset's noise flooding is sized for"
            )
        return roster

    def setup(self, grid: Grid) -> None:
        started = time.perf_counter()
        self.roster = roster = self.load_roster(len(self.node_ids))
        self.decryption_sets = DecryptionSets(roster.quorum.min_decryption_set, self.settings.seed)
        hellos = self._collect_hellos(grid)
        try:
            self.setup_transcript = setup = transcript.verify_hellos(roster, int(grid.run.run_id), hellos)
        except HEError as err:
            if self.hello_refusals.reasons:  # the hospitals' own reasons first, then what is missing
                summary = self.hello_refusals.summary("set-up", len(self.node_ids))
                raise SetupFailedError(f"{summary}; {err}") from None
            raise SetupFailedError(f"set-up: {err}") from None
        self._report_absent_keyholders(setup, roster)
        self.node_ids = [self.party_nodes[party] for party in self.setup_transcript.parties]
        self.ctx = self.ctx.bound(self.setup_transcript.run_id)  # frames of this run only
        self.statistics_ctx = self.statistics_ctx.bound(self.setup_transcript.run_id)
        relayed = {f"{p.HELLO_BLOB}-{party}": hello for party, hello in hellos.items()}
        deals = self._phase(grid, p.DEAL, hellos, lambda party: make_content({}, relayed))

        def dealings_for(keyholder: int):
            blobs = {}
            for dealer, blob in deals.items():
                share = blob.get(f"{p.SEALED_SHARE_PREFIX}{keyholder}")
                if share is not None and p.DEALING in blob:
                    blobs[f"{p.SEALED_SHARE_PREFIX}{dealer}"] = share
                    blobs[f"{p.DEALING}-{dealer}"] = blob[p.DEALING]
            return make_content({}, blobs)

        acks = self._phase(grid, p.DEALINGS, setup.committee, dealings_for)
        self.dealers = set(deals)
        for keyholder, blob in acks.items():
            complaints = set(json.loads(blob.get(p.COMPLAINTS, b"[]")))
            for dealer in complaints & self.dealers:
                log.warning(
                    "keyholder %s refused the share dealt by %s; %s is left out of every aggregate",
                    roster.hospital(keyholder).name,
                    roster.hospital(dealer).name,
                    roster.hospital(dealer).name,
                )
            self.dealers -= complaints
        log.info(
            "set-up for %d hospitals (committee %d of %d, threshold %d, roster %s) ready in %.1f s",
            len(setup.parties),
            len(setup.committee),
            len(roster.committee),
            roster.threshold,
            roster.short_fingerprint,
            time.perf_counter() - started,
        )

    def _report_absent_keyholders(self, setup: transcript.SetupTranscript, roster: Roster) -> None:
        """Name, in one log line and the run tag ``setup_missing_keyholders``, the roster's
        keyholders the set-up proceeds without (no valid hello: offline, or refused)."""
        if not setup.absent:
            return
        missing = ", ".join(setup.absent)
        log.warning(
            "set-up proceeds without keyholder(s) %s (no valid hello): %d of %d keyholders take part, "
            "the roster's minimum is %d",
            missing,
            len(setup.committee),
            len(roster.committee),
            roster.setup_minimum,
        )
        self.run_tags["setup_missing_keyholders"] = missing

    def _collect_hellos(self, grid: Grid) -> dict[int, bytes]:
        self.report_phase(f"key set-up: {p.HELLO}")
        config = self.task_config()  # holds the preset and the roster fingerprint hospitals compare
        messages = [
            Message(content=make_content(config), message_type=p.HELLO, dst_node_id=node, group_id="setup")
            for node in self.node_ids
        ]
        hellos: dict[int, bytes] = {}
        for reply in stream_replies(grid, messages, self.settings.round_timeout):
            if (reason := self.failure_reason(reply)) is not None:
                log.warning("hello: %s", reason)
                self.hello_refusals.add(self.reply_name(reply), reply)
                continue
            hello = blobs_of(reply).get(p.HELLO_BLOB, b"")
            try:
                party = transcript.hello_sender(self.roster, hello)
            except HEError as err:
                log.warning("hello of %s refused: %s", self.reply_name(reply), err)
                continue
            if party in hellos:
                log.warning("a second hello claims to be %s; refused", self.roster.hospital(party).name)
                continue
            hellos[party] = hello
            self.party_nodes[party] = reply.metadata.src_node_id
            self.software[party] = software_of(blobs_of(reply).get(p.SOFTWARE, b""))
        self._report_software()
        return hellos

    def _report_software(self) -> None:
        """Log each hospital's fedquorum and Flower versions; warn when they differ."""
        for party, software in sorted(self.software.items()):
            log.info("%s runs %s", self.roster.hospital(party).name, software)
        if len(set(self.software.values())) > 1:
            log.warning("hospitals run different software versions: %s", sorted(set(self.software.values())))

    def _phase(self, grid: Grid, message_type: str, parties, content_for) -> dict[int, dict[str, bytes]]:
        """Send one set-up message to each of ``parties``; the replies of those that succeeded."""
        self.report_phase(f"key set-up: {message_type}")
        messages = [
            Message(
                content=content_for(party),
                message_type=message_type,
                dst_node_id=self.party_nodes[party],
                group_id="setup",
            )
            for party in parties
        ]
        out = {}
        for reply in stream_replies(grid, messages, self.settings.round_timeout):
            if (reason := self.failure_reason(reply)) is not None:
                log.warning("%s: %s", message_type, reason)
                continue
            out[self._party_of(reply)] = blobs_of(reply)
        return dict(sorted(out.items()))

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

    def _party_of(self, reply: Message) -> int:
        node = reply.metadata.src_node_id
        return next(party for party, n in self.party_nodes.items() if n == node)

    # -- who is left: hospitals that restarted, keyholders that failed ---------------------------
    def failure_reason(self, reply: Message) -> str | None:
        """FedAvg's, and a hospital that says it restarted (``p.KEYS_LOST``) is out for the run."""
        reason = super().failure_reason(reply)
        if reason is not None and (hospital_reason(reply) or "").startswith(p.KEYS_LOST):
            self._lost_keys(reply.metadata.src_node_id)
        return reason

    def _lost_keys(self, node_id: int) -> None:
        party = next((k for k, n in self.party_nodes.items() if n == node_id), None)
        if party is None or party in self.keys_lost:
            return
        self.keys_lost.add(party)
        quorum = self.roster.quorum
        left = len(set(quorum.committee) - self.keys_lost)
        log.warning(
            "%s %s: it is left out of the rest of this run (%d of %d keyholders keep their keys, a "
            "decryption set needs %d)",
            self.roster.hospital(party).name,
            p.KEYS_LOST,
            left,
            len(quorum.committee),
            quorum.min_decryption_set,
        )

    def missing_name(self, node_id: int) -> str:
        name = self.hospital_name(node_id)
        lost = any(self.party_nodes.get(k) == node_id for k in self.keys_lost)
        return f"{name} ({p.KEYS_LOST})" if lost else name

    @property
    def run_committee(self) -> tuple[int, ...]:
        """K': the keyholders of this run's set-up (only they hold dealt shares), before it the
        roster's committee."""
        setup = self.setup_transcript
        return tuple(setup.committee) if setup is not None else self.roster.quorum.committee

    def keyholders_down(self, replied: set[int] | None = None) -> dict[int, str]:
        """Committee members no decryption can count on now, with why: restarted (their keys are
        gone for the run), offline at the SuperLink, or (``replied``: the nodes that answered this
        round's train phase at all) silent this round. A keyholder whose training failed or was
        refused replied with an error: it is online and may still decrypt."""
        online = set(self.grid.get_node_ids()) if self.grid is not None else set(self.party_nodes.values())
        down = {}
        for keyholder in self.run_committee:
            node = self.party_nodes.get(keyholder)
            if keyholder in self.keys_lost:
                down[keyholder] = p.KEYS_LOST
            elif node not in online:
                down[keyholder] = "offline"
            elif replied is not None and node not in replied:
                down[keyholder] = "silent this round"
        return down

    def quorum_shortfall(self, down: dict[int, str]) -> str | None:
        """One line naming the missing keyholders if those left cannot form a decryption set."""
        quorum = self.roster.quorum
        left = len([k for k in self.run_committee if k in self.party_nodes and k not in down])
        if left >= quorum.min_decryption_set:
            return None
        named = ", ".join(f"{self.roster.hospital(k).name} ({why})" for k, why in sorted(down.items()))
        return (
            f"keyholder(s) {named} missing: {left} of {len(quorum.committee)} keyholders left, a "
            f"decryption set needs {quorum.min_decryption_set}"
        )

    def quorum_gone(self) -> str | None:
        """Restarted keyholders alone leave too few for any decryption set: their keys do not come
        back within this run, so no later round can be decrypted (a resumed run sets up afresh)."""
        shortfall = self.quorum_shortfall(dict.fromkeys(self.keys_lost, p.KEYS_LOST))
        if shortfall is None:
            return None
        return (
            f"{shortfall}; no later round can be decrypted, stopping the run (resume it once the "
            "keyholders are back)"
        )

    def skip_reason(self, server_round: int) -> tuple[str, list[str]] | None:
        """Skip a round no decryption set can serve; stop the run if that will not change (the
        model and the last checkpoint stay as they are)."""
        if (gone := self.quorum_gone()) is not None:
            raise RoundFailedError(f"round {server_round}: {gone}")
        down = self.keyholders_down()
        if (reason := self.quorum_shortfall(down)) is None:
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
            party = self._party_of(reply)
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

    def average_statistics(self, grid: Grid, pass_name: str, extra: dict) -> list[np.ndarray] | None:
        """One statistics pass: sum the hospitals' encrypted values, decrypt only the sum.

        The first pass runs at the preset's default weight scale; if the federation is too large
        for it, the exact total is still decoded and the pass runs once more, rescaled, under its
        own round id (``p.MOMENTS_RESCALED_ROUND``: a ``c1`` is never reused).
        """
        round_id = p.STATISTICS_PASSES[pass_name]
        try:
            return self._statistics_pass(grid, pass_name, round_id, extra)
        except WeightScaleError as err:
            if round_id != p.STATISTICS_PASSES["moments"]:
                raise RoundFailedError(f"feature statistics ({pass_name}): {err}") from None
            self.statistics_scale = weight_scale_for(err.total_examples, self.statistics_ctx.params)
            log.info("feature statistics: %s; again at weight scale %d", err, self.statistics_scale)
            return self._statistics_pass(grid, pass_name, p.MOMENTS_RESCALED_ROUND, extra)

    def _statistics_pass(self, grid: Grid, pass_name: str, round_id: int, extra: dict):
        scale = {p.ROUND: round_id, p.WEIGHT_SCALE: self.statistics_scale}
        replies = self.statistics_replies(grid, pass_name, {**extra, **scale})
        features = self.settings.num_features  # client.task.feature_statistics: per-feature arrays
        shapes = [np.zeros(features)] * (2 if pass_name == "moments" else 1)
        params = self.statistics_ctx.params
        layout = UpdateLayout.of(shapes, params.clip, self.statistics_scale)
        total, statements, _, _ = self._sum_contributions(
            "statistics",
            round_id,
            replies,
            layout,
            transcript.statistics_release(pass_name),
            f"feature statistics ({pass_name})",
        )
        if not statements:
            return None
        self._check_contributors(len(statements), f"feature statistics ({pass_name})")
        result = self._decrypt("statistics", round_id, total.result, statements, self.statistics_ctx)
        if result is None:
            raise RoundFailedError(f"feature statistics ({pass_name}) could not be decrypted")
        average, total_examples = result.average, result.total_examples
        self.statistics_scale = weight_scale_for(total_examples, self.statistics_ctx.params)
        self.weight_scale = weight_scale_for(total_examples, self.ctx.params)  # for round 1
        return average

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        total, statements, client_metrics, aggregate_seconds = self._sum_contributions(
            "train", server_round, replies, self.round_layout, self.round_release, f"round {server_round}"
        )
        self._check_contributors(len(statements), f"round {server_round}")
        self.notes.contributors = self._names(sorted(statements))
        metrics = {"contributors": len(statements)}
        metrics["clip"] = self.round_clip
        try:
            result = self._decrypt(
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
        self.notes.decryption_set = self._names(result.keyholders)
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
        result = self._decrypt("train", round_id, total.result, statements, self.ctx)
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

    def _decrypt(
        self,
        kind: str,
        round_id: int,
        aggregate: EncryptedUpdate,
        statements: dict,
        encoding,
        replied: set[int] | None = None,
    ):
        """Up to ``max_attempts`` decryption attempts, each with a set chosen by elimination
        (``strategies.decryption_sets``); a ``Decryption``, or None when every attempt failed
        (each failure, and any suspect keyholder, is logged by name). Keyholders known to be down
        (``keyholders_down``, with ``replied`` of a training round) are not asked: when those
        left cannot form a decryption set, no keyholder is asked and the round is skipped at once."""
        roster = self.roster
        sets = self.decryption_sets
        sets.begin()
        label = CiphertextLabel(roster.federation_id, self.setup_transcript.run_id, kind, round_id)
        down = self.keyholders_down(replied)
        available = set(self.setup_transcript.committee) - set(down)  # K': only they hold dealt shares
        relayed = {f"{p.CONTRIBUTION}-{party}": s for party, s in statements.items()}
        noise_bits = self.ctx.params.decryption_noise_bits(len(roster.quorum.committee), roster.max_attempts)
        what = f"{kind} round {round_id}" if kind == "train" else f"feature statistics {round_id}"
        if (shortfall := self.quorum_shortfall(down)) is not None:
            log.warning("%s: %s; no keyholder asked, the round keeps the previous model", what, shortfall)
            self.notes.outcome = f"skipped: {shortfall}"
            return None
        for attempt in range(1, roster.max_attempts + 1):
            keyholders = sets.choose(available)
            if keyholders is None:
                log.warning(
                    "%s: %d keyholders left, the quorum needs %d; the round keeps the previous model",
                    what,
                    len(available),
                    sets.min_size,
                )
                self.notes.outcome = (
                    f"skipped: {len(available)} keyholders left, a decryption set needs {sets.min_size}"
                )
                self._name_suspects(what)
                return None
            request = DecryptionRequest(label, attempt, tuple(statements), keyholders, len(aggregate.c0))
            shares, client_seconds = self._collect_shares(
                what, request, self._decrypt_messages(request, relayed)
            )
            if len(shares) < len(keyholders):
                silent = set(keyholders) - {s.party for s in shares}
                available -= silent
                sets.silent(silent)
                log.warning(
                    "%s attempt %d: no valid share from %s; trying again without them",
                    what,
                    attempt,
                    self._names(sorted(silent)),
                )
                continue
            started = time.perf_counter()
            try:
                fields = combine(self.ctx, aggregate, shares, request, noise_bits)
                average, total_examples, sums = self._decode_checked(
                    kind, encoding, aggregate, fields, statements
                )
            except WeightScaleError:
                sets.succeeded(keyholders)
                self._name_suspects(what)
                raise  # a plausible total beyond this scale: the caller rescales, no retry helps
            except (
                HEError
            ) as err:  # the noise bound, or an invalid aggregate (a share altered on payload rows)
                sets.failed(keyholders)
                log.warning("%s attempt %d with %s failed: %s", what, attempt, self._names(keyholders), err)
                continue
            sets.succeeded(keyholders)
            suspects = self._name_suspects(what)
            seconds = time.perf_counter() - started
            client = float(np.mean(client_seconds))
            return Decryption(average, total_examples, seconds, client, attempt, suspects, keyholders, sums)
        log.warning(
            "%s: all %d decryption attempts failed; the round keeps the previous model", what, attempt
        )
        self.notes.outcome = f"skipped: all {attempt} decryption attempts failed"
        self._name_suspects(what)
        return None

    def _decode_checked(self, kind: str, encoding, aggregate: EncryptedUpdate, fields, statements: dict):
        """Decode, then check the aggregate against what the server knows without it
        (``strategies.plausibility``); a weight-scale overflow is let through only with a
        plausible total, so the server never takes a scale from an implausible one."""
        contributors = set(statements)
        unit_weights = kind == "train" and (not aggregate.layout.shapes or self.settings.dp != "off")
        try:
            average, total_examples = decrypt_update(encoding, aggregate, fields)
        except WeightScaleError as err:
            plausibility.check_total(err.total_examples, contributors, unit_weights, self.known_totals)
            raise
        plausibility.check_total(total_examples, contributors, unit_weights, self.known_totals)
        sums = decrypt_sums(encoding, aggregate, fields)
        if aggregate.layout.sums:
            expected = 0 if unit_weights else total_examples
            plausibility.check_evaluation(self.evaluation_layout, sums, expected)
        if kind == "statistics":
            error = decoding_error(encoding.params, aggregate.layout, len(contributors), total_examples)
            plausibility.check_statistics(average, error)
        if not unit_weights:
            self.known_totals.record(contributors, total_examples)
        return average, total_examples, sums

    def _decrypt_messages(self, request: DecryptionRequest, relayed: dict) -> list[Message]:
        label = request.label
        config = {
            p.KIND: label.kind,
            p.ROUND: label.round_id,
            p.ATTEMPT: request.attempt,
            p.KEYHOLDERS: ",".join(map(str, request.keyholders)),
        }
        messages = [
            Message(
                content=make_content(config, relayed),
                message_type=p.DECRYPT,
                dst_node_id=self.party_nodes[k],
                group_id=f"{label.kind}-{label.round_id}-{request.attempt}",
            )
            for k in request.keyholders
        ]
        self.traffic.bytes_down += sum(content_bytes(m.content) for m in messages)
        return messages

    def _name_suspects(self, what: str) -> list[str]:
        """Name the keyholders elimination could not clear (one of them sent a bad share)."""
        suspects = self._names(self.decryption_sets.finish())
        if suspects:
            log.warning(
                "%s: SUSPECT keyholder(s) %s: in a decryption set whose shares failed their check and "
                "in none that passed; one of them sent a tampered share (or was dealt an inconsistent one)",
                what,
                ", ".join(suspects),
            )
        return suspects

    def _names(self, parties) -> list[str]:
        return [self.roster.hospital(k).name for k in parties]

    def _collect_shares(self, what: str, request: DecryptionRequest, messages: list[Message]):
        shares, client_seconds = [], []
        for reply in stream_replies(self.grid, messages, self.settings.round_timeout):
            if (reason := self.failure_reason(reply)) is not None:
                log.warning("%s decryption: %s", what, reason)
                continue
            party = self._party_of(reply)
            self.traffic.bytes_up += content_bytes(reply.content)
            try:
                share = DecryptionShare.from_bytes(
                    self.ctx, blobs_of(reply)[p.DECRYPTION_SHARE], f"party {party}"
                )
            except (HEError, KeyError) as err:
                log.warning(
                    "%s: decryption share of %s rejected: %s", what, self.roster.hospital(party).name, err
                )
                continue
            expected = (request.num_ciphertexts, len(self.ctx.data_moduli), self.ctx.n)
            claims = (share.party, share.round_id, share.attempt, share.polys.shape)
            if claims != (party, request.label.round_id, request.attempt, expected):
                log.warning(
                    "%s: share of %s is for (party, round, attempt, shape) %s, expected %s; "
                    "rejected, and the next attempt goes without it",
                    what,
                    self.roster.hospital(party).name,
                    claims,
                    (party, request.label.round_id, request.attempt, expected),
                )
                continue
            shares.append(share)
            client_seconds.append(float(metrics_of(reply).get("decrypt_seconds", 0.0)))
        return shares, client_seconds

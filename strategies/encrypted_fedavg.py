"""Encrypted FedAvg: the server adds ciphertexts and a quorum of hospitals decrypts only the sum.

Set-up (once per run, three query phases): CRS contributions and channel keys (``hello``),
public-key shares and sealed Shamir shares (``keygen``), the collective key and each hospital's
shares relayed (``keyshares``). Each round: ``train`` replies are validated and summed as they
arrive (memory: one aggregate); then ``query.decrypt`` goes to the contributors and any t
decryption shares reveal the weighted average update. The server never holds a secret key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp import Grid

from he import keygen as hekeygen
from he import protocol as p
from he.ciphertext import CiphertextSum, c1_to_bytes
from he.context import HEContext
from he.decrypt import DecryptionShare, combine, decrypt_update
from he.errors import HEError
from he.params import preset
from server.settings import RunSettings
from strategies.fedavg import FedAvg, RoundFailedError, weighted_client_metrics
from strategies.messaging import (
    blobs_of,
    content_bytes,
    failure_reason,
    make_content,
    metrics_of,
    stream_replies,
)

log = logging.getLogger(__name__)


def next_clip(average: list[np.ndarray], margin: float, preset_clip: float) -> float:
    """The next round's clip: ``margin`` x the largest average value, as a power of two."""
    largest = max(float(np.max(np.abs(a))) for a in average if a.size)
    if margin <= 0 or largest <= 0:
        return preset_clip
    return float(min(preset_clip, 2.0 ** np.ceil(np.log2(margin * largest))))


class SetupFailedError(RuntimeError):
    """Key set-up needs every hospital; one failed."""


class EncryptedFedAvg(FedAvg):
    """FedAvg whose aggregation happens under threshold CKKS (see module docstring)."""

    def __init__(self, settings: RunSettings, clip_margin: float = 8.0) -> None:
        """``clip_margin``: after each round the clip range becomes ``clip_margin`` times the
        largest value of the decrypted average update (as a power of two, never above the
        preset's clip), so the quantizer's bins follow the updates as they shrink; 0 keeps
        the preset's clip. Values a hospital clips are counted in ``clipped_values``."""
        super().__init__(settings)
        self.ctx = HEContext(preset(settings.he_preset))
        self.statistics_ctx = HEContext(self.ctx.params.for_feature_statistics())
        self.threshold = 0
        self.clip_margin = clip_margin
        self.round_clip = self.ctx.params.clip

    def round_config(self, server_round: int) -> dict:
        return {**super().round_config(server_round), p.CLIP: self.round_clip}

    # -- set-up ------------------------------------------------------------------------------
    def setup(self, grid: Grid) -> None:
        n = len(self.node_ids)
        self.threshold = self.settings.threshold or n
        self.ctx.params.check_federation(n, self.threshold)
        if self.threshold > self.settings.min_train_nodes and self.threshold < n:
            log.warning(
                "threshold %d exceeds min_train_nodes; rounds need %d live hospitals",
                self.threshold,
                self.threshold,
            )
        base = {
            **self.settings.task_config(),
            p.PRESET: self.settings.he_preset,
            p.NUM_PARTIES: n,
            p.THRESHOLD: self.threshold,
        }
        started = time.perf_counter()
        hello = self._setup_phase(grid, p.HELLO, lambda party: make_content({**base, p.PARTY: party}))
        contributions = {f"{p.CONTRIBUTION}-{j}": b[p.CONTRIBUTION] for j, b in hello.items()}
        channel_keys = {f"{p.CHANNEL_KEY}-{j}": b[p.CHANNEL_KEY] for j, b in hello.items()}
        keygen_replies = self._setup_phase(
            grid, p.KEYGEN, lambda party: make_content({p.PARTY: party}, contributions | channel_keys)
        )
        crp = hekeygen.sample_crp(self.ctx, hekeygen.crs_seed([hello[j][p.CONTRIBUTION] for j in hello]))
        shares = [
            hekeygen.PublicKeyShare.from_bytes(self.ctx, b[p.KEY_SHARE], f"hospital {j}")
            for j, b in keygen_replies.items()
        ]
        public_key = hekeygen.gen_public_key(
            self.ctx, crp, hekeygen.aggregate_public_key_shares(self.ctx, shares)
        )

        def relay(party: int):
            sealed = {
                f"{p.SEALED_SHARE_PREFIX}{sender}": b[f"{p.SEALED_SHARE_PREFIX}{party}"]
                for sender, b in keygen_replies.items()
                if sender != party and self.threshold < n
            }
            return make_content(
                {p.PARTY: party}, {p.PUBLIC_KEY: public_key.tobytes(), **sealed, **channel_keys}
            )

        self._setup_phase(grid, p.KEYSHARES, relay)
        log.info(
            "collective key for %d hospitals (%d-of-%d) ready in %.1f s",
            n,
            self.threshold,
            n,
            time.perf_counter() - started,
        )

    def _setup_phase(self, grid: Grid, message_type: str, content_for) -> dict[int, dict[str, bytes]]:
        messages = [
            Message(
                content=content_for(party), message_type=message_type, dst_node_id=node_id, group_id="setup"
            )
            for party, node_id in enumerate(self.node_ids, start=1)
        ]
        out = {}
        for reply in stream_replies(grid, messages, self.settings.round_timeout):
            if (reason := failure_reason(reply)) is not None:
                raise SetupFailedError(f"{message_type}: {reason}")
            out[self._party_of(reply)] = blobs_of(reply)
        if len(out) != len(self.node_ids):
            raise SetupFailedError(f"{message_type}: {len(out)} of {len(self.node_ids)} hospitals replied")
        return dict(sorted(out.items()))

    def average_statistics(self, grid: Grid, pass_name: str, extra: dict) -> list[np.ndarray] | None:
        """One statistics pass: sum the hospitals' encrypted values, decrypt only the sum."""
        total = CiphertextSum(self.statistics_ctx)
        for reply in self.statistics_replies(grid, pass_name, extra):
            if not metrics_of(reply).get("tabular"):
                continue
            party = self._party_of(reply)
            try:
                total.add(str(party), blobs_of(reply)[p.UPDATE])
            except (HEError, KeyError) as err:
                log.warning("feature statistics of hospital %s rejected: %s", party, err)
        if not total.contributors:
            return None
        contributors = [int(c) for c in total.contributors]
        average, *_ = self._decrypt(
            p.STATISTICS_PASSES[pass_name], total.result, contributors, self.statistics_ctx
        )
        return average

    def _party_of(self, reply: Message) -> int:
        return self.node_ids.index(reply.metadata.src_node_id) + 1

    # -- rounds ------------------------------------------------------------------------------
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        total = CiphertextSum(self.ctx)
        client_metrics, aggregate_seconds = [], 0.0
        for reply in replies:
            if (reason := failure_reason(reply)) is not None:
                log.warning("round %d: %s; left out of the sum", server_round, reason)
                continue
            party = self._party_of(reply)
            self.traffic.bytes_up += content_bytes(reply.content)
            started = time.perf_counter()
            try:
                total.add(str(party), blobs_of(reply)[p.UPDATE])
            except (HEError, KeyError) as err:
                log.warning("round %d: update of hospital %s rejected: %s", server_round, party, err)
                continue
            finally:
                aggregate_seconds += time.perf_counter() - started
            client_metrics.append(metrics_of(reply))
        contributors = [int(c) for c in total.contributors]
        if len(contributors) < self.settings.min_train_nodes:
            raise RoundFailedError(
                f"round {server_round}: {len(contributors)} valid encrypted updates, "
                f"min_train_nodes={self.settings.min_train_nodes}; stopping the run"
            )
        aggregate = total.result
        average, decrypt_seconds, client_decrypt = self._decrypt(
            server_round, aggregate, contributors, self.ctx
        )
        metrics = weighted_client_metrics(client_metrics)
        metrics["contributors"] = len(contributors)
        metrics["clip"] = self.round_clip
        self.round_clip = next_clip(average, self.clip_margin, self.ctx.params.clip)
        self.traffic.seconds = {
            "aggregate_seconds": aggregate_seconds,
            "decrypt_seconds": decrypt_seconds,
            "client_decrypt_seconds": client_decrypt,
        }
        return ArrayRecord([np.asarray(a, dtype=np.float64) for a in average]), MetricRecord(metrics)

    def _decrypt(self, server_round: int, aggregate, contributors: list[int], encoding: HEContext):
        """The decryption phase: ask the live hospitals, combine any t shares, decode with ``encoding``."""
        n = len(self.node_ids)
        askable = contributors if self.threshold < n else list(range(1, n + 1))
        config = {
            p.ROUND: server_round,
            p.CONTRIBUTORS: ",".join(map(str, contributors)),
            p.MIN_CONTRIBUTORS: self.settings.min_train_nodes,
        }
        c1 = c1_to_bytes(self.ctx, aggregate)  # the ring's frame, also for statistics passes
        messages = [
            Message(
                content=make_content(config, {p.AGGREGATE_C1: c1}),
                message_type=p.DECRYPT,
                dst_node_id=self.node_ids[party - 1],
                group_id=str(server_round),
            )
            for party in askable
        ]
        self.traffic.bytes_down += sum(content_bytes(m.content) for m in messages)
        shares, client_seconds = [], []
        for reply in stream_replies(self.grid, messages, self.settings.round_timeout):
            if (reason := failure_reason(reply)) is not None:
                log.warning("round %d decryption: %s", server_round, reason)
                continue
            party = self._party_of(reply)
            self.traffic.bytes_up += content_bytes(reply.content)
            try:
                share = DecryptionShare.from_bytes(
                    self.ctx, blobs_of(reply)[p.DECRYPTION_SHARE], f"hospital {party}"
                )
            except (HEError, KeyError) as err:
                log.warning(
                    "round %d: decryption share of hospital %s rejected: %s", server_round, party, err
                )
                continue
            if share.party != party or share.round_id != server_round:
                log.warning(
                    "round %d: share of hospital %s is for party %s round %s; rejected",
                    server_round,
                    party,
                    share.party,
                    share.round_id,
                )
                continue
            shares.append(share)
            client_seconds.append(float(metrics_of(reply).get("decrypt_seconds", 0.0)))
        if len(shares) < self.threshold:
            raise RoundFailedError(
                f"round {server_round}: {len(shares)} decryption shares, {self.threshold} needed; "
                "stopping the run"
            )
        started = time.perf_counter()
        fields = combine(self.ctx, aggregate, shares, n, self.threshold)
        average, _total_examples = decrypt_update(encoding, aggregate, fields)
        return average, time.perf_counter() - started, float(np.mean(client_seconds))

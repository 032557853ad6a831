"""The feature statistics before round 1: two passes that give every hospital the federation's
per-feature mean and std for standardization (empty for images). Plaintext FedAvg averages the
passes in the clear; ``EncryptedFedAvg.average_statistics`` sums them encrypted and reveals
only the sum."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from flwr.app import Message
from flwr.serverapp import Grid

from common import protocol as p
from strategies.messaging import Refusals, make_content, metrics_of, stream_replies
from strategies.run_record import RoundFailedError

log = logging.getLogger(__name__)


class FeatureStatistics:
    """The passes of a strategy (``FedAvg`` mixes this in: its settings, nodes and config)."""

    def collect_feature_statistics(self, grid: Grid) -> dict:
        """Global per-feature mean and std for standardization, in two passes (empty for images).

        Pass 1 averages each feature's mean and mean square; pass 2 the spread around the global
        mean, scaled by the global root mean square (``client.local_data.feature_statistics``).
        """
        moments = self.average_statistics(grid, "moments", {})
        if moments is None:
            return {}
        mean, mean_square = moments
        scale = np.sqrt(np.clip(mean_square, 0.0, None))
        scale = np.where(scale > 0, scale, 1.0)
        location = {p.FEATURE_MEAN: [float(v) for v in mean], p.FEATURE_SCALE: [float(v) for v in scale]}
        (spread,) = self.average_statistics(grid, "spread", location)
        std = scale * np.sqrt(np.clip(spread, 0.0, None))
        return {p.FEATURE_MEAN: location[p.FEATURE_MEAN], p.FEATURE_STD: [float(v) for v in std]}

    def average_statistics(self, grid: Grid, pass_name: str, extra: dict) -> list[np.ndarray] | None:
        """One statistics pass, averaged over hospitals by example count (here: in the clear)."""
        values = [
            (float(metrics_of(r)[p.NUM_EXAMPLES]), [a.numpy() for a in r.content[p.ARRAYS].values()])
            for r in self.statistics_replies(grid, pass_name, extra)
            if metrics_of(r).get("tabular")
        ]
        if not values:
            return None
        total = sum(n for n, _ in values)
        return [sum(n * arrays[i] for n, arrays in values) / total for i in range(len(values[0][1]))]

    def statistics_replies(
        self, grid: Grid, pass_name: str, extra: dict, relay: Callable[[int], tuple[dict, dict]] | None = None
    ) -> list[Message]:
        """The valid replies of one pass; ``relay`` (by node id: config and blobs) adds what else
        the message carries (the encrypted run's first pass: each keyholder's dealings)."""
        config = {
            **self.task_config(),
            **extra,
            p.ENCRYPTED: self.settings.encrypted,
            p.STATISTICS_PASS: pass_name,
        }
        messages = []
        for party, node_id in enumerate(self.node_ids, start=1):
            more, blobs = relay(node_id) if relay else ({}, {})
            messages.append(
                Message(
                    content=make_content({**config, **more, p.PARTY: party}, blobs),
                    message_type=p.STATISTICS,
                    dst_node_id=node_id,
                    group_id="setup",
                )
            )
        replies, refusals = [], Refusals()
        for reply in stream_replies(grid, messages, self.settings.round_timeout):
            if (reason := self.failure_reason(reply)) is not None:
                log.warning("feature statistics (%s): %s; left out", pass_name, reason)
                refusals.add(self.reply_name(reply), reply)
                continue
            replies.append(reply)
        if len(replies) < self.settings.min_train_nodes and refusals.reasons:
            raise RoundFailedError(refusals.summary(f"feature statistics ({pass_name})", len(messages)))
        if len(replies) < self.settings.min_train_nodes:
            raise RoundFailedError(
                f"feature statistics ({pass_name}): {len(replies)} hospitals replied, "
                f"min_train_nodes={self.settings.min_train_nodes}"
            )
        return replies

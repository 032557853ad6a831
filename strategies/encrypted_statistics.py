"""The encrypted feature-statistics passes before round 1: each pass is summed encrypted and
only the sum is revealed, as a round's update is; the first pass also relays the dealings."""

from __future__ import annotations

import logging

import numpy as np
from flwr.serverapp import Grid

from common import protocol as p
from he import transcript
from he.encoding import UpdateLayout, WeightScaleError, weight_scale_for
from strategies.run_record import RoundFailedError

log = logging.getLogger(__name__)


class EncryptedFeatureStatistics:
    """The passes of ``EncryptedFedAvg`` (mixed in before ``FedAvg``, whose plaintext passes it
    replaces): its key set-up, contexts, sums and reveal."""

    def collect_feature_statistics(self, grid: Grid) -> dict:
        """The passes (the first relays the dealings); had none been sent, the dealings go out in
        a ``query.dealings`` phase of their own before round 1."""
        statistics = super().collect_feature_statistics(grid)
        if self.key_setup is not None and self.key_setup.dealings_pending:
            self.key_setup.dealings()
            self.dealers = self.key_setup.dealers
        return statistics

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
        stages = self.key_setup
        relay = stages.dealings_content if stages is not None and stages.dealings_pending else None
        replies = self.statistics_replies(grid, pass_name, {**extra, **scale}, relay)
        if relay is not None:  # the complaints first: a complained-about dealer contributes nothing
            stages.statistics_complaints(replies)
            self.dealers = stages.dealers
        features = self.settings.num_features  # client.local_data.feature_statistics: per-feature arrays
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
        result = self._reveal("statistics", round_id, total.result, statements, self.statistics_ctx)
        if result is None:
            raise RoundFailedError(f"feature statistics ({pass_name}) could not be decrypted")
        average, total_examples = result.average, result.total_examples
        self.statistics_scale = weight_scale_for(total_examples, self.statistics_ctx.params)
        self.weight_scale = weight_scale_for(total_examples, self.ctx.params)  # for round 1
        return average

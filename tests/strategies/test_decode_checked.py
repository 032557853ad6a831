"""The strategy's decode path: a weight-scale overflow is believed only with a plausible total."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from common.settings import RunSettings
from he.encoding import UpdateEncoder, WeightScaleError, weight_scale_for
from strategies.encrypted_fedavg import EncryptedFedAvg
from strategies.plausibility import ImplausibleAggregateError


def test_an_overflow_with_a_total_the_run_contradicts_is_a_fault_not_a_rescale() -> None:
    strategy = EncryptedFedAvg(RunSettings(strategy="encrypted_fedavg", he_preset="precise"))
    ctx = strategy.ctx
    encoder = UpdateEncoder(ctx.params, ctx.num_payload)
    rng = np.random.default_rng(0)
    scale = weight_scale_for(1200, ctx.params)  # room for about 2400 examples
    encoded = [encoder.encode([np.zeros(3)], 1000, rng, weight_scale=scale) for _ in range(3)]
    aggregate = SimpleNamespace(layout=encoded[0].layout, contributors=3)
    fields, statements = sum(e.fields for e in encoded), {1: b"", 2: b"", 3: b""}
    with pytest.raises(WeightScaleError):  # nothing known yet: a real rescale
        strategy.checks.decode("statistics", ctx, aggregate, fields, set(statements))
    strategy.checks.known_totals.record({1, 2, 3, 4}, 2000)  # a superset decrypted before: at most 1999
    with pytest.raises(
        ImplausibleAggregateError,
        match="total 3000 of 3 contributors; expected at most 1999",
    ):
        strategy.checks.decode("statistics", ctx, aggregate, fields, set(statements))

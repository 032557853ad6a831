"""Survival: a Cox model (risk = the model's one output), evaluated by a pooled concordance index.

**Loss.** The negative Cox partial log-likelihood with Breslow ties, averaged over the events
of a batch: ``-(1/D) Σ_{i: d_i=1} [η_i - log Σ_{j: t_j ≥ t_i} exp η_j]``. Risk sets are those
of the batch, so each hospital's likelihood is stratified by hospital (and by batch: use large
batches). The loss is not a sum over examples, so DP-SGD (record-level DP) is refused.

**Pooled concordance (Harrell's C).** A pair (i, j) is comparable when i had the event and
``t_i < t_j``; it is concordant when ``η_i > η_j`` (a tie in η counts 1/2); C is concordant over
comparable pairs. Pairs cross hospitals, so each hospital sends two integer histograms over
(time bin a × risk bin m): ``events[a, m]`` (its events) and ``subjects[a, m]`` (all its test
subjects, by observed time). Time bins split [0, ``horizon``) into ``time_bins`` equal bins
(later times fall in the last); risk bins split sigmoid(η) ∈ [0, 1] into ``risk_bins`` equal
bins, a fixed function, so bins agree across hospitals. From the federation-wide sums E and N:

- an event in time bin a and a subject in a later bin b > a are surely comparable:
  ``P = Σ_a E_a · Σ_{b>a} N_b``;
- among those, a higher risk bin is surely concordant, the same risk bin is counted 1/2:
  ``S = Σ_{a,m} E[a,m] · (Σ_{b>a, n<m} N[b,n] + ½ Σ_{b>a} N[b,m])``, and ``Ĉ = S / P``;
- uncertain: ``T = Σ_{a,m} E[a,m] · Σ_{b>a} N[b,m]`` pairs in the same risk bin (each off by at
  most ½), and the pairs within one time bin, which are left out: at most one ordering of an
  unordered pair is comparable, so at most ``W = Σ_a [C(N_a, 2) - C(N_a - E_a, 2)]`` of them.

The true C is ``(S' + X) / (P + K)`` with ``|S' - S| ≤ T/2``, ``0 ≤ X ≤ K ≤ W``; over that range
``|C - Ĉ| ≤ (T/2 + W) / (P + W)`` = ``c_index_bound``, which shrinks with finer time and risk
bins (``experiments/bench_c_index.py`` measures it). It holds also when pairs with equal times
(an event and a censoring) count as comparable, since those share a time bin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from models.pooled_metrics import score_bins
from models.sums import COUNTS, CountedLayout, PooledSums, from_fixed_point

MAX_HISTOGRAM = 200_000  # time bins x risk bins: each histogram is that many sums


def cox_loss(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Breslow partial log-likelihood per event (0, with a gradient, if no event)."""
    risk, time, event = risk.reshape(-1), time.reshape(-1).to(risk.dtype), event.reshape(-1).to(risk.dtype)
    order = torch.argsort(time, descending=True, stable=True)
    risk, time, event = risk[order], time[order], event[order]
    log_risk_set = torch.logcumsumexp(risk, dim=0)  # over everyone at least as late, ties aside
    last_tied = torch.searchsorted(-time, -time, right=True) - 1  # Breslow: the whole tie group
    return -((risk - log_risk_set[last_tied]) * event).sum() / event.sum().clamp(min=1.0)


def cox_batch_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``cox_loss`` of a one-output model; ``targets`` (batch, 2) hold (time, event)."""
    return cox_loss(outputs.reshape(-1), targets[:, 0], targets[:, 1])


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray, block: int = 1024) -> float:
    """Harrell's C of ``risk`` (higher: earlier event) on one set of subjects, exactly."""
    time, risk = np.asarray(time, dtype=np.float64), np.asarray(risk, dtype=np.float64)
    events = np.flatnonzero(np.asarray(event) > 0)
    concordant, comparable = 0.0, 0
    for start in range(0, len(events), block):
        i = events[start : start + block]
        later = time[None, :] > time[i, None]
        concordant += (later & (risk[None, :] < risk[i, None])).sum()
        concordant += 0.5 * (later & (risk[None, :] == risk[i, None])).sum()
        comparable += int(later.sum())
    return concordant / comparable if comparable else math.nan


@dataclass(frozen=True)
class SurvivalLayout(CountedLayout):
    """The sums of a survival evaluation: counts, then the two (time bin x risk bin) histograms."""

    time_bins: int
    risk_bins: int
    horizon: float

    def __post_init__(self) -> None:
        if self.time_bins < 1 or self.risk_bins < 2 or self.time_bins * self.risk_bins > MAX_HISTOGRAM:
            raise ValueError(
                f"survival evaluation needs time_bins >= 1, risk bins >= 2 and at most {MAX_HISTOGRAM} "
                f"cells, got {self.time_bins} x {self.risk_bins}"
            )
        if not self.horizon > 0 or not math.isfinite(self.horizon):
            raise ValueError(
                f"survival evaluation needs a time horizon > 0 (evaluation.time_horizon), got {self.horizon}"
            )

    @property
    def sections(self) -> dict[str, tuple[int, ...]]:
        shape = (self.time_bins, self.risk_bins)
        scalars = {name: () for name in (*COUNTS, "events")}
        return scalars | {"events_histogram": shape, "subjects_histogram": shape}

    def time_bin(self, time: np.ndarray) -> np.ndarray:
        return np.minimum((time / self.horizon * self.time_bins).astype(np.int64), self.time_bins - 1)

    def risk_bin(self, risk: np.ndarray) -> np.ndarray:
        return score_bins(1.0 / (1.0 + np.exp(-np.clip(risk, -700.0, 700.0))), self.risk_bins)

    def task_sums(self, targets: np.ndarray, predictions: np.ndarray) -> tuple[int, dict[str, object]]:
        """The two histograms; ``targets`` (n, 2) hold (time, event), ``predictions`` η."""
        targets = np.asarray(targets, dtype=np.float64)
        risk = np.asarray(predictions, dtype=np.float64).reshape(-1)
        if targets.shape != (len(risk), 2) or not np.all(np.isfinite(risk)) or np.any(targets[:, 0] < 0):
            raise ValueError(
                f"survival evaluation: expected (time >= 0, event) of shape ({len(risk)}, 2) and finite "
                f"risks, got {targets.shape}"
            )
        event = targets[:, 1] > 0
        cells = (self.time_bin(targets[:, 0]), self.risk_bin(risk))
        subjects = np.zeros((self.time_bins, self.risk_bins), dtype=np.int64)
        events = np.zeros_like(subjects)
        np.add.at(subjects, cells, 1)
        np.add.at(events, (cells[0][event], cells[1][event]), 1)
        return len(risk), {
            "events": int(event.sum()),
            "events_histogram": events,
            "subjects_histogram": subjects,
        }

    def pooled(self, sums) -> PooledSurvival:
        return PooledSurvival(self, self.split(sums))


class PooledSurvival(PooledSums):
    """The pooled test set's concordance index and Cox loss, from the federation-wide sums only."""

    def c_index_and_bound(self) -> tuple[float, float]:
        """(Ĉ, bound) as in the module docstring; NaN without a surely comparable pair."""
        events = self.sums["events_histogram"].astype(np.float64)
        subjects = self.sums["subjects_histogram"].astype(np.float64)
        later = np.cumsum(subjects[::-1], axis=0)[::-1] - subjects  # [a, m]: Σ_{b>a} N[b, m]
        later_lower = np.cumsum(later, axis=1) - later  # [a, m]: Σ_{b>a, n<m} N[b, n]
        pairs = float((events.sum(axis=1) * later.sum(axis=1)).sum())
        if pairs == 0:
            return math.nan, math.nan
        concordant = float((events * (later_lower + 0.5 * later)).sum())
        same_risk = float((events * later).sum())
        e_a, n_a = events.sum(axis=1), subjects.sum(axis=1)
        within = float((n_a * (n_a - 1) / 2 - (n_a - e_a) * (n_a - e_a - 1) / 2).sum())
        return concordant / pairs, (same_risk / 2 + within) / (pairs + within)

    def metrics(self) -> dict[str, float]:
        c_index, bound = self.c_index_and_bound()
        events = int(self.sums["events"])
        return self.count_metrics() | {
            "eval_events": float(events),
            "eval_loss": from_fixed_point(self.sums["loss"]) / events if events else math.nan,
            "eval_c_index": c_index,
            "eval_c_index_bound": bound,
        }

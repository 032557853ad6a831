"""Evaluation as integer sums, so a federation's metrics are computed from sums over hospitals only.

Each hospital turns its test-split predictions into a fixed vector of non-negative integers
(``local_sums``): example and correct counts, the loss total in fixed point, for every class a
histogram of its predicted probability among the examples of that class and among the others
(all one-vs-rest ROC needs), the confusion matrix, top-label calibration bins, and its training
loss total and clipped-value count. Encrypted, these vectors are added
under HE and only their federation-wide sum is decrypted (``he.encoding``'s exact sums);
plaintext FedAvg adds the same vectors in the clear. ``PooledEvaluation.from_sums`` then gives
the metrics of the pooled test set: what one model evaluated on the concatenated test sets
scores, not an average of per-site numbers.

Exactness: counts, accuracy and the confusion matrix are exact. The loss is exact up to one
fixed-point rounding of each hospital's total (< 2^-33 per hospital, divided by the pooled
count). ROC AUC is computed from the histograms with within-bin pairs counted as ties (1/2);
the true AUC lies within ``auc_bound`` = (1/2)·Σ_b pos_b·neg_b / (P·N) of it (only pairs in the
same bin can be misordered), which shrinks with the number of bins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.sums import FIXED_POINT_BITS, SectionedLayout, fixed_point

DEFAULT_BINS = 100
MAX_CLASSES = 256  # the confusion matrix alone is then 65,536 sums
SCALARS = ("eval_examples", "correct", "loss", "train_examples", "train_loss", "clipped_values")


@dataclass(frozen=True)
class EvaluationLayout(SectionedLayout):
    """The order of the integer sums for ``num_classes`` classes and ``bins`` score bins."""

    num_classes: int
    bins: int = DEFAULT_BINS

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= MAX_CLASSES or not 2 <= self.bins <= 10_000:
            raise ValueError(
                f"evaluation needs 2..{MAX_CLASSES} classes and 2..10000 bins, "
                f"got {self.num_classes} classes and {self.bins} bins"
            )

    @property
    def sections(self) -> dict[str, tuple[int, ...]]:
        c, b = self.num_classes, self.bins
        return {
            **{name: () for name in SCALARS},
            "positives": (c, b),  # [class c, bin of P(c)] over the examples of class c
            "negatives": (c, b),  # [class c, bin of P(c)] over the examples of other classes
            "confusion": (c, c),  # [true class, predicted class]
            "calibration_count": (b,),  # by bin of the top-label confidence
            "calibration_correct": (b,),
            "calibration_confidence": (b,),  # fixed point
        }


def score_bins(scores: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum((np.clip(scores, 0.0, 1.0) * bins).astype(np.int64), bins - 1)


def local_sums(
    layout: EvaluationLayout,
    labels: np.ndarray,
    probabilities: np.ndarray,
    loss_total: float,
    train_examples: int = 0,
    train_loss: float = 0.0,
    clipped_values: int = 0,
) -> list[int]:
    """One hospital's evaluation as the integer vector of ``layout`` (its own data only)."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    c, b = layout.num_classes, layout.bins
    if probabilities.shape != (len(labels), c) or not np.all((labels >= 0) & (labels < c)):
        raise ValueError(f"evaluation: expected labels in [0, {c}) and probabilities of shape (n, {c})")
    predicted = probabilities.argmax(axis=1)
    positives, negatives = np.zeros((c, b), dtype=np.int64), np.zeros((c, b), dtype=np.int64)
    for scored in range(c):
        bins_of = score_bins(probabilities[:, scored], b)
        is_class = labels == scored
        positives[scored] = np.bincount(bins_of[is_class], minlength=b)
        negatives[scored] = np.bincount(bins_of[~is_class], minlength=b)
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    confidence = probabilities.max(axis=1)
    top_bins = score_bins(confidence, b)
    correct = predicted == labels
    scalars = [
        len(labels),
        int(correct.sum()),
        fixed_point(loss_total),
        int(train_examples),
        fixed_point(train_loss * train_examples),
        int(clipped_values),
    ]
    per_bin = [
        np.bincount(top_bins, minlength=b),
        np.bincount(top_bins, weights=correct, minlength=b).astype(np.int64),
    ]
    confidence_totals = [fixed_point(v) for v in np.bincount(top_bins, weights=confidence, minlength=b)]
    return [
        *scalars,
        *positives.ravel().tolist(),
        *negatives.ravel().tolist(),
        *confusion.ravel().tolist(),
        *(int(v) for counts in per_bin for v in counts),
        *confidence_totals,
    ]


def add_sums(a: list[int], b: list[int]) -> list[int]:
    """Plaintext FedAvg's counterpart of the encrypted sum."""
    if len(a) != len(b):
        raise ValueError(f"evaluation sums of different lengths: {len(a)} and {len(b)}")
    return [int(x) + int(y) for x, y in zip(a, b, strict=True)]


@dataclass(frozen=True)
class PooledEvaluation:
    """The pooled test set's metrics and curves, from the federation-wide sums only."""

    layout: EvaluationLayout
    sums: dict

    @classmethod
    def from_sums(cls, layout: EvaluationLayout, sums) -> PooledEvaluation:
        return cls(layout, layout.split(sums))

    @property
    def examples(self) -> int:
        return int(self.sums["eval_examples"])

    def _class_rates(self, scored: int) -> tuple[np.ndarray, np.ndarray]:
        """Per bin: positives (true class = scored) and negatives, by P(scored class)."""
        return self.sums["positives"][scored].astype(np.float64), self.sums["negatives"][scored].astype(
            np.float64
        )

    def _auc_of(self, scored: int) -> tuple[float, float]:
        pos, neg = self._class_rates(scored)
        p_total, n_total = pos.sum(), neg.sum()
        if p_total == 0 or n_total == 0:
            return math.nan, math.nan
        below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
        pairs = p_total * n_total
        return float((pos * (below + 0.5 * neg)).sum() / pairs), float(0.5 * (pos * neg).sum() / pairs)

    def _scored_classes(self) -> list[int]:
        """Binary: the positive class (as ``roc_auc_score(y, p1)``); else every class present."""
        if self.layout.num_classes == 2:
            return [1]
        present = self.sums["confusion"].sum(axis=1)
        return [c for c in range(self.layout.num_classes) if present[c] > 0]

    @property
    def auc_and_bound(self) -> tuple[float, float]:
        """ROC AUC (binary, or one-vs-rest macro over present classes) and its histogram bound."""
        values = [self._auc_of(c) for c in self._scored_classes()]
        values = [v for v in values if not math.isnan(v[0])]
        if not values:
            return math.nan, math.nan
        return float(np.mean([v[0] for v in values])), float(np.mean([v[1] for v in values]))

    def roc_curve(self, scored: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(false positive rates, true positive rates) at the bin edges, from 0 to 1."""
        pos, neg = self._class_rates(scored)
        tpr = np.concatenate([np.cumsum(pos[::-1]) / max(pos.sum(), 1), [1.0]])
        fpr = np.concatenate([np.cumsum(neg[::-1]) / max(neg.sum(), 1), [1.0]])
        return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])

    def calibration_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per non-empty bin of top-label confidence: mean confidence, accuracy, count."""
        count = self.sums["calibration_count"].astype(np.float64)
        filled = count > 0
        confidence = self.sums["calibration_confidence"].astype(np.float64) / (1 << FIXED_POINT_BITS)
        correct = self.sums["calibration_correct"].astype(np.float64)
        return confidence[filled] / count[filled], correct[filled] / count[filled], count[filled]

    @property
    def confusion(self) -> np.ndarray:
        return self.sums["confusion"].astype(np.int64)

    def metrics(self) -> dict[str, float]:
        """Pooled metrics for MLflow (``eval_*`` as before, now of the pooled test set)."""
        s = self.sums
        examples = max(self.examples, 1)
        auc, bound = self.auc_and_bound
        out = {
            "eval_examples": float(self.examples),
            "eval_accuracy": int(s["correct"]) / examples,
            "eval_loss": int(s["loss"]) / (1 << FIXED_POINT_BITS) / examples,
            "eval_auc": auc,
            "eval_auc_bound": bound,
            "clipped_values": float(int(s["clipped_values"])),
        }
        if int(s["train_examples"]):
            out["train_loss"] = int(s["train_loss"]) / (1 << FIXED_POINT_BITS) / int(s["train_examples"])
        return out

"""Checks of a decrypted aggregate against what the server knows without it.

A keyholder can shift the payload rows of its decryption share and leave the noise rows intact
(docs/security.md, "Not promised"): the noise check passes and the decoded aggregate moves. These
checks catch the shifts that break a fact the server knows independently of the shares: an
example total that contradicts earlier totals of this run or the contributors' unit weights, pooled
evaluation sums that disagree with each other (an accuracy above 1), feature statistics with a
negative variance. A failed check is handled like a failed noise check: the attempt fails and
elimination names the set. A shift that keeps every fact plausible still passes; only a check
value no single keyholder can predict (a MAC) closes that.
"""

from __future__ import annotations

from collections.abc import Set

import numpy as np

from he.decrypt import decrypt_sums, decrypt_update
from he.encoding import WeightScaleError, decoding_error
from he.errors import HEError
from models.pooled_metrics import EvaluationLayout
from models.regression import RegressionLayout
from models.sums import from_fixed_point
from models.survival import SurvivalLayout


class ImplausibleAggregateError(HEError):
    """A decrypted aggregate contradicts what the server knows independently of it."""


class KnownTotals:
    """The exact example totals of the contributor sets decrypted so far in a run.

    A hospital's example count does not change within a run, and each is at least 1, so a set
    decrypted before pins its own total, bounds a subset's from above (one example less at least
    per hospital left out) and a superset's from below."""

    def __init__(self) -> None:
        self._totals: dict[frozenset[int], int] = {}

    def check(self, contributors: Set[int], total: int) -> None:
        """Raise ``ImplausibleAggregateError`` if ``total`` contradicts a total decrypted before."""
        for known, known_total in self._totals.items():
            if contributors <= known and total > known_total - len(known - contributors):
                bound = f"at most {known_total - len(known - contributors)}"
            elif contributors >= known and total < known_total + len(contributors - known):
                bound = f"at least {known_total + len(contributors - known)}"
            else:
                continue
            raise ImplausibleAggregateError(
                f"decoded example total {total} of {len(contributors)} contributors; expected {bound}, "
                f"from the total {known_total} of {len(known)} contributors decrypted before in this run"
            )

    def record(self, contributors: Set[int], total: int) -> None:
        self._totals[frozenset(contributors)] = total


def check_total(total: int, contributors: Set[int], unit_weights: bool, known: KnownTotals) -> None:
    """The decoded example total: exactly one per contributor when each encodes weight 1 (DP
    training, the final evaluation), else consistent with the run's earlier totals."""
    if unit_weights and total != len(contributors):
        raise ImplausibleAggregateError(
            f"decoded example total {total}; expected {len(contributors)}: each contributor has weight 1"
        )
    if not unit_weights:
        known.check(contributors, total)


def check_evaluation(layout, sums: list[int], train_examples: int) -> None:
    """Pooled evaluation sums (``models.tasks``) that agree with each other (the facts of the
    layout's task); ``train_examples``: the training count the sums must carry (the decoded
    total, or 0)."""
    s = layout.split(sums)
    facts = FACTS[type(layout)](layout, s)
    facts[f"the training count is {train_examples}"] = int(s["train_examples"]) == train_examples
    broken = [fact for fact, holds in facts.items() if not holds]
    if broken:
        raise ImplausibleAggregateError(
            f"decoded evaluation sums ({int(s['eval_examples'])} examples) break: {'; '.join(broken)}"
        )


def classification_facts(layout: EvaluationLayout, s: dict) -> dict[str, bool]:
    """Every example is counted once in the confusion matrix, once per class in the score
    histograms and once in the calibration bins; correct predictions are its diagonal."""
    examples, correct = int(s["eval_examples"]), int(s["correct"])
    confusion, positives, negatives = s["confusion"], s["positives"], s["negatives"]
    return {
        "correct <= examples": correct <= examples,
        "the confusion matrix sums to the examples": confusion.sum() == examples,
        "its diagonal sums to the correct count": np.trace(confusion) == correct,
        "each class's score histogram sums to its confusion row": all(
            positives[c].sum() == confusion[c].sum() for c in range(layout.num_classes)
        ),
        "each class's two score histograms sum to the examples": all(
            positives[c].sum() + negatives[c].sum() == examples for c in range(layout.num_classes)
        ),
        "the calibration bins count the examples": s["calibration_count"].sum() == examples,
        "their correct counts sum to the correct count": s["calibration_correct"].sum() == correct,
        "no bin is more correct than it is full": all(s["calibration_correct"] <= s["calibration_count"]),
    }


def regression_facts(layout: RegressionLayout, s: dict) -> dict[str, bool]:
    """By Cauchy-Schwarz (Σ|y-ŷ|)² <= n·Σ(y-ŷ)² and (Σ|y|)² <= n·Σy², up to fixed-point rounding."""
    n, hospitals = int(s["eval_examples"]), int(s["hospitals"])

    def cauchy_schwarz(linear: float, square: float) -> bool:
        rounding = 2.0**-31 * hospitals * (n + linear + hospitals)  # each total within H·2^-33
        return linear * linear <= n * square + 1e-9 * (linear * linear + n * square) + rounding

    y_abs = from_fixed_point(int(s["y_positive"]) + int(s["y_negative"]))
    return {
        "at least one hospital": hospitals >= 1,
        "(Σ|y-ŷ|)² <= n·Σ(y-ŷ)²": cauchy_schwarz(
            from_fixed_point(s["absolute_error"]), from_fixed_point(s["squared_error"])
        ),
        "(Σ|y|)² <= n·Σy²": cauchy_schwarz(y_abs, from_fixed_point(s["y_squared"])),
    }


def survival_facts(layout: SurvivalLayout, s: dict) -> dict[str, bool]:
    """Every example is in one histogram cell, every event too, and no cell has more events than
    subjects."""
    events, subjects = s["events_histogram"], s["subjects_histogram"]
    return {
        "the subject histogram counts the examples": subjects.sum() == int(s["eval_examples"]),
        "the event histogram counts the events": events.sum() == int(s["events"]),
        "no cell has more events than subjects": bool(np.all(events <= subjects)),
    }


FACTS = {
    EvaluationLayout: classification_facts,
    RegressionLayout: regression_facts,
    SurvivalLayout: survival_facts,
}


def check_statistics(average: list[np.ndarray], error: float) -> None:
    """Feature statistics with a non-negative variance: ``moments`` ([mean, mean square]) with a
    mean square at least the squared mean, ``spread`` ([mean squared deviation]) non-negative,
    each up to ``error``, the decoding error of one value (``he.encoding.decoding_error``).
    (Honest statistics break this only if a hospital's feature mean exceeds the square root of
    the statistics clip, whose mean square it then clipped: those statistics are wrong anyway.)"""
    if len(average) == 2:
        mean, square = average
        slack = error * (1 + 2 * np.abs(mean) + error)
        negative = np.flatnonzero(square < mean**2 - slack)
    else:
        negative = np.flatnonzero(average[0] < -error)
    if negative.size:
        raise ImplausibleAggregateError(
            f"decoded feature statistics give a negative variance for features {negative.tolist()[:10]}"
        )


class AggregateChecks:
    """Decoding with every check above, for one run: ``known_totals`` grows with each exact
    total decrypted, so the checks of later decryptions get sharper."""

    def __init__(self, evaluation_layout: EvaluationLayout, dp: bool) -> None:
        self.evaluation_layout = evaluation_layout
        self.dp = dp  # DP training: each contributor encodes weight 1
        self.known_totals = KnownTotals()

    def decode(self, kind: str, encoding, aggregate, fields, contributors: Set[int]):
        """Decode, then check the aggregate against what the server knows without it; a
        weight-scale overflow is let through only with a plausible total, so the server never
        takes a scale from an implausible one. (average, total examples, exact sums)."""
        unit_weights = kind == "train" and (not aggregate.layout.shapes or self.dp)
        try:
            average, total_examples = decrypt_update(encoding, aggregate, fields)
        except WeightScaleError as err:
            check_total(err.total_examples, contributors, unit_weights, self.known_totals)
            raise
        check_total(total_examples, contributors, unit_weights, self.known_totals)
        sums = decrypt_sums(encoding, aggregate, fields)
        if aggregate.layout.sums:
            expected = 0 if unit_weights else total_examples
            check_evaluation(self.evaluation_layout, sums, expected)
        if kind == "statistics":
            error = decoding_error(encoding.params, aggregate.layout, len(contributors), total_examples)
            check_statistics(average, error)
        if not unit_weights:
            self.known_totals.record(contributors, total_examples)
        return average, total_examples, sums

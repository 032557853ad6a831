"""Each plausibility check passes honest aggregates and catches the tampering it is there for."""

from __future__ import annotations

import numpy as np
import pytest

from models.pooled_metrics import EvaluationLayout, add_sums, local_sums
from models.tasks import EvaluationSettings, get_task
from strategies.plausibility import (
    ImplausibleAggregateError,
    KnownTotals,
    check_evaluation,
    check_statistics,
    check_total,
)


def test_a_set_decrypted_before_pins_its_total_and_bounds_its_subsets_and_supersets() -> None:
    known = KnownTotals()
    known.check({1, 2, 3}, 7)  # nothing known yet: any total
    known.record({1, 2, 3}, 300)
    for contributors, total in (({1, 2, 3}, 300), ({1, 2}, 299), ({1, 2, 3, 4}, 301), ({1, 4}, 5)):
        known.check(contributors, total)
    for contributors, total, expected in (
        ({1, 2, 3}, 299, "at least 300"),
        ({1, 2, 3}, 301, "at most 300"),
        ({1, 2}, 300, "at most 299"),  # hospital 3 left out: at least one example fewer
        ({1, 2, 3, 4}, 300, "at least 301"),
    ):
        with pytest.raises(ImplausibleAggregateError, match=f"total {total} .* expected {expected}"):
            known.check(contributors, total)


def test_unit_weights_total_exactly_one_per_contributor() -> None:
    known = KnownTotals()
    known.record({1, 2, 3}, 300)
    check_total(3, {1, 2, 3}, True, known)  # DP training, final evaluation: the count is the set
    with pytest.raises(ImplausibleAggregateError, match="total 4; expected 3"):
        check_total(4, {1, 2, 3}, True, known)
    check_total(300, {1, 2, 3}, False, known)
    with pytest.raises(ImplausibleAggregateError, match="total 30 of 3 contributors"):
        check_total(30, {1, 2, 3}, False, known)  # the example count lowered: every value x10


def pooled(layout: EvaluationLayout, train_examples: int = 0) -> list[int]:
    rng = np.random.default_rng(0)
    sums = [0] * layout.size
    for n in (40, 57):
        labels = rng.integers(0, layout.num_classes, n)
        probabilities = rng.dirichlet(np.ones(layout.num_classes), n)
        sums = add_sums(sums, local_sums(layout, labels, probabilities, 12.5, train_examples))
    return sums


def shifted(layout: EvaluationLayout, sums: list[int], section: str, delta: int, at: int = 0) -> list[int]:
    start = list(layout.sections).index(section)
    offset = sum(int(np.prod(shape)) for shape in list(layout.sections.values())[:start])
    out = list(sums)
    out[offset + at] += delta
    return out


@pytest.mark.parametrize("classes", [2, 4])
def test_honest_pooled_evaluation_sums_pass(classes) -> None:
    layout = EvaluationLayout(classes, 10)
    check_evaluation(layout, pooled(layout), 0)
    check_evaluation(layout, pooled(layout, train_examples=30), 60)  # two hospitals of 30


@pytest.mark.parametrize(
    ("section", "delta", "at", "broken"),
    [
        ("correct", 80, 0, "correct <= examples"),  # an accuracy above 1
        ("correct", 3, 0, "its diagonal sums to the correct count"),  # a better accuracy, below 1
        ("eval_examples", -5, 0, "the confusion matrix sums to the examples"),
        ("confusion", 2, 1, "each class's score histogram sums to its confusion row"),
        ("negatives", 1, 3, "each class's two score histograms sum to the examples"),
        ("calibration_count", 1, 2, "the calibration bins count the examples"),
        ("calibration_correct", 1, 2, "their correct counts sum to the correct count"),
        ("train_examples", 1, 0, "the training count is 0"),
    ],
)
def test_each_tampered_evaluation_sum_is_caught(section, delta, at, broken) -> None:
    layout = EvaluationLayout(4, 10)
    sums = shifted(layout, pooled(layout), section, delta, at)
    with pytest.raises(ImplausibleAggregateError, match=broken):
        check_evaluation(layout, sums, 0)


def test_a_calibration_bin_more_correct_than_full_is_caught() -> None:
    layout = EvaluationLayout(2, 10)
    sums = pooled(layout)
    split = layout.split(sums)
    count, correct = split["calibration_count"], split["calibration_correct"]
    full = next(b for b in range(10) if count[b] > 0)
    moved = shifted(layout, sums, "calibration_correct", int(count[full] - correct[full]) + 1, full)
    with pytest.raises(ImplausibleAggregateError, match="no bin is more correct than it is full"):
        check_evaluation(layout, moved, 0)


def moments(rng: np.random.Generator, error: float) -> list[np.ndarray]:
    """Per-feature [mean, mean square] of data with a constant feature, decoded within ``error``."""
    x = rng.normal(loc=[14.1, -3.0, 7.0], scale=[2.0, 0.5, 0.0], size=(200, 3))
    exact = [x.mean(axis=0), np.square(x).mean(axis=0)]
    return [a + rng.uniform(-error, error, a.shape) for a in exact]


def test_honest_feature_statistics_pass_within_the_decoding_error() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        check_statistics(moments(rng, 1e-3), 1e-3)
    check_statistics([np.array([0.0, 1.3]) - 1e-3], 1e-3)  # spread: a zero deviation, decoded low


def test_a_shifted_feature_mean_or_a_negative_spread_is_caught() -> None:
    mean, square = moments(np.random.default_rng(0), 1e-3)
    mean[0] = 64.2  # the mean of 14.1 moved, its mean square kept: a negative variance
    with pytest.raises(ImplausibleAggregateError, match=r"negative variance for features \[0\]"):
        check_statistics([mean, square], 1e-3)
    with pytest.raises(ImplausibleAggregateError, match=r"features \[1\]"):
        check_statistics([np.array([0.5, -0.01])], 1e-3)


def task_sums(task_name: str, layout, seed: int = 0) -> list[int]:
    """Two hospitals' honest regression or survival sums."""
    rng = np.random.default_rng(seed)
    task, sums = get_task(task_name), [0] * layout.size
    for n in (40, 57):
        y = rng.exponential(3.0, n)
        if task_name == "survival":
            y = np.column_stack([y, rng.integers(0, 2, n)])
        sums = add_sums(sums, task.local_sums(layout, y, rng.normal(size=n), 4.0))
    return sums


@pytest.mark.parametrize(
    ("task_name", "section", "delta", "at", "broken"),
    [
        ("regression", "absolute_error", 1 << 40, 0, r"\(Σ\|y-ŷ\|\)² <= n·Σ\(y-ŷ\)²"),
        ("regression", "y_positive", 1 << 42, 0, r"\(Σ\|y\|\)² <= n·Σy²"),
        ("regression", "hospitals", -2, 0, "at least one hospital"),
        ("survival", "events", 1, 0, "the event histogram counts the events"),
        ("survival", "subjects_histogram", 1, 7, "the subject histogram counts the examples"),
        ("survival", "events_histogram", 50, 0, "no cell has more events than subjects"),
    ],
)
def test_honest_regression_and_survival_sums_pass_and_tampered_ones_are_caught(
    task_name, section, delta, at, broken
) -> None:
    layout = get_task(task_name).layout(EvaluationSettings(bins=10, time_bins=4, horizon=10.0))
    sums = task_sums(task_name, layout)
    check_evaluation(layout, sums, 0)
    with pytest.raises(ImplausibleAggregateError, match=broken):
        check_evaluation(layout, shifted(layout, sums, section, delta, at), 0)

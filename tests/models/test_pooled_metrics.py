"""Pooled metrics from summed integer vectors equal the metrics of the concatenated test sets."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, log_loss, roc_auc_score

from models.pooled_metrics import EvaluationLayout, PooledEvaluation, add_sums, local_sums


def hospitals(rng, classes: int, sizes=(40, 150, 75)):
    """Per hospital: labels, softmax probabilities (informative but noisy), per-example losses."""
    out = []
    for n in sizes:
        labels = rng.integers(0, classes, n)
        logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        out.append((labels, probs, -np.log(probs[np.arange(n), labels])))
    return out


def pooled(layout, sites):
    total = None
    for labels, probs, losses in sites:
        sums = local_sums(layout, labels, probs, float(losses.sum()))
        total = sums if total is None else add_sums(total, sums)
    return PooledEvaluation.from_sums(layout, total)


@pytest.mark.parametrize("classes", [2, 4])
def test_pooled_metrics_equal_those_of_the_concatenated_test_sets(classes):
    rng = np.random.default_rng(classes)
    sites = hospitals(rng, classes)
    labels = np.concatenate([s[0] for s in sites])
    probs = np.concatenate([s[1] for s in sites])
    layout = EvaluationLayout(classes, bins=100)
    result = pooled(layout, sites)
    metrics = result.metrics()
    assert metrics["eval_examples"] == len(labels)
    assert metrics["eval_accuracy"] == pytest.approx(np.mean(probs.argmax(1) == labels), abs=1e-12)
    assert metrics["eval_loss"] == pytest.approx(log_loss(labels, probs, labels=range(classes)), abs=1e-9)
    assert np.array_equal(result.confusion, confusion_matrix(labels, probs.argmax(1), labels=range(classes)))
    if classes == 2:
        exact = roc_auc_score(labels, probs[:, 1])
    else:
        exact = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert abs(metrics["eval_auc"] - exact) <= metrics["eval_auc_bound"] + 1e-12
    assert 0 < metrics["eval_auc_bound"] < 0.01


def test_the_auc_bound_is_what_separates_coarse_bins_from_the_truth():
    """With 3 bins the histogram AUC is visibly off, and still within its (wide) bound."""
    rng = np.random.default_rng(7)
    sites = hospitals(rng, 2)
    labels = np.concatenate([s[0] for s in sites])
    exact = roc_auc_score(labels, np.concatenate([s[1] for s in sites])[:, 1])
    coarse = pooled(EvaluationLayout(2, bins=3), sites).metrics()
    fine = pooled(EvaluationLayout(2, bins=1000), sites).metrics()
    assert abs(coarse["eval_auc"] - exact) > 0.005
    assert abs(coarse["eval_auc"] - exact) <= coarse["eval_auc_bound"] + 1e-12
    assert abs(fine["eval_auc"] - exact) <= fine["eval_auc_bound"] + 1e-12
    assert fine["eval_auc_bound"] < coarse["eval_auc_bound"]


def test_curves_are_well_formed():
    sites = hospitals(np.random.default_rng(1), 2)
    result = pooled(EvaluationLayout(2, bins=20), sites)
    fpr, tpr = result.roc_curve()
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    confidence, accuracy, count = result.calibration_curve()
    assert count.sum() == result.examples
    assert np.all((confidence >= 0.5) & (confidence <= 1)) and np.all((accuracy >= 0) & (accuracy <= 1))


def test_many_classes_stay_small():
    """One-vs-rest needs two histograms per class, not one per pair of classes."""
    layout = EvaluationLayout(100, bins=100)
    assert layout.size < 2 * 100 * 100 + 100 * 100 + 3 * 100 + 10
    sites = hospitals(np.random.default_rng(3), 100, sizes=(400, 300))
    labels = np.concatenate([s[0] for s in sites])
    probs = np.concatenate([s[1] for s in sites])
    metrics = pooled(layout, sites).metrics()
    present = np.unique(labels)
    exact = np.mean([roc_auc_score(labels == c, probs[:, c]) for c in present])
    assert abs(metrics["eval_auc"] - exact) <= metrics["eval_auc_bound"] + 1e-12


def test_bad_input_is_refused_by_name():
    layout = EvaluationLayout(2, bins=10)
    with pytest.raises(ValueError, match="probabilities of shape"):
        local_sums(layout, np.array([0, 2]), np.full((2, 2), 0.5), 1.0)
    with pytest.raises(ValueError, match="expected"):
        layout.split([0] * (layout.size - 1))
    with pytest.raises(ValueError, match="classes"):
        EvaluationLayout(1)

"""Figures and tables of the final pooled evaluation (``models.pooled_metrics``) for MLflow."""

from __future__ import annotations

from pathlib import Path

from models.pooled_metrics import PooledEvaluation


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_roc_curve(evaluation: PooledEvaluation, path: Path) -> None:
    """ROC of the pooled test set (binary: class 1; else one curve per class, one-vs-rest)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    classes = [1] if evaluation.layout.num_classes == 2 else range(evaluation.layout.num_classes)
    for scored in classes:
        fpr, tpr = evaluation.roc_curve(scored)
        ax.plot(fpr, tpr, label=None if evaluation.layout.num_classes == 2 else f"class {scored}")
    auc, bound = evaluation.auc_and_bound
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=f"pooled ROC, AUC {auc:.3f} ± {bound:.3f}",
    )
    if evaluation.layout.num_classes > 2:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_calibration_curve(evaluation: PooledEvaluation, path: Path) -> None:
    """Reliability of the top-label confidence on the pooled test set."""
    plt = _pyplot()
    confidence, accuracy, count = evaluation.calibration_curve()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.scatter(confidence, accuracy, s=10 + 60 * count / max(count.max(), 1))
    ax.plot(confidence, accuracy)
    ax.set(xlabel="mean confidence", ylabel="accuracy", title="pooled calibration", xlim=(0, 1), ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_table(evaluation: PooledEvaluation) -> dict[str, list]:
    """Rows: true class; columns ``predicted_<c>``: counts over the pooled test set."""
    confusion = evaluation.confusion
    classes = range(evaluation.layout.num_classes)
    table = {"true_class": list(classes)}
    for c in classes:
        table[f"predicted_{c}"] = [int(v) for v in confusion[:, c]]
    return table

"""Pooled against averaged AUC: what an ML engineer is told when prevalence differs between sites.

    python -m experiments.bench_evaluation [--rounds 5] [--bins 100] [--seed 0]

A 4-hospital CSV federation is cut from the embedded breast-cancer table so that the share of
malignant tumours differs widely between sites (the ``PREVALENCE`` below). One encrypted run
with ``per_hospital_plaintext`` reports, for the same final model, the pooled metrics (one
model on the concatenated test sets, from the encrypted sums) and the average of the sites'
own metrics weighted by their test sizes (what Flower's and FLamby's FedAvg report). That the
pooled numbers equal scikit-learn's on the concatenated test predictions (within the AUC
bound) is tested in ``tests/integration/test_pooled_evaluation.py``.
Prints a markdown table; Flower/Ray output goes to a log file, named at the end.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from common.settings import RunSettings
from experiments._simulate import log_file, progress, simulate_many

PREVALENCE = (0.93, 0.6, 0.25, 0.05)  # share of malignant tumours at each site
SITE_ROWS = 110  # 4 sites x 110 rows at these prevalences fit the 212 malignant, 357 benign cases


def write_sites(directory: Path, seed: int) -> list[str]:
    """One CSV per site, ``SITE_ROWS`` rows drawn without replacement at its prevalence."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    rng = np.random.default_rng(seed)
    # sklearn codes malignant as 0: relabel so that 1 = malignant, the positive class
    frame["target"] = 1 - frame["target"]
    pools = {label: list(rng.permutation(np.flatnonzero(frame["target"] == label))) for label in (0, 1)}
    paths = []
    for site, prevalence in enumerate(PREVALENCE):
        positives = round(SITE_ROWS * prevalence)
        rows = [pools[1].pop() for _ in range(positives)] + [
            pools[0].pop() for _ in range(SITE_ROWS - positives)
        ]
        path = directory / f"site-{site + 1}.csv"
        frame.iloc[rows].to_csv(path, index=False)
        paths.append(str(path))
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bins", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_sites(Path(tmp), args.seed)
        settings = RunSettings(
            strategy="encrypted_fedavg",
            num_rounds=args.rounds,
            threshold=3,
            seed=args.seed,
            dataset="csv",
            num_features=30,
            num_classes=2,
            data_paths=",".join(paths),
            eval_bins=args.bins,
            per_hospital_plaintext=True,
        )
        progress(f"4 sites, prevalence {PREVALENCE}, {args.rounds} rounds, encrypted (compact)")
        log_path = log_file("bench_evaluation")
        (run,) = simulate_many([settings], len(PREVALENCE), log_path).runs
        if not run.ok:
            raise SystemExit(f"the run failed: {run.error} (log: {log_path})")
        final = run.result.final_metrics
    print(
        f"\n4-hospital CSV federation, malignant share per site {', '.join(f'{p:.0%}' for p in PREVALENCE)}\n"
    )
    print("| final model | AUC | accuracy |")
    print("|---|---|---|")
    print(
        f"| pooled, from the encrypted sums | {final['eval_auc']:.4f} ± {final['eval_auc_bound']:.4f} | "
        f"{final['eval_accuracy']:.4f} |"
    )
    print(
        f"| average of the sites' own metrics (Flower/FLamby style) | {final['site_mean_eval_auc']:.4f} | "
        f"{final['site_mean_eval_accuracy']:.4f} |"
    )
    print(f"\nFlower/Ray output: {log_path}")


if __name__ == "__main__":
    main()

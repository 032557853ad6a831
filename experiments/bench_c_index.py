"""How close is the pooled concordance index to the exact one? A table over time x risk bins.

    python -m experiments.bench_c_index [--hospitals 5] [--seeds 0 1 2] [--time-bins 5 20 60 120]
        [--risk-bins 10 100 1000]

A generated federation (``examples.survival.data``: Weibull times under a shared proportional
hazards rule, censored by dropout and at 60 months, each hospital its own stage mix) is scored
by a risk model (the true log hazard ratio plus noise, so C is about 0.7). For each number of
time bins and risk bins, each hospital's histograms are summed as the encrypted run sums them
(``models.survival``); the table gives the stated bound ``eval_c_index_bound`` and the actual
error of the pooled C against Harrell's C on the concatenated predictions, over the seeds.
The bound is a worst case over how pairs within one bin are ordered; the actual error is what
this federation's pairs give.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from examples.survival.data import STUDY_MONTHS, cohort
from models.pooled_metrics import add_sums
from models.survival import harrell_c
from models.tasks import EvaluationSettings, get_task


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hospitals", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--time-bins", type=int, nargs="+", default=[5, 20, 60, 120])
    parser.add_argument("--risk-bins", type=int, nargs="+", default=[10, 100, 1000])
    return parser.parse_args(argv)


def federation(hospitals: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per hospital: (time, event) and a risk score (log hazard ratio + noise)."""
    rng = np.random.default_rng(seed)
    sites = []
    for index in range(hospitals):
        frame = cohort(rng, int(rng.integers(300, 601)), stage_shift=0.4 * index - 0.4)
        true_risk = (
            0.03 * (frame["age"] - 60)
            + 0.5 * (frame["stage"] - 2)
            + 0.4 * frame["biomarker"]
            - 0.6 * frame["treated"]
        ).to_numpy()
        risk = true_risk + rng.normal(0, 0.5, len(frame))
        sites.append((frame[["time", "event"]].to_numpy(dtype=np.float64), risk))
    return sites


def pooled_c_index(sites, time_bins: int, risk_bins: int) -> tuple[float, float]:
    task = get_task("survival")
    layout = task.layout(EvaluationSettings(bins=risk_bins, time_bins=time_bins, horizon=STUDY_MONTHS))
    total = None
    for targets, risk in sites:
        sums = task.local_sums(layout, targets, risk, 0.0)
        total = sums if total is None else add_sums(total, sums)
    metrics = task.from_sums(layout, total).metrics()
    return metrics["eval_c_index"], metrics["eval_c_index_bound"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = []
    for seed in args.seeds:
        sites = federation(args.hospitals, seed)
        targets = np.concatenate([t for t, _ in sites])
        exact = harrell_c(targets[:, 0], targets[:, 1], np.concatenate([r for _, r in sites]))
        runs.append((sites, exact, len(targets), int(targets[:, 1].sum())))
    patients = statistics.mean(r[2] for r in runs)
    events = statistics.mean(r[3] for r in runs)
    print(
        f"{args.hospitals} hospitals, {patients:.0f} patients ({events:.0f} events) on average, "
        f"seeds {args.seeds}; exact C {statistics.mean(r[1] for r in runs):.4f} on average\n"
    )
    columns = ("time bins", "risk bins", "sums per hospital", "bound (mean)", "|error| mean", "|error| max")
    print("| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|")
    for time_bins in args.time_bins:
        for risk_bins in args.risk_bins:
            errors, bounds = [], []
            for sites, exact, _, _ in runs:
                c_index, bound = pooled_c_index(sites, time_bins, risk_bins)
                errors.append(abs(c_index - exact))
                bounds.append(bound)
                assert errors[-1] <= bound + 1e-12, "the pooled C left its stated bound"
            size = (
                get_task("survival")
                .layout(EvaluationSettings(bins=risk_bins, time_bins=time_bins, horizon=1.0))
                .size
            )
            print(
                f"| {time_bins} | {risk_bins} | {size} | {statistics.mean(bounds):.4f} | "
                f"{statistics.mean(errors):.5f} | {max(errors):.5f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

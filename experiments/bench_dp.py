"""What does DP cost? Accuracy and AUC against ε, hospital-level and record-level (PNG,
markdown table, MLflow).

    python -m experiments.bench_dp [--seeds 0 1] [--rounds 5] [--epsilons 1 3 8]
        [--models logreg mlp] [--clip-norm 0.5] [--record-clip-norm 1.0]
        [--tracking-uri sqlite:///mlflow.db]

Two federations, each trained by encrypted FedAvg (``precise`` preset) at each target ε
(δ = 1e-5, over ``--rounds`` rounds) with

* hospital-level DP (``dp=distributed``): each hospital's whole update protected, the noise
  solved for that ε;
* record-level DP (``dp=record``): each patient record protected by DP-SGD at its hospital,
  the noise multiplier solved for the federation's hospital with the largest ε (every other
  hospital spends less; "ε spent" is that largest one);

and without DP (ε = ∞, the same encrypted run without clip or noise):

* the embedded breast-cancer data split IID over 5 hospitals;
* a generated CSV federation of 4 hospitals of 150 to 400 patients each (12 features, a
  non-linear rule with label noise), written to a temporary folder;

each with every model of ``--models`` (``logreg``: 62 values on breast-cancer, the MLP 1058:
the noise's norm grows with √d while the clipped update's does not).

The two levels protect different units (a hospital's whole data set, one record), so equal ε
is not equal protection: docs/privacy.md. Hospital-level noise shares are sized for ``m`` = all
hospitals but one (a round may lose one hospital), so every aggregate of at least ``m`` honest
contributions gets the promised ε. The noise (and DP-SGD's batches) come from the OS, so runs
are not reproducible; ``--seeds`` repeats each setting (other seeds: model initialisation, local
batches without DP) and the table gives the mean. Accuracy and AUC are the
final global model's on the hospitals' test splits, weighted by their size.

Writes ``bench_dp.png`` (``--out``) and logs the table, the PNG and one metric per cell to
MLflow (experiment ``fedquorum-bench-dp``).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import tempfile
from dataclasses import dataclass, replace
from functools import cache, partial
from pathlib import Path

import numpy as np

from client.local_data import TaskConfig, load_hospital_data
from common.settings import RunSettings
from experiments._simulate import Run, log_file, progress, simulate_many
from privacy.config import RecordDpConfig
from privacy.dpsgd_budget import DpSgdPlan, noise_multiplier_for, sampling

DELTA = 1e-5


@dataclass(frozen=True)
class Federation:
    name: str
    hospitals: int
    settings: dict  # RunSettings fields of its data and model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    parser.add_argument("--models", nargs="+", default=["logreg", "mlp"])
    parser.add_argument("--clip-norm", type=float, default=0.5, help="hospital-level: update L2 clip")
    parser.add_argument(
        "--record-clip-norm", type=float, default=1.0, help="record-level: per-example gradient clip"
    )
    parser.add_argument("--out", type=Path, default=Path("bench_dp.png"))
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    return parser.parse_args(argv)


def write_csv_federation(directory: Path, hospitals: int, seed: int = 13) -> str:
    """Hospital CSVs of a shared rule (an interaction and a threshold, 10% labels flipped);
    returns the comma-separated paths for ``RunSettings.data_paths``."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=12)
    paths = []
    for index in range(hospitals):
        rows = int(rng.integers(150, 401))
        x = rng.normal(loc=0.3 * index, size=(rows, 12))  # each hospital's population shifted
        score = x @ weights + 1.5 * x[:, 0] * x[:, 1] - 0.5 * x[:, 2] ** 2
        y = (score > np.median(score)) ^ (rng.random(rows) < 0.1)
        path = directory / f"hospital-{index}.csv"
        header = ",".join([f"x{j}" for j in range(12)] + ["target"])
        lines = [",".join(f"{v:.5f}" for v in row) + f",{int(t)}" for row, t in zip(x, y, strict=True)]
        path.write_text("\n".join([header, *lines]) + "\n")
        paths.append(str(path))
    return ",".join(paths)


def jobs_for(federation: Federation, args: argparse.Namespace) -> list[RunSettings]:
    """Per seed: hospital-level then record-level DP at each target ε, then ε = ∞ (DP off)."""
    m = federation.hospitals - 1
    common = {
        "strategy": "encrypted_fedavg",
        "he_preset": "precise",
        "num_rounds": args.rounds,
        "min_train_nodes": m,
        "min_nodes": federation.hospitals,
        **federation.settings,
    }
    hospital = {"dp": "distributed", "dp_clip_norm": args.clip_norm, "dp_min_contributors": m}
    record = {"dp": "record", "dp_clip_norm": args.record_clip_norm}
    jobs = []
    for seed in args.seeds:
        off = RunSettings(seed=seed, **common)
        jobs += [
            RunSettings(seed=seed, dp_target_epsilon=e, dp_delta=DELTA, **common, **hospital)
            for e in args.epsilons
        ]
        jobs += [record_level(off, federation.hospitals, e, record) for e in args.epsilons]
        jobs.append(off)
    return jobs


def record_level(off: RunSettings, hospitals: int, epsilon: float, record: dict) -> RunSettings:
    """``off`` with DP-SGD whose noise meets ``epsilon`` at every hospital (the budget is set too,
    so a hospital refuses if it would not)."""
    noise = max(
        noise_multiplier_for(epsilon, DELTA, off.num_rounds, *hospital_sampling(off, n))
        for n in train_sizes(off, hospitals)
    )
    return replace(off, dp_noise_multiplier=noise, dp_target_epsilon=epsilon, dp_delta=DELTA, **record)


@cache
def train_sizes(settings: RunSettings, hospitals: int) -> tuple[int, ...]:
    """Each simulated hospital's number of training records, loaded as the hospitals load them."""
    task = TaskConfig.from_config(settings.task_config())
    nodes = [{"partition-id": i, "num-partitions": hospitals} for i in range(hospitals)]
    return tuple(len(load_hospital_data(task, node).y_train) for node in nodes)


def hospital_sampling(settings: RunSettings, num_examples: int) -> tuple[float, int]:
    return sampling(num_examples, settings.batch_size, settings.local_epochs)


def level_of(settings: RunSettings) -> str:
    return {"distributed": "hospital", "record": "record", "off": "none"}[settings.dp]


def epsilon_of(settings: RunSettings) -> float:
    return settings.dp_target_epsilon if settings.dp != "off" else math.inf


def spent(run: Run, hospitals: int) -> float:
    """The run's ε: the server's account (hospital-level) or the largest hospital's (record-level)."""
    settings = run.settings
    if settings.dp != "record":
        return run.result.final_metrics.get("dp_epsilon", math.inf)
    dp = RecordDpConfig.from_config(settings.dp_config())
    return max(
        DpSgdPlan(dp, *hospital_sampling(settings, n)).epsilon(settings.num_rounds)
        for n in train_sizes(settings, hospitals)
    )


def table_rows(federation: Federation, runs: list[Run]) -> list[dict]:
    """One row per (DP level, ε): mean final accuracy and AUC over seeds, and the ε spent."""
    rows = []
    for level, epsilon in sorted(
        {(level_of(r.settings), epsilon_of(r.settings)) for r in runs}, key=row_order
    ):
        alike = [r for r in runs if (level_of(r.settings), epsilon_of(r.settings)) == (level, epsilon)]
        done = [r for r in alike if r.ok]
        final = [r.result.final_metrics for r in done]
        rows.append(
            {
                "federation": federation.name,
                "level": level,
                "epsilon": epsilon,
                "spent": mean(spent(r, federation.hospitals) for r in done),
                "accuracy": mean(f["eval_accuracy"] for f in final),
                "auc": mean(f["eval_auc"] for f in final),
                "runs": f"{len(final)}/{len(alike)}",
            }
        )
    return rows


def row_order(key: tuple[str, float]) -> tuple[float, str]:
    level, epsilon = key
    return epsilon, level


def mean(values) -> float:
    values = list(values)
    return statistics.fmean(values) if values else math.nan


def report(index: int, run: Run, count: int) -> None:
    outcome = f"accuracy {run.result.final_metrics['eval_accuracy']:.3f}" if run.ok else run.error
    setting = f"{level_of(run.settings)} ε={epsilon_of(run.settings):g} seed={run.settings.seed}"
    progress(f"  {index + 1}/{count} {setting}: {outcome}")


def markdown(rows: list[dict]) -> str:
    lines = [
        "| federation | DP level | target ε | ε spent | accuracy | AUC | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['federation']} | {r['level']} | {r['epsilon']:g} | {r['spent']:.3f} | "
            f"{r['accuracy']:.3f} | {r['auc']:.3f} | {r['runs']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epsilons = sorted({r["epsilon"] for r in rows})
    ticks = list(range(len(epsilons)))
    labels = ["∞" if math.isinf(e) else f"{e:g}" for e in epsilons]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("accuracy", "auc"), strict=True):
        for name in dict.fromkeys(r["federation"] for r in rows):
            for level, style in (("hospital", "-"), ("record", "--")):
                values = {
                    r["epsilon"]: r[metric]
                    for r in rows
                    if r["federation"] == name and r["level"] in (level, "none")
                }
                line = [values.get(e, math.nan) for e in epsilons]
                axis.plot(ticks, line, style, marker="o", label=f"{name}, {level}-level")
        axis.set_xticks(ticks, labels)
        axis.set_xlabel("ε per run (δ = 1e-5)")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Encrypted FedAvg: hospital-level (distributed) vs record-level (DP-SGD) DP")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def log_to_mlflow(rows: list[dict], table: str, png: Path, args: argparse.Namespace) -> None:
    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment("fedquorum-bench-dp")
    with mlflow.start_run(run_name="bench_dp"):
        mlflow.log_params(
            {
                "rounds": args.rounds,
                "seeds": str(args.seeds),
                "clip_norm": args.clip_norm,
                "record_clip_norm": args.record_clip_norm,
                "delta": DELTA,
            }
        )
        for r in rows:
            name = r["federation"].replace(" (", "_").replace(") ", "_")
            cell = f"{name}_{r['level']}_eps_{r['epsilon']:g}"
            mlflow.log_metrics({f"{cell}_accuracy": r["accuracy"], f"{cell}_auc": r["auc"]})
        mlflow.log_table({k: [r[k] for r in rows] for k in rows[0]}, "bench_dp.json")
        mlflow.log_text(table, "bench_dp.md")
        mlflow.log_artifact(str(png))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)  # RDP orders near 1 that do not converge
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedquorum-bench-dp-") as tmp:
        csv = {"dataset": "csv", "num_features": 12, "data_paths": write_csv_federation(Path(tmp), 4)}
        federations = [
            federation
            for model in args.models
            for federation in (
                Federation(f"breast-cancer (5) {model}", 5, {"dataset": "breast_cancer", "model": model}),
                Federation(f"generated CSV (4) {model}", 4, csv | {"model": model}),
            )
        ]
        for federation in federations:
            jobs = jobs_for(federation, args)
            progress(f"{federation.name}: {len(jobs)} federations")
            sim = simulate_many(
                jobs,
                federation.hospitals,
                log_file("bench-dp"),
                on_run=partial(report, count=len(jobs)),
            )
            rows += table_rows(federation, sim.runs)
    table = markdown(rows)
    print(table)
    plot(rows, args.out)
    log_to_mlflow(rows, table, args.out, args)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()

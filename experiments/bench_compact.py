"""Does quantization cost accuracy? Plaintext vs encrypted FedAvg on a non-IID split (markdown).

    python -m experiments.bench_compact [--seeds 0 1 2] [--hospitals 5] [--rounds 10] [--alpha 0.5]
        [--presets compact precise] [--variants value_bits=12 max_parties=16 ...]

For each seed: the breast-cancer MLP trained by plaintext FedAvg and by encrypted FedAvg with
each preset, on the same Dirichlet(alpha) split from the same initial model (same seed), all
hospitals contributing every round. The tables give the final accuracy and AUC (of the pooled
test set: the hospitals' test splits together, ``models.pooled_metrics``) and
their difference to plaintext in points (0.01 = 1 point); the issue's target is ``compact``
within 0.5 points of plaintext in both. The test splits hold ~115 patients in all, so one
changed prediction moves accuracy by ~0.9 points: the final test loss and the largest weight
difference to the plaintext model are the finer measures of what quantization changed.

``--variants`` adds presets derived from ``--variant-base`` (``compact``) with
``dataclasses.replace``: ``value_bits=12`` (finer quantization), ``max_parties=16`` (4 fields per
prime instead of 3), or both, comma-separated. Ray workers import ``he.params`` afresh, so a
variant cannot just be added to ``he.params.PRESETS`` here: it is named ``compact:value_bits=12``
and built in each worker by the benchmark's ClientApp (``experiments._simulate``). FedAvg weights
use the round's weight scale (the federation's exact example count from the statistics pass),
so every hospital size is weighted exactly.

Stochastic rounding draws from the OS, so ``compact`` runs are not bit-reproducible; plaintext
and ``precise`` runs are. All federations run in one simulation after a 1-round warm-up.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np

from common.settings import RunSettings
from experiments._simulate import Run, ensure_preset, log_file, progress, simulate_many, variant_name

TARGET_POINTS = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--hospitals", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (non-IID)")
    parser.add_argument(
        "--partitioning", choices=["dirichlet", "iid"], default="dirichlet", help="iid: ~equal splits"
    )
    parser.add_argument("--presets", nargs="+", default=["compact", "precise"])
    parser.add_argument(
        "--variants",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE[,FIELD=VALUE]",
        help="variants of --variant-base, e.g. value_bits=12 max_parties=16",
    )
    parser.add_argument("--variant-base", default="compact")
    return parser.parse_args(argv)


def variant_presets(base: str, specs: list[str]) -> list[str]:
    names = []
    for spec in specs:
        changes = dict(item.split("=", 1) for item in spec.split(",") if item)
        names.append(variant_name(base, **changes))
    return names


def partition_sizes(args: argparse.Namespace, seed: int) -> list[int]:
    """Training examples of every simulated hospital (the same loader the hospitals use)."""
    from client.data import load_breast_cancer_partition

    return [
        len(
            load_breast_cancer_partition(
                i, args.hospitals, partitioning=args.partitioning, alpha=args.alpha, seed=seed
            ).y_train
        )
        for i in range(args.hospitals)
    ]


def final(run: Run | None, key: str) -> float:
    if run is None or not run.ok:
        return float("nan")
    return float(run.result.final_metrics.get(key, float("nan")))


def fmt(value: float, digits: int = 4, sign: bool = False) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def max_weight_diff(run: Run, plain: Run | None) -> float:
    if plain is None or not plain.ok or not run.ok:
        return float("nan")
    return max(
        float(np.max(np.abs(a - b))) for a, b in zip(run.result.weights, plain.result.weights, strict=True)
    )


def per_seed_table(seeds: list[int], configs: list[str], runs: dict) -> str:
    lines = [
        "| seed | run | accuracy | AUC | Δ accuracy (pts) | Δ AUC (pts) | Δ loss | max abs Δ weight "
        "| clipped values |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for seed in seeds:
        plain = runs.get((seed, "plaintext"))
        for config in configs:
            run = runs.get((seed, config))
            name = "plaintext FedAvg" if config == "plaintext" else f"`{config}`"
            if run is None or not run.ok:
                error = run.error[:160] if run else "missing"
                lines.append(f"| {seed} | {name} | failed: {error} |" + " |" * 6)
                continue
            acc, auc = final(run, "eval_accuracy"), final(run, "eval_auc")
            clipped = sum(int(h.get("clipped_values", 0)) for h in run.result.history)
            encrypted = config != "plaintext"
            lines.append(
                f"| {seed} | {name} | {fmt(acc)} | {fmt(auc)} "
                f"| {fmt(100 * (acc - final(plain, 'eval_accuracy')), 2, True) if encrypted else ''} "
                f"| {fmt(100 * (auc - final(plain, 'eval_auc')), 2, True) if encrypted else ''} "
                f"| {fmt(final(run, 'eval_loss') - final(plain, 'eval_loss'), 4, True) if encrypted else ''} "
                f"| {f'{max_weight_diff(run, plain):.1e}' if encrypted else ''} "
                f"| {clipped if encrypted else ''} |"
            )
    return "\n".join(lines)


def summary_table(seeds: list[int], configs: list[str], runs: dict) -> str:
    lines = [
        "| run | seeds | mean accuracy | mean AUC | mean Δ acc (pts) | mean Δ AUC (pts) "
        f"| worst abs Δ acc / AUC (pts) | mean within {TARGET_POINTS} pts | every seed within |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for config in configs:
        done = [s for s in seeds if (run := runs.get((s, config))) is not None and run.ok]
        name = "plaintext FedAvg" if config == "plaintext" else f"`{config}`"
        if not done:
            lines.append(f"| {name} | 0 |" + " |" * 7)
            continue
        accs = [final(runs[s, config], "eval_accuracy") for s in done]
        aucs = [final(runs[s, config], "eval_auc") for s in done]
        if config == "plaintext":
            lines.append(f"| {name} | {len(done)} | {fmt(np.mean(accs))} | {fmt(np.mean(aucs))} | | | | | |")
            continue
        plains = [runs.get((s, "plaintext")) for s in done]
        d_acc = [100 * (a - final(p, "eval_accuracy")) for a, p in zip(accs, plains, strict=True)]
        d_auc = [100 * (a - final(p, "eval_auc")) for a, p in zip(aucs, plains, strict=True)]
        mean_acc, mean_auc = statistics.fmean(d_acc), statistics.fmean(d_auc)
        worst_acc, worst_auc = max(map(abs, d_acc)), max(map(abs, d_auc))
        mean_ok = abs(mean_acc) <= TARGET_POINTS and abs(mean_auc) <= TARGET_POINTS
        every_ok = worst_acc <= TARGET_POINTS and worst_auc <= TARGET_POINTS
        lines.append(
            f"| {name} | {len(done)} | {fmt(np.mean(accs))} | {fmt(np.mean(aucs))} "
            f"| {fmt(mean_acc, 2, True)} | {fmt(mean_auc, 2, True)} "
            f"| {fmt(worst_acc, 2)} / {fmt(worst_auc, 2)} "
            f"| {'yes' if mean_ok else 'no'} | {'yes' if every_ok else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    presets = list(dict.fromkeys(args.presets + variant_presets(args.variant_base, args.variants)))
    for name in presets:
        ensure_preset(name)  # a bad variant fails here, before anything starts
    configs = ["plaintext", *presets]
    jobs, keys, sizes = [], [], {}
    for seed in args.seeds:
        sizes[seed] = partition_sizes(args, seed)
        common = {
            "num_rounds": args.rounds,
            "seed": seed,
            "min_train_nodes": args.hospitals,
            "partitioning": args.partitioning,
            "alpha": args.alpha,
        }
        for config in configs:
            strategy = {"strategy": "fedavg"} if config == "plaintext" else {"he_preset": config}
            jobs.append(RunSettings(**strategy, **common))
            keys.append((seed, config))

    def on_run(index: int, run: Run) -> None:
        what = "warm-up" if index < 0 else f"[{index + 1}/{len(jobs)}] seed {keys[index][0]} {keys[index][1]}"
        status = "ok" if run.ok else f"FAILED ({run.error[:200]})"
        progress(f"  {what}: {status} in {run.seconds:.1f} s")

    path = log_file("bench-compact")
    progress(f"bench_compact: {len(jobs)} federations + warm-up, Flower/Ray output in {path}")
    started = time.perf_counter()
    warm_up = RunSettings(strategy="fedavg", num_rounds=1, min_train_nodes=args.hospitals)
    sim = simulate_many(jobs, args.hospitals, path, warm_up=warm_up, on_run=on_run)
    total = time.perf_counter() - started
    runs = dict(zip(keys, sim.runs, strict=True))

    split = f"Dirichlet(alpha={args.alpha})" if args.partitioning == "dirichlet" else "IID"
    print(
        f"## Quantization vs accuracy: {args.hospitals} hospitals, {split} split, {args.rounds} "
        f"rounds, seeds {' '.join(map(str, args.seeds))}\n"
    )
    print(
        "Training examples per hospital: "
        + "; ".join(f"seed {s}: {' '.join(map(str, sizes[s]))}" for s in args.seeds)
        + "\n"
    )
    print(per_seed_table(args.seeds, configs, runs))
    print()
    print(summary_table(args.seeds, configs, runs))
    print()
    lines = ["| preset | value bits | fields / prime | clip | max contributors | stochastic rounding |"]
    lines.append("|---|---|---|---|---|---|")
    for name in presets:
        p = ensure_preset(name)
        lines.append(
            f"| `{name}` | {p.value_bits} | {p.fields_per_prime} | {p.clip:g} | {p.max_parties} "
            f"| {'yes' if p.stochastic_rounding else 'no'} |"
        )
    print("\n".join(lines))
    print(f"\nWhole benchmark: {total:.0f} s ({len(jobs)} federations). Flower/Ray log: {sim.log_path}")
    return 0 if all(r.ok for r in sim.runs) else 1


if __name__ == "__main__":
    sys.exit(main())

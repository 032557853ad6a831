"""Round benchmark: plaintext FedAvg vs encrypted FedAvg on simulated hospitals (markdown table).

    python -m experiments.bench_rounds [--hospitals 5] [--rounds 5] [--seed 0] [--preset precise]

Every federation trains the breast-cancer MLP from the same seed on the same IID split; the
encrypted ones use ``--preset`` and, as an extra row, ``--compact-preset``. They run one after
the other in one simulation (see ``experiments._simulate``), after a 1-round plaintext warm-up
federation that starts the Ray workers, so the set-up and round times below are those of warm
hospital processes. Round 1 is still left out of the per-round medians.

Columns: median seconds per round (rounds 2..R) and its ratio to plaintext; key set-up (the
three set-up query phases, encrypted only) and everything before round 1 (wait for nodes, key
set-up, feature statistics); bytes per client per round, up and down (array payloads as counted
by the strategy: ciphertexts, decryption shares, models); client encryption, server
aggregation (ciphertext sums), decryption (server combine / mean client partial decryption),
medians over rounds 2..R; final accuracy and AUC (of the pooled test set, ``models.pooled_metrics``).
Flower/Ray output goes to a log file, named at the end.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

from common.settings import RunSettings
from experiments._simulate import Run, ensure_preset, log_file, progress, simulate_many
from experiments.markdown_table import table_head


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hospitals", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="precise", help="HE preset of the encrypted run")
    parser.add_argument(
        "--compact-preset",
        default="compact",
        help="preset of the extra encrypted row ('' to skip); variants as compact:value_bits=10",
    )
    parser.add_argument("--threshold", type=int, default=0, help="t of t-of-n decryption; 0 = n-of-n")
    args = parser.parse_args(argv)
    if args.hospitals < 2 or args.rounds < 2:
        parser.error("need at least 2 hospitals and 2 rounds (round 1 is left out of the medians)")
    return args


def median_after_first(run: Run, key: str) -> float:
    values = [h[key] for h in run.result.history[1:] if key in h and math.isfinite(h[key])]
    return statistics.median(values) if values else float("nan")


def fmt(value: float, digits: int = 2) -> str:
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


def label(run: Run) -> str:
    if not run.settings.encrypted:
        return "plaintext FedAvg"
    return f"encrypted FedAvg, `{run.settings.he_preset}`"


def table(runs: list[Run]) -> str:
    lines = table_head(
        "run",
        "s / round",
        "× plaintext",
        "key set-up s",
        "before round 1 s",
        "up kB / client / round",
        "down kB / client / round",
        "encrypt s",
        "aggregate s",
        "decrypt s (server / client)",
        "accuracy",
        "AUC",
    )
    plain = next((r for r in runs if r.ok and not r.settings.encrypted), None)
    base = median_after_first(plain, "round_seconds") if plain else float("nan")
    for run in runs:
        if not run.ok:
            lines.append(f"| {label(run)} | failed: {run.error[:150]} |" + " |" * 10)
            continue
        per_round = median_after_first(run, "round_seconds")
        final = run.result.final_metrics
        decrypt = (
            f"{fmt(median_after_first(run, 'decrypt_seconds'), 3)} / "
            f"{fmt(median_after_first(run, 'client_decrypt_seconds'), 3)}"
            if run.settings.encrypted
            else "–"
        )
        cells = [
            label(run),
            fmt(per_round),
            fmt(per_round / base, 1) if run.settings.encrypted else "1.0",
            fmt(run.setup_seconds, 1),
            fmt(run.before_round1_seconds, 1),
            fmt(median_after_first(run, "bytes_up") / 1e3, 1),
            fmt(median_after_first(run, "bytes_down") / 1e3, 1),
            fmt(median_after_first(run, "encrypt_seconds"), 3),
            fmt(median_after_first(run, "aggregate_seconds"), 3),
            decrypt,
            fmt(final.get("eval_accuracy", float("nan")), 4),
            fmt(final.get("eval_auc", float("nan")), 4),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def preset_table(names: list[str], num_values: int) -> str:
    lines = [
        "| preset | value bits | fields / prime | values / ciphertext | ciphertexts / update "
        "| bytes / value (uploaded c0, one full ciphertext) |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        params = ensure_preset(name)
        count = -(-(num_values + 1) // params.values_per_ciphertext)
        lines.append(
            f"| `{name}` | {params.value_bits} | {params.fields_per_prime} | {params.values_per_ciphertext} "
            f"| {count} | {fmt(params.ciphertext_bytes / params.values_per_ciphertext, 1)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from server.app import initial_weights

    common = {
        "num_rounds": args.rounds,
        "seed": args.seed,
        "min_train_nodes": args.hospitals,
        "threshold": args.threshold,
    }
    presets = [args.preset] + ([args.compact_preset] if args.compact_preset else [])
    presets = list(dict.fromkeys(presets))
    jobs = [RunSettings(strategy="fedavg", **common)]
    jobs += [RunSettings(strategy="encrypted_fedavg", he_preset=name, **common) for name in presets]
    warm_up = RunSettings(strategy="fedavg", **{**common, "num_rounds": 1})
    num_values = sum(int(w.size) for w in initial_weights(jobs[0]))

    def on_run(index: int, run: Run) -> None:
        what = "warm-up" if index < 0 else label(run)
        status = "ok" if run.ok else f"FAILED ({run.error[:200]})"
        progress(f"  {what}: {status} in {run.seconds:.1f} s")

    path = log_file("bench-rounds")
    progress(f"bench_rounds: {len(jobs)} federations + warm-up, Flower/Ray output in {path}")
    started = time.perf_counter()
    sim = simulate_many(jobs, args.hospitals, path, warm_up=warm_up, on_run=on_run)
    total = time.perf_counter() - started

    threshold = args.threshold or args.hospitals
    print(
        f"## Rounds: {args.hospitals} simulated hospitals, {args.rounds} rounds, seed {args.seed}\n\n"
        f"Breast-cancer MLP (30-{jobs[0].hidden}-2, {num_values} values), IID split, "
        f"{threshold}-of-{args.hospitals} decryption, all hospitals contribute every round; "
        f"medians over rounds 2..{args.rounds}.\n"
    )
    print(table(sim.runs))
    print()
    print(preset_table(presets, num_values))
    warm = sim.warm_up
    print(
        f"\nSimulation: hospitals registered after {fmt(sim.startup_seconds, 1)} s; the 1-round "
        f"plaintext warm-up federation (Ray workers start, imports, data) took "
        f"{fmt(warm.seconds if warm else float('nan'), 1)} s, of which "
        f"{fmt(warm.before_round1_seconds if warm else float('nan'), 1)} s before its round 1. "
        f"Whole benchmark: {total:.0f} s. Flower/Ray log: {sim.log_path}"
    )
    return 0 if all(r.ok for r in sim.runs) else 1


if __name__ == "__main__":
    sys.exit(main())

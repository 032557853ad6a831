"""Benchmark of protocol v2 (he level, real presets): wire sizes, set-up, step timings, accuracy.

    python -m experiments.bench_he             # the full benchmark (~2 minutes on 2 cores)
    python -m experiments.bench_he --quick     # 10 hospitals, 100k values, compact (< 1 minute)
    python -m experiments.bench_he --config 32:16:11:compact --values 250000 --distinct 4

Each configuration ``N:K:T:PRESET`` is a federation of N hospitals (roster parties 1..N) whose
keyholder committee is parties 1..K with threshold T; everything runs in one process, through
the same ``he`` calls and byte frames as ``client.keyholder`` and the strategy (the hospital's
steps are ``he.party``'s functions, which ``client.keyholder`` calls too). The federation is built
in ``bench_he_setup``, the round measured in ``bench_he_round``, the tables in ``bench_he_tables``:

* **set-up**: signed hellos (``he.transcript``) of all N hospitals; each dealer draws ``s_i``
  (``gen_secret``), Shamir-deals it to the K committee points (``keygen.deal_secret_shares``:
  t_K - 1 keyholders get a seed, the others the full share), frames and seals each share for its
  keyholder (``he.channel.seal``; a keyholder keeps its own share unsealed) and signs the
  dealing; every keyholder checks, opens and expands what it was sent. Only ``--distinct``
  dealers (spread over the roster) deal and are timed; the per-hospital time is their median.
  Bytes through the server are counted exactly for all N dealers: hellos up, all hellos down
  to every hospital (the deal request), sealed shares and dealing statements up, and down to
  each keyholder (Flower's own message framing is not counted).
* **round**: the distinct dealers encrypt (seeded c1, c0 only) and serialize their updates;
  the server streams every hospital's frame into ``CiphertextSum`` (parsing and range checks
  included). With N > ``--distinct`` the frames of the distinct dealers are re-added under the
  other hospitals' ids and every keyholder's ``[s_U]_k`` sums the matching dealt shares, so the
  sum is a genuine encryption of N (repeated) updates and decrypts exactly; timings are those
  of N distinct updates, the model is not.
* **decryption**: a random decryption set of the minimum size ``ceil((K + T)/2)``; each member
  sums its |U| dealt shares, derives c1 from the label, its mask keys and pairwise masks, and
  serializes its masked flooded share; the server parses the |T| shares, combines and decodes.
* **share check** (``he.share_check``): the server's seed and check polynomial, each member's
  check share (``he.party.decryption_share`` with the check polynomial), the re-derivation a
  keyholder makes before it opens, and the server's verification; bytes of the check polynomial
  (down) and commitment plus check share (up) per keyholder.

Targets (the issue's) apply to the compact preset; precise rows are for reference. Times are
this process's CPU seconds by default (``--clock cpu``; every step is single-threaded, so this is
the wall time of an idle machine and is not inflated by other load); ``--clock wall`` for
elapsed time.
"""

from __future__ import annotations

import argparse
import os
import time

from experiments.bench_he_round import run_round
from experiments.bench_he_setup import Config, build_federation, progress
from experiments.bench_he_tables import print_table
from he.context import HEContext
from he.params import preset
from he.roster import DEFAULT_MAX_ATTEMPTS

DEFAULT_CONFIGS = ("10:10:6:compact", "10:10:6:precise", "100:16:11:compact", "128:16:11:compact")
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        type=Config.parse,
        action="append",
        metavar="N:K:T:PRESET",
        help=f"hospitals:committee:threshold:preset, repeatable (default: {' '.join(DEFAULT_CONFIGS)})",
    )
    parser.add_argument("--values", type=int, nargs="+", default=None, help="update sizes (100000 1000000)")
    parser.add_argument(
        "--distinct",
        type=int,
        default=10,
        help="hospitals that really deal and encrypt; the others reuse their updates (default 10)",
    )
    parser.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: this process's CPU seconds (user + system; every step is single-threaded, so on an "
        "idle machine this is the wall time, and other load does not inflate it); wall: elapsed time",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of the server's aggregate and combine (median)"
    )
    parser.add_argument("--quick", action="store_true", help="10:10:6:compact and 100k values only")
    args = parser.parse_args(argv)
    if args.quick:
        args.config = args.config or [Config.parse("10:10:6:compact")]
        args.values = args.values or [100_000]
    args.config = args.config or [Config.parse(c) for c in DEFAULT_CONFIGS]
    args.values = args.values or [100_000, 1_000_000]
    if args.distinct < 2:
        parser.error("--distinct must be at least 2")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    now = CLOCKS[args.clock]
    started = time.perf_counter()
    contexts: dict[str, HEContext] = {}
    setups: list[tuple[Config, dict]] = []
    rounds: dict[int, list[tuple[Config, dict]]] = {v: [] for v in args.values}
    for config in args.config:
        if config.preset not in contexts:
            contexts[config.preset] = HEContext(preset(config.preset))
        ctx = contexts[config.preset]
        ctx.params.check_federation(config.committee, args.max_attempts)
        ctx.params.check_contributors(config.hospitals)
        fed = build_federation(config, ctx, args.distinct, args.max_attempts, now)
        setups.append((config, fed.rows))
        for num_values in args.values:
            rounds[num_values].append(
                (config, run_round(fed, num_values, args.seed, args.max_attempts, args.repeats, now))
            )
        del fed

    clock = "process CPU seconds" if args.clock == "cpu" else "wall-clock seconds"
    print(f"\n## Protocol v2 benchmark (N={ctx.n}, {os.cpu_count()} CPUs, one process, {clock})")
    distinct_note = (
        f"Dealing timed for {args.distinct} dealers per configuration (median; every hospital's dealing "
        "is the same work); receiving (check, open, parse, expand a seed) timed on every keyholder for "
        "those dealers, scaled to n - 1 dealers, median over the keyholders sent seeds / full shares. "
        "Bytes count every dealer's sealed shares to every keyholder, up and down, plus the hellos "
        "(Flower framing excluded)."
    )
    print_table("Set-up (per run)", [distinct_note], setups, 0)
    round_note = (
        f"Configurations with n > {args.distinct}: {args.distinct} distinct hospitals encrypt; their frames "
        "are re-added under the other hospitals' ids (each parsed and validated), and [s_U]_k sums the "
        "matching dealt shares, so timings are those of n updates and the decryption is exact; the "
        "average is over repeated updates, whose rounding errors add up coherently (the error is up "
        "to sqrt(n / distinct) times that of n distinct updates). Weight scale S = ceil(2 x the round's "
        "total example count / max_parties) (the server's steady state); the 'n distinct updates' "
        "error row encodes and decodes n distinct updates without encryption (decryption is exact, "
        "as the row above it checks). "
        "Per-party steps: median over the parties that ran them "
        f"(breakdown rows: medians of each part); server steps: median of {args.repeats} runs. "
        "✓/✗: target met or missed (compact preset only)."
    )
    for num_values, columns in rounds.items():
        print_table(f"One round, {num_values:,} values per update", [round_note], columns, num_values)
    progress(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

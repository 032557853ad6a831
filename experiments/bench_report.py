"""The head-to-head benchmark's table: one row per (scenario, arm), from ``bench_arms`` results.

A round is measured from its first ``train`` message to the next round's (rounds 2..R-1: round
1 pays first-use costs, and round R's end has no next round to mark it); bytes are those of the
same rounds, per hospital. Ratios are to Flower's FedAvg in the same scenario.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

from experiments.markdown_table import table_head

COLUMNS = (
    "scenario",
    "hospitals",
    "parameters",
    "arm",
    "status",
    "s_per_round",
    "setup_s",
    "up_kB",
    "down_kB",
    "up_vs_float32",
    "server_peak_MB",
    "hospital_peak_MB",
    "accuracy",
    "auc",
    "crypto_share",
    "time_x_flower",
    "up_x_flower",
    "down_x_flower",
    "hospital_mem_x_flower",
)
LABELS = {
    "flower_fedavg": "Flower FedAvg",
    "fedavg": "our plaintext FedAvg",
    "secaggplus": "Flower SecAgg+",
    "compact": "fedquorum compact",
    "precise": "fedquorum precise",
    "small": "fedquorum small",
}
NAN = float("nan")


def measured_rounds(result: dict) -> list[int]:
    """Rounds whose length is known (a next round started), round 1 left out when others exist."""
    starts = {int(r): s for r, s in result["round_starts"].items()}
    rounds = [r for r in sorted(starts) if r + 1 in starts]
    return [r for r in rounds if r > 1] or rounds


def median(values: list[float]) -> float:
    return statistics.median(values) if values else NAN


def row(scenario: dict, parameters: int, result: dict) -> dict:
    """One arm's columns (ratios are filled in by ``add_ratios``)."""
    hospitals = int(scenario["hospitals"])
    starts = {int(r): s for r, s in result["round_starts"].items()}
    rounds = measured_rounds(result)
    up = median([result["bytes_up"].get(str(r), 0) / hospitals for r in rounds])
    crypto = result.get("crypto") or {}
    per_round = median([starts[r + 1] - starts[r] for r in rounds])
    status = "ok" if result.get("done") else (result.get("error") or "failed")
    return {
        "scenario": scenario["name"],
        "hospitals": hospitals,
        "parameters": parameters,
        "arm": result["arm"],
        "status": status,
        "s_per_round": per_round,
        "setup_s": starts.get(1, NAN),
        "up_kB": up / 1e3,
        "down_kB": median([result["bytes_down"].get(str(r), 0) / hospitals for r in rounds]) / 1e3,
        "up_vs_float32": up / (4 * parameters),
        "server_peak_MB": result["server_peak_rss"] / 2**20 or NAN,
        "hospital_peak_MB": result["hospital_peak_rss"] / 2**20 or NAN,
        "accuracy": result["final"].get("eval_accuracy", NAN),
        "auc": result["final"].get("eval_auc", NAN),
        "crypto_share": sum(crypto.values()) / per_round if crypto else NAN,
    }


def not_run(scenario: dict, parameters: int, arm: str, reason: str) -> dict:
    base = {key: NAN for key in COLUMNS}
    return base | {
        "scenario": scenario["name"],
        "hospitals": scenario["hospitals"],
        "parameters": parameters,
        "arm": arm,
        "status": reason,
    }


def add_ratios(rows: list[dict]) -> None:
    """Ratios to Flower FedAvg of the same scenario (NaN where it did not run)."""
    pairs = (
        ("time_x_flower", "s_per_round"),
        ("up_x_flower", "up_kB"),
        ("down_x_flower", "down_kB"),
        ("hospital_mem_x_flower", "hospital_peak_MB"),
    )
    for r in rows:
        base = next((b for b in rows if b["scenario"] == r["scenario"] and b["arm"] == "flower_fedavg"), {})
        for ratio, key in pairs:
            denominator = base.get(key, NAN)
            r[ratio] = r[key] / denominator if denominator and math.isfinite(denominator) else NAN


def fmt(value: object, digits: int = 2) -> str:
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def markdown(rows: list[dict]) -> str:
    lines = table_head(
        "scenario",
        "arm",
        "s / round",
        "× Flower",
        "set-up s",
        "up kB",
        "down kB",
        "up × float32",
        "up × Flower",
        "server MB",
        "hospital MB",
        "hospital × Flower",
        "accuracy",
        "AUC",
        "crypto share",
        "status",
    )
    for r in rows:
        cells = [
            f"{r['scenario']} ({r['hospitals']} h, {r['parameters']:,} p)",
            LABELS.get(r["arm"], r["arm"]),
            fmt(r["s_per_round"]),
            fmt(r["time_x_flower"]),
            fmt(r["setup_s"], 1),
            fmt(r["up_kB"], 1),
            fmt(r["down_kB"], 1),
            fmt(r["up_vs_float32"]),
            fmt(r["up_x_flower"]),
            fmt(r["server_peak_MB"], 0),
            fmt(r["hospital_peak_MB"], 0),
            fmt(r["hospital_mem_x_flower"]),
            fmt(r["accuracy"], 4),
            fmt(r["auc"], 4),
            fmt(r["crypto_share"]),
            r["status"][:160].replace("|", "/").replace("\n", " "),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(rows: list[dict], out_dir: Path) -> dict[str, Path]:
    """CSV, JSON, markdown table and the PNG (round time and upload against hospitals)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / f"bench.{kind}" for kind in ("csv", "json", "md", "png")}
    with paths["csv"].open("w", newline="") as sink:
        writer = csv.DictWriter(sink, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    paths["json"].write_text(json.dumps(rows, indent=1, default=float))
    paths["md"].write_text(markdown(rows) + "\n")
    plot(rows, paths["png"])
    return paths


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tabular = [r for r in rows if r["scenario"].startswith("mlp")]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = (
        ("s_per_round", "s / round"),
        ("up_kB", "up kB / hospital / round"),
        ("down_kB", "down kB / hospital / round"),
    )
    for axis, (key, title) in zip(axes, panels, strict=True):
        for arm, label in LABELS.items():
            points = sorted(
                (r["hospitals"], r[key]) for r in tabular if r["arm"] == arm and math.isfinite(r[key])
            )
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=label)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("hospitals (breast-cancer MLP)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)

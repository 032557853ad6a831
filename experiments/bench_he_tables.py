"""The benchmark's targets (the issue's) and its markdown tables (``bench_he``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from experiments.bench_he_setup import Config


@dataclass(frozen=True)
class Target:
    text: str
    limit: float
    applies: object  # (config, num_values) -> bool


TARGETS = {
    "bytes/value uploaded (one update frame)": Target(
        "≤ 5 (compact, 1M values)", 5.0, lambda c, v: c.preset == "compact" and v >= 1_000_000
    ),
    "encrypt per hospital [s]": Target("≤ 0.5 (compact)", 0.5, lambda c, v: c.preset == "compact"),
    "aggregate of n updates [s]": Target(
        "≤ 3 at n=100 (compact)", 3.0, lambda c, v: c.preset == "compact" and c.hospitals == 100
    ),
    "partial decrypt per keyholder [s]": Target(
        "≤ 0.5 at |T|=14 (compact)",
        0.5,
        lambda c, v: c.preset == "compact" and math.ceil((c.committee + c.threshold) / 2) == 14,
    ),
    "combine + decode [s]": Target("≤ 1 (compact)", 1.0, lambda c, v: c.preset == "compact"),
    "set-up through the server, up + down [GB]": Target("≤ 1 at n=128", 1.0, lambda c, v: c.hospitals == 128),
}


def fmt(value) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.2e}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.3g}"
    return str(value)


def escape(text: str) -> str:
    """A markdown table cell: ``|`` (as in |T|) must not end the cell."""
    return text.replace("|", "\\|")


def cell(key: str, value, config: Config, num_values: int) -> str:
    text = fmt(value)
    target = TARGETS.get(key)
    if target is not None and isinstance(value, float) and target.applies(config, num_values):
        text += " ✓" if value <= target.limit else " ✗"
    return text


def print_table(title: str, notes: list[str], columns: list[tuple[Config, dict]], num_values: int) -> None:
    print(f"\n### {title}\n")
    for note in notes:
        print(f"{note}  ")
    print()
    print("| metric | " + " | ".join(c.column for c, _ in columns) + " | target |")
    print("|---|" + "---|" * (len(columns) + 1))
    for key in columns[0][1]:
        cells = [cell(key, rows.get(key, "–"), config, num_values) for config, rows in columns]
        target = TARGETS[key].text if key in TARGETS else ""
        name = "↳ " + key.strip() if key.startswith("  ") else key
        print(f"| {escape(name)} | " + " | ".join(cells) + f" | {escape(target)} |")

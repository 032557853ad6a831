"""What a run keeps: its result so far (or why it stopped), and of each round its traffic, its
one log line and its metrics (what MLflow and the progress bar show)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class RoundFailedError(RuntimeError):
    """A round could not produce a new global model (too few valid contributions or shares)."""


@dataclass
class FederationResult:
    """Final global weights and the per-round metric history (plain values)."""

    weights: list[np.ndarray]
    history: list[dict] = field(default_factory=list)
    final_metrics: dict = field(default_factory=dict)
    evaluation: object | None = None  # the task's pooled evaluation of the final model (curves)
    tags: dict[str, str] = field(default_factory=dict)  # run facts for MLflow tags (``run_tags``)


@dataclass
class RoundTraffic:
    bytes_down: int = 0
    bytes_up: int = 0
    seconds: dict = field(default_factory=dict)


@dataclass
class RoundNotes:
    """What a round's one log line says beyond its metrics: whose updates went into it, which
    keyholders decrypted it, and what came of it (filled in by ``aggregate_train``)."""

    contributors: list[str] = field(default_factory=list)
    decryption_set: list[str] = field(default_factory=list)
    outcome: str = ""

    def line(self, server_round: int, num_rounds: int, aggregated: bool, seconds: float) -> str:
        """``round 2/3: contributors a, b; decryption set a, b, c; aggregated ...; 4.2 s``."""
        outcome = self.outcome or ("aggregated" if aggregated else "no aggregate, the previous model kept")
        return (
            f"round {server_round}/{num_rounds}: contributors {', '.join(self.contributors) or 'none'}; "
            f"decryption set {', '.join(self.decryption_set) or 'none'}; {outcome}; {seconds:.1f} s"
        )


def round_metrics(
    metrics: dict, missing: list[str], seconds: float, traffic: RoundTraffic, participants: int
) -> dict:
    """A round's metrics as recorded: the aggregation's, the hospitals that sent no valid update,
    the round's seconds and its traffic per participant."""
    metrics = dict(metrics)
    metrics |= {"missing_hospitals": len(missing), "missing": ", ".join(missing)}
    metrics["round_seconds"] = seconds
    participants = max(1, participants)
    metrics["bytes_down"] = traffic.bytes_down / participants
    metrics["bytes_up"] = traffic.bytes_up / participants
    return metrics | traffic.seconds

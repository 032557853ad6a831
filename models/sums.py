"""What every task's pooled evaluation shares: a vector of non-negative integer sums in named
sections, and fixed point for real-valued totals.

A hospital's sums are added to other hospitals' under HE (``he.encoding``'s exact sums, at most
``MAX_TOTAL`` each) or in the clear by plaintext FedAvg, so every entry must be a non-negative
integer and mean the same thing at every hospital.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FIXED_POINT_BITS = 32  # real-valued totals travel as integers of 2^-32
MAX_TOTAL = (1 << 62) - 1  # he.encoding.SUM_BITS: a total above it is carried as the maximum
ONE = float(1 << FIXED_POINT_BITS)
COUNTS = ("eval_examples", "hospitals", "loss", "train_examples", "train_loss", "clipped_values")


def fixed_point(value: float) -> int:
    """``value`` in units of 2^-32, clamped to [0, MAX_TOTAL] (rounding error < 2^-33)."""
    return min(MAX_TOTAL, max(0, round(value * (1 << FIXED_POINT_BITS))))


def from_fixed_point(value: int) -> float:
    return int(value) / ONE


class SectionedLayout:
    """Mixin: ``size`` and ``split`` from the subclass's ``sections`` (name -> shape, () a scalar)."""

    sections: dict[str, tuple[int, ...]]

    @property
    def size(self) -> int:
        return sum(math.prod(shape) for shape in self.sections.values())

    def split(self, sums) -> dict[str, np.ndarray]:
        """The named sections of a sum vector (object arrays of Python ints: sums can exceed int64)."""
        if len(sums) != self.size:
            raise ValueError(f"evaluation sums: expected {self.size} values, got {len(sums)}")
        values = np.array([int(v) for v in sums], dtype=object)
        out, start = {}, 0
        for name, shape in self.sections.items():
            size = math.prod(shape)
            out[name] = values[start : start + size].reshape(shape) if shape else values[start]
            start += size
        return out

    def join(self, parts: dict[str, object]) -> list[int]:
        """The sum vector of ``parts`` (one value per scalar, one array per section), in order."""
        out: list[int] = []
        for name, shape in self.sections.items():
            value = parts[name]
            if shape:
                array = np.asarray(value)
                if array.shape != shape:
                    raise ValueError(f"evaluation section {name!r}: shape {array.shape}, expected {shape}")
                out.extend(int(v) for v in array.ravel())
            else:
                out.append(int(value))
        if any(v < 0 for v in out):
            raise ValueError("evaluation sums must be non-negative integers")
        return out


def counts(
    examples: int, loss_total: float, train_examples: int, train_loss: float, clipped_values: int
) -> dict[str, int]:
    """The ``COUNTS`` of one hospital: it counts 1 among the hospitals; losses in fixed point."""
    return {
        "eval_examples": int(examples),
        "hospitals": 1,
        "loss": fixed_point(loss_total),
        "train_examples": int(train_examples),
        "train_loss": fixed_point(train_loss * train_examples),
        "clipped_values": int(clipped_values),
    }


class CountedLayout(SectionedLayout):
    """Mixin of the layouts that begin with ``COUNTS``: one ``local_sums`` for every such task,
    which adds the counts to the sections ``task_sums`` makes of the task's own targets."""

    def task_sums(self, targets: np.ndarray, predictions: np.ndarray) -> tuple[int, dict[str, object]]:
        """(evaluated examples, the task's own sections) of one hospital's test split."""
        raise NotImplementedError

    def local_sums(
        self,
        targets: np.ndarray,
        predictions: np.ndarray,
        loss_total: float,
        train_examples: int = 0,
        train_loss: float = 0.0,
        clipped_values: int = 0,
    ) -> list[int]:
        """One hospital's evaluation sums (its own test split only)."""
        examples, sections = self.task_sums(targets, predictions)
        return self.join(counts(examples, loss_total, train_examples, train_loss, clipped_values) | sections)


@dataclass(frozen=True)
class PooledSums:
    """Base of a task's pooled evaluation: the layout and its split federation-wide sums."""

    layout: SectionedLayout
    sums: dict

    @property
    def examples(self) -> int:
        return int(self.sums["eval_examples"])

    def count_metrics(self) -> dict[str, float]:
        """``eval_examples``, ``clipped_values`` and (if hospitals trained) ``train_loss``."""
        out = {"eval_examples": float(self.examples), "clipped_values": float(self.sums["clipped_values"])}
        if int(self.sums["train_examples"]):
            out["train_loss"] = from_fixed_point(self.sums["train_loss"]) / int(self.sums["train_examples"])
        return out

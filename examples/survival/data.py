"""Generated follow-up tables: Weibull event times under a shared proportional-hazards rule,
censored by loss to follow-up and by the end of the study; one CSV per hospital (fixed seed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from examples.cli import write_tables

FEATURES = ("age", "stage", "biomarker", "treated")
STUDY_MONTHS = 60.0  # administrative censoring: no follow-up time exceeds it (the time horizon)


def cohort(rng: np.random.Generator, rows: int, stage_shift: float) -> pd.DataFrame:
    """One hospital's patients; ``stage_shift`` moves its stage mix (referral centres see later
    stages). Hazard ratio exp(0.03·(age-60) + 0.5·(stage-2) + 0.4·biomarker - 0.6·treated)."""
    age = np.clip(rng.normal(60, 11, rows), 25, 90)
    stage = np.clip(np.round(rng.normal(2 + stage_shift, 0.9, rows)), 1, 4)
    biomarker = rng.normal(0, 1, rows)
    treated = rng.binomial(1, 0.5, rows)
    risk = 0.03 * (age - 60) + 0.5 * (stage - 2) + 0.4 * biomarker - 0.6 * treated
    shape, scale = 1.4, 40.0
    event_time = scale * (rng.exponential(1.0, rows) * np.exp(-risk)) ** (1 / shape)
    dropout = rng.uniform(0, 150, rows)
    time = np.minimum.reduce([event_time, dropout, np.full(rows, STUDY_MONTHS)])
    frame = pd.DataFrame({"age": age.round(0), "stage": stage, "biomarker": biomarker.round(3)})
    frame["treated"] = treated
    frame["time"] = np.maximum(time, 0.1).round(1)
    frame["event"] = (event_time <= np.minimum(dropout, STUDY_MONTHS)).astype(int)
    return frame


def write_hospitals(directory: Path, hospitals: int = 3, seed: int = 0) -> list[Path]:
    """``hospital-<i>.csv`` in ``directory`` (300-600 patients each, later stages at later hospitals)."""
    return write_tables(
        directory, hospitals, seed, (300, 600), lambda rng, rows, i: cohort(rng, rows, 0.4 * i - 0.4)
    )

"""Generated admission tables: one CSV per hospital, each with its own case mix (fixed seed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from examples.cli import write_tables

FEATURES = ("age", "comorbidities", "emergency", "creatinine", "hemoglobin")
TARGET = "length_of_stay"


def admissions(rng: np.random.Generator, rows: int, older: float) -> pd.DataFrame:
    """Patients of one hospital; ``older`` shifts its age mix (years). Stay in days is log-normal
    around a rule shared by all hospitals."""
    age = np.clip(rng.normal(62 + older, 14, rows), 18, 98)
    comorbidities = rng.poisson(1 + (age - 40) / 30)
    emergency = rng.binomial(1, 0.45, rows)
    creatinine = rng.lognormal(0.0, 0.3, rows)
    hemoglobin = rng.normal(13.2, 1.6, rows)
    log_days = (
        1.2
        + 0.012 * (age - 60)
        + 0.15 * comorbidities
        + 0.35 * emergency
        + 0.25 * (creatinine - 1)
        - 0.06 * (hemoglobin - 13)
        + rng.normal(0, 0.3, rows)
    )
    frame = pd.DataFrame(
        {
            "age": age.round(0),
            "comorbidities": comorbidities,
            "emergency": emergency,
            "creatinine": creatinine.round(2),
            "hemoglobin": hemoglobin.round(1),
        }
    )
    frame[TARGET] = np.exp(log_days).round(1)
    return frame


def write_hospitals(directory: Path, hospitals: int = 3, seed: int = 0) -> list[Path]:
    """``hospital-<i>.csv`` in ``directory`` (400-700 patients each, older at later hospitals)."""
    return write_tables(
        directory, hospitals, seed, (400, 700), lambda rng, rows, i: admissions(rng, rows, 8.0 * i - 8.0)
    )

"""The data check of a hospital CSV before it trains (missing values, zeros that look like
"missing" codes, label balance), for the hospital's own console; it reads the table as
:func:`client.data.csv_table.load_csv` does."""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from client.data.csv_table import plain, read_table
from client.data.hospital import HospitalDataError

MOSTLY_MISSING = 0.5  # a feature column missing in more than half the rows is mostly imputed values
MIN_NONZERO_FOR_ZERO_HINT = 5  # fewer non-zero values say nothing about where the column lives


@dataclass(frozen=True)
class CsvQuality:
    """What a hospital's IT person should know about a CSV before it trains: missing values per
    feature column (imputed silently by :func:`load_csv`), zeros that look like "missing" codes
    and the label balance. For the hospital's own console only: it names columns and labels."""

    path: str
    rows: int
    missing: dict[str, int]  # feature column -> rows without a value (columns with any)
    suspicious_zeros: dict[str, int]  # feature column -> rows holding 0 (see zero_looks_missing)
    label_counts: dict[str, int]  # label value as text -> rows; missing labels under "(missing)"

    def lines(self) -> list[str]:
        """The report, one line per finding (info)."""
        out = [f"{self.path}: {self.rows} rows"]
        for column, count in self.missing.items():
            out.append(
                f"  column {column!r}: {count} missing ({100 * count / self.rows:.1f} %), imputed with the "
                "training split's median"
            )
        if not self.missing:
            out.append("  no missing feature values (nothing imputed)")
        labels = ", ".join(f"{label!r}: {count}" for label, count in self.label_counts.items())
        out.append(f"  label balance: {labels}")
        return out

    def warnings(self) -> list[str]:
        """Findings worth a look before training (warnings, not errors)."""
        out = [
            f"{self.path}: column {column!r} is {100 * count / self.rows:.1f} % missing: most of its "
            "values will be the imputed median; fill it or leave the column out at this site"
            for column, count in self.missing.items()
            if count > MOSTLY_MISSING * self.rows
        ]
        out += [
            f"{self.path}: column {column!r} holds 0 in {count} row(s) but its other values are far from 0: "
            "is 0 a code for 'missing'? If so, leave those cells empty so they are imputed"
            for column, count in self.suspicious_zeros.items()
        ]
        return out


def zero_looks_missing(values: pd.Series) -> bool:
    """Is a 0 in this numeric column implausible (a code for "missing", e.g. a blood pressure of 0)?

    The rule: the column holds 0, at least ``MIN_NONZERO_FOR_ZERO_HINT`` non-zero values, all of
    one sign, and the gap from 0 to the nearest non-zero value is wider than the interquartile
    range of the non-zero values, so 0 lies far outside where the column's values live. Counts
    (0, 1, 2, ...) and skewed lab values near 0 do not match. A hint, never an error.
    """
    present = values.dropna()
    nonzero = present[present != 0].abs()
    if not (present == 0).any() or len(nonzero) < MIN_NONZERO_FOR_ZERO_HINT:
        return False
    if (present > 0).any() and (present < 0).any():
        return False
    q1, q3 = np.quantile(nonzero, [0.25, 0.75])
    return bool(nonzero.min() > q3 - q1)


def csv_quality(path: str | PathLike[str], target_column: str) -> CsvQuality:
    """The data check's report on a hospital CSV (:class:`CsvQuality`); features as in
    :func:`load_csv` (every column except the target), over all rows before the split."""
    path = Path(path)
    frame = read_table(path)
    if target_column not in frame.columns:
        raise HospitalDataError(f"{path}: missing target column {target_column!r}")
    features = [c for c in frame.columns if c != target_column]
    missing = {str(c): int(frame[c].isna().sum()) for c in features if frame[c].isna().any()}
    zeros = {
        str(c): int((frame[c] == 0).sum())
        for c in features
        if pd.api.types.is_numeric_dtype(frame[c]) and zero_looks_missing(frame[c])
    }
    labels = frame[target_column]
    if pd.api.types.is_float_dtype(labels) and np.all(np.mod(labels.dropna(), 1) == 0):
        labels = labels.astype("Int64")  # integer labels read as float because of missing ones
    counts = {str(plain(v)): int(n) for v, n in labels.value_counts().items()}
    counts = dict(sorted(counts.items()))
    if labels.isna().any():
        counts["(missing)"] = int(labels.isna().sum())
    return CsvQuality(str(path), len(frame), missing, zeros, counts)

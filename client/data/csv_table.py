"""A hospital's own table from a CSV file: label encoding shared by the federation, missing
labels dropped, missing features imputed from the training split only."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from client.data.hospital import HospitalData, HospitalDataError, MissingHospitalData
from client.data.split import check_fraction, split_indices
from client.targets import TASKS_WITH_VALUES, TargetColumns

logger = logging.getLogger(__name__)


CLASSES_OPTIONS = "dataset.classes=[...] for the runner, --classes for the daemon"


def plain(value: object) -> object:
    """Turn numpy scalars into Python ones so ``class_names`` compare and print naturally."""
    return value.item() if isinstance(value, np.generic) else value


def _encode_labels(
    target: pd.Series, classes: Sequence[object] | None, path: Path
) -> tuple[np.ndarray, tuple[object, ...]]:
    """Map labels to ``0..K-1`` by sorted value, over ``classes`` if given.

    ``classes`` (the federation's label values, e.g. from a run's ``dataset.classes``) are
    compared as text, so ``0``/``1`` in a file match ``"0"``/``"1"`` from a configuration.
    """
    if pd.api.types.is_float_dtype(target) and np.all(np.mod(target, 1) == 0):
        target = target.astype(np.int64)  # integer labels read as float because of NaNs
    if classes is None:
        values = [plain(v) for v in target.unique()]
    else:
        values = [str(plain(v)) for v in classes]
        if len(set(values)) != len(values):
            raise ValueError(f"classes contains duplicates: {list(classes)!r}")
        target = target.map(lambda v: str(plain(v)))
    try:
        ordered = tuple(sorted(values))
    except TypeError as err:
        raise HospitalDataError(f"{path}: labels of mixed types cannot be ordered: {values!r}") from err
    index = {value: i for i, value in enumerate(ordered)}
    codes = target.map(index)
    if codes.isna().any():
        unknown = sorted({plain(v) for v in target[codes.isna()]}, key=repr)
        raise HospitalDataError(
            f"{path}: label(s) {unknown!r} of column {target.name!r} are not in classes {list(ordered)!r}"
        )
    if len(ordered) < 2:
        raise HospitalDataError(
            f"{path}: column {target.name!r} has a single class {list(ordered)!r}; give the federation's "
            f"label values ({CLASSES_OPTIONS})"
        )
    return codes.to_numpy(dtype=np.int64), ordered


def require_named_classes(data: HospitalData, path: str | PathLike[str], option: str) -> None:
    """Refuse text labels when the federation named no classes: each site numbers its labels by
    sorted value, so a site with ``benign``/``malignant`` and one with ``0``/``1`` (or one that
    lacks a class) would silently disagree on what each number means."""
    if any(isinstance(name, str) for name in data.class_names):
        raise HospitalDataError(
            f"{path}: the labels {list(data.class_names)!r} are text; give the federation's label values "
            f"with {option} so every hospital numbers them the same"
        )


def read_table(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError as err:
        raise HospitalDataError(f"hospital table {path} is empty") from err
    if frame.empty:
        raise HospitalDataError(f"hospital table {path} is empty: a header row but no data rows")
    return frame


def load_csv(
    path: str | PathLike[str],
    target_column: str,
    feature_columns: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    classes: Sequence[object] | None = None,
    targets: TargetColumns | None = None,
) -> HospitalData:
    """Load a hospital's own table from a CSV file.

    Parameters
    ----------
    path
        CSV file with a header row.
    target_column
        Column holding the class label. Rows with a missing label are dropped (the count is
        logged as a warning).
    feature_columns
        Numeric columns to use as features; default: every column except the target.
    test_fraction
        Fraction of rows held out for testing (seeded, stratified when possible).
    seed
        Seed of the train/test split.
    classes
        Label values of the whole federation. Labels are mapped to ``0..K-1`` in sorted
        order of these values (or of the labels present if ``None``), so every hospital
        passing the same ``classes`` gets the same encoding even if it lacks some classes.
    targets
        The task and its target column(s) (``client.targets``); default: classification of
        ``target_column``. Regression and survival split by event, without classes.

    Notes
    -----
    Missing feature values are imputed with the column's median over this site's training
    split only, so no test information leaks into training; a column with no value in the
    training split is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingHospitalData(f"hospital table {path} does not exist")
    check_fraction(test_fraction)
    frame = read_table(path)
    present = [str(c) for c in frame.columns]
    targets = targets or TargetColumns(target=target_column)
    target_columns = targets.columns
    features = [c for c in frame.columns if c not in target_columns]
    if feature_columns is not None:
        features = list(feature_columns)
        if set(target_columns) & set(features):
            raise HospitalDataError(f"{path}: target column(s) {target_columns} are also features")
    missing = [c for c in [*target_columns, *features] if c not in frame.columns]
    if missing:
        raise HospitalDataError(f"{path}: missing column(s) {missing}; columns present: {present}")
    if not features:
        raise HospitalDataError(f"{path}: no feature columns besides target(s) {target_columns}")
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise HospitalDataError(
            f"{path}: feature column(s) {non_numeric} are not numeric; encode them as numbers or "
            "remove them from the file (every column except the target is a feature)"
        )

    labeled = frame[target_columns].notna().all(axis=1)
    if not labeled.all():
        dropped = int((~labeled).sum())
        logger.warning("%s: dropped %d row(s) with missing target %s", path, dropped, target_columns)
        frame = frame[labeled]
    if targets.task in TASKS_WITH_VALUES:
        y, strata = targets.values(frame, path, HospitalDataError)
        class_names: tuple[object, ...] = ()
    else:
        y, class_names = _encode_labels(frame[target_columns[0]], classes, path)
        strata = y
    x = frame[features].to_numpy(dtype=np.float64)
    infinite = [c for c, bad in zip(features, np.isinf(x).any(axis=0), strict=True) if bad]
    if infinite:
        raise HospitalDataError(f"{path}: feature column(s) {infinite} contain infinite values")

    train_idx, test_idx = split_indices(strata, test_fraction, seed)
    x_train, x_test = x[train_idx], x[test_idx]
    nan_train, nan_test = np.isnan(x_train), np.isnan(x_test)
    if nan_train.any() or nan_test.any():
        empty = [c for c, bad in zip(features, nan_train.all(axis=0), strict=True) if bad]
        if empty:
            raise HospitalDataError(
                f"{path}: feature column(s) {empty} have no values in the training split to impute from"
            )
        medians = np.nanmedian(x_train, axis=0)
        x_train = np.where(nan_train, medians, x_train)
        x_test = np.where(nan_test, medians, x_test)
    return HospitalData(
        x_train=x_train,
        y_train=y[train_idx],
        x_test=x_test,
        y_test=y[test_idx],
        num_features=len(features),
        num_classes=len(class_names) or 1,
        class_names=class_names,
        task=targets.task,
    )

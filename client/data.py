"""Load one hospital's data: a partition of a public benchmark, its own CSV table, or MedMNIST.

Every loader returns a :class:`HospitalData` with float32 features and int64 labels in
``0..num_classes-1``. Loaders never standardise: global statistics are computed federatedly
from :func:`feature_moments` (whose sums are encrypted and added by the server, so they never
leave a site in the clear) and applied with :func:`standardize`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

from client.targets import TASKS_WITH_VALUES, TargetColumns

__all__ = [
    "PARTITIONINGS",
    "CsvQuality",
    "HospitalData",
    "HospitalDataError",
    "MissingHospitalData",
    "csv_quality",
    "feature_moments",
    "load_breast_cancer_partition",
    "load_csv",
    "load_npz",
    "mean_std_from_moments",
    "partition_indices",
    "standardize",
]

logger = logging.getLogger(__name__)

PARTITIONINGS: tuple[str, ...] = ("iid", "dirichlet")
MIN_PARTITION_SIZE = 10
DIRICHLET_MAX_TRIES = 100
NPZ_KEYS: tuple[str, str, str, str] = ("train_images", "train_labels", "test_images", "test_labels")


class HospitalDataError(ValueError):
    """This hospital's file does not fit the run's dataset settings (``classes``, target column,
    features). The message names local paths and label values, so it stays in the hospital's log:
    the coordinator gets a generic reason (``client.error_boundary``)."""


class MissingHospitalData(HospitalDataError, FileNotFoundError):
    """The hospital's data file does not exist."""


@dataclass(frozen=True, eq=False)
class HospitalData:
    """One hospital's train/test split.

    Arrays are converted to float32 features and int64 labels, checked for consistency and
    made read-only, so a ``HospitalData`` can be shared without defensive copies.

    Attributes
    ----------
    x_train, y_train, x_test, y_test
        Features ``(N, *feature_shape)`` and labels ``(N,)`` in ``0..num_classes-1``.
    num_features
        Number of features for tabular data, ``(C, H, W)`` for images.
    num_classes
        Number of classes of the federation (a site may hold fewer); 1 for regression and survival.
    class_names
        Original label value of each class index (e.g. ``("malignant", "benign")``).
    task
        ``classification`` (labels as above), ``regression`` (float targets ``(N,)``) or
        ``survival`` (float ``(N, 2)``: time, event).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_features: int | tuple[int, ...]
    num_classes: int
    class_names: tuple[object, ...] = ()
    task: str = "classification"

    def __post_init__(self) -> None:
        classification = self.task == "classification"
        if self.num_classes < 2 if classification else self.num_classes != 1:
            raise ValueError(f"num_classes must be >= 2 (1 for {TASKS_WITH_VALUES}), got {self.num_classes}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} entries, expected num_classes={self.num_classes}"
            )
        for split in ("train", "test"):
            x = np.array(getattr(self, f"x_{split}"), dtype=np.float32)
            y = np.array(getattr(self, f"y_{split}"), dtype=np.int64 if classification else np.float64)
            if x.shape[1:] != self.feature_shape:
                raise ValueError(
                    f"x_{split} has per-example shape {x.shape[1:]}, expected {self.feature_shape}"
                )
            target_shape = (len(x), 2) if self.task == "survival" else (len(x),)
            if y.shape != target_shape:
                raise ValueError(f"y_{split} has shape {y.shape}, expected {target_shape}")
            if classification and len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(
                    f"y_{split} has labels outside 0..{self.num_classes - 1}: min {y.min()}, max {y.max()}"
                )
            x.flags.writeable = False
            y.flags.writeable = False
            object.__setattr__(self, f"x_{split}", x)
            object.__setattr__(self, f"y_{split}", y)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one example: ``(num_features,)`` or ``(C, H, W)``."""
        if isinstance(self.num_features, int):
            return (self.num_features,)
        return tuple(self.num_features)

    def loaders(self, batch_size: int, seed: int) -> tuple[DataLoader, DataLoader]:
        """Return ``(train_loader, test_loader)``.

        The train loader shuffles with its own generator seeded by ``seed`` (reproducible and
        independent of torch's global RNG); the test loader keeps the stored order.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        train = TensorDataset(torch.tensor(self.x_train), torch.tensor(self.y_train))
        test = TensorDataset(torch.tensor(self.x_test), torch.tensor(self.y_test))
        generator = torch.Generator().manual_seed(seed)
        return (
            DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator),
            DataLoader(test, batch_size=batch_size, shuffle=False),
        )


# --------------------------------------------------------------------------- partitioning


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")


def _split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test split of ``range(len(labels))``, stratified when the counts allow.

    Stratification needs every class at least twice and each side at least one example per
    class; otherwise (tiny or very skewed sites) a plain shuffled split is used.
    """
    n = len(labels)
    n_test = math.ceil(test_fraction * n)
    if n_test < 1 or n - n_test < 1:
        raise ValueError(
            f"cannot split {n} examples with test_fraction={test_fraction}: "
            "both train and test need at least one example"
        )
    _, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 and min(n_test, n - n_test) >= len(counts) else None
    train_idx, test_idx = train_test_split(
        np.arange(n), test_size=n_test, random_state=seed, shuffle=True, stratify=stratify
    )
    return np.sort(train_idx), np.sort(test_idx)


def _dirichlet_split(
    labels: np.ndarray, num_partitions: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """One draw of a label-skewed split: each class is divided by Dirichlet(alpha) shares."""
    parts: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        shares = rng.dirichlet(np.full(num_partitions, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for part, chunk in zip(parts, np.split(members, cuts), strict=True):
            part.append(chunk)
    return [np.sort(np.concatenate(part)) for part in parts]


def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    partitioning: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    min_size: int = MIN_PARTITION_SIZE,
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` into ``num_partitions`` disjoint, covering index sets.

    Parameters
    ----------
    labels
        Class label of every example (used by ``"dirichlet"``).
    num_partitions
        Number of hospitals.
    partitioning
        ``"iid"``: a seeded shuffle cut into equal parts (sizes differ by at most one).
        ``"dirichlet"``: label skew; each class is shared out by Dirichlet(``alpha``)
        proportions (smaller ``alpha`` = more skew). Draws are repeated (at most
        ``DIRICHLET_MAX_TRIES`` times) until every partition has ``min_size`` examples.
    alpha
        Dirichlet concentration (> 0), only used by ``"dirichlet"``.
    seed
        Seed of the split; every hospital must use the same one to get disjoint parts.
    min_size
        Minimum examples per partition, so each site can still hold out a test split.

    Returns
    -------
    list of numpy.ndarray
        Sorted indices of each partition.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, int):
        raise ValueError(f"num_partitions must be an int, got {num_partitions!r}")
    if num_partitions < 1 or n < num_partitions * min_size:
        raise ValueError(
            f"cannot split {n} examples into num_partitions={num_partitions} partitions "
            f"of at least {min_size} examples"
        )
    rng = np.random.default_rng(seed)
    if partitioning == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(n), num_partitions)]
    if partitioning != "dirichlet":
        raise ValueError(f"unknown partitioning {partitioning!r}; expected one of {', '.join(PARTITIONINGS)}")
    if not alpha > 0.0:
        raise ValueError(f"alpha must be > 0 for dirichlet partitioning, got {alpha!r}")
    for _ in range(DIRICHLET_MAX_TRIES):
        parts = _dirichlet_split(labels, num_partitions, alpha, rng)
        if min(len(part) for part in parts) >= min_size:
            return parts
    raise ValueError(
        f"dirichlet partitioning with alpha={alpha} gave a partition smaller than {min_size} "
        f"examples in {DIRICHLET_MAX_TRIES} draws; use a larger alpha or fewer partitions "
        f"than num_partitions={num_partitions}"
    )


def load_breast_cancer_partition(
    partition_id: int,
    num_partitions: int,
    partitioning: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    test_fraction: float = 0.2,
    split_seed: int | None = None,
) -> HospitalData:
    """Return hospital ``partition_id``'s share of sklearn's breast cancer data (569 x 30).

    ``seed`` partitions (the simulation's business); ``split_seed`` (default ``seed``) splits the
    share into train/test (the hospital's).

    The data ship with scikit-learn (no download). The whole dataset is partitioned with
    :func:`partition_indices`, then the partition is split into train/test (seeded,
    stratified when possible). Features are NOT standardised (see :func:`standardize`).
    Labels: 0 = malignant, 1 = benign.
    """
    if not isinstance(partition_id, int) or not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition_id must be in 0..{num_partitions - 1}, got {partition_id!r}")
    _check_fraction(test_fraction)
    bunch = load_breast_cancer()
    x, y = bunch.data, bunch.target
    idx = partition_indices(y, num_partitions, partitioning, alpha, seed)[partition_id]
    train_idx, test_idx = _split_indices(y[idx], test_fraction, seed if split_seed is None else split_seed)
    return HospitalData(
        x_train=x[idx[train_idx]],
        y_train=y[idx[train_idx]],
        x_test=x[idx[test_idx]],
        y_test=y[idx[test_idx]],
        num_features=x.shape[1],
        num_classes=len(bunch.target_names),
        class_names=tuple(str(name) for name in bunch.target_names),
    )


# --------------------------------------------------------------------------- CSV tables


CLASSES_OPTIONS = "dataset.classes=[...] for the runner, --classes for the daemon"


def _plain(value: object) -> object:
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
        values = [_plain(v) for v in target.unique()]
    else:
        values = [str(_plain(v)) for v in classes]
        if len(set(values)) != len(values):
            raise ValueError(f"classes contains duplicates: {list(classes)!r}")
        target = target.map(lambda v: str(_plain(v)))
    try:
        ordered = tuple(sorted(values))
    except TypeError as err:
        raise HospitalDataError(f"{path}: labels of mixed types cannot be ordered: {values!r}") from err
    index = {value: i for i, value in enumerate(ordered)}
    codes = target.map(index)
    if codes.isna().any():
        unknown = sorted({_plain(v) for v in target[codes.isna()]}, key=repr)
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


def _read_table(path: Path) -> pd.DataFrame:
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
    _check_fraction(test_fraction)
    frame = _read_table(path)
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

    train_idx, test_idx = _split_indices(strata, test_fraction, seed)
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


# --------------------------------------------------------------------------- CSV data check

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
    frame = _read_table(path)
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
    counts = {str(_plain(v)): int(n) for v, n in labels.value_counts().items()}
    counts = dict(sorted(counts.items()))
    if labels.isna().any():
        counts["(missing)"] = int(labels.isna().sum())
    return CsvQuality(str(path), len(frame), missing, zeros, counts)


# --------------------------------------------------------------------------- MedMNIST npz


def _images(array: np.ndarray, path: Path, key: str) -> np.ndarray:
    """``(N,H,W)`` or ``(N,H,W,C)`` uint8 -> ``(N,C,H,W)`` float32 in [0, 1]."""
    if array.dtype != np.uint8:
        raise HospitalDataError(f"{path}: {key!r} has dtype {array.dtype}, expected uint8 pixels")
    if array.ndim == 3:
        array = array[:, None, :, :]
    elif array.ndim == 4 and array.shape[-1] in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    else:
        raise HospitalDataError(
            f"{path}: {key!r} has shape {array.shape}, expected (N, H, W) or (N, H, W, C) with C = 1 or 3"
        )
    return array.astype(np.float32) / np.float32(255.0)


def _labels(array: np.ndarray, num_images: int, path: Path, key: str) -> np.ndarray:
    """``(N,)`` or ``(N,1)`` non-negative integers -> ``(N,)`` int64."""
    shape = array.shape
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.shape != (num_images,):
        raise HospitalDataError(
            f"{path}: {key!r} has shape {shape}, expected ({num_images},) or "
            f"({num_images}, 1) to match its images (multi-label data is not supported)"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise HospitalDataError(f"{path}: {key!r} has dtype {array.dtype}, expected integer labels")
    if num_images and array.min() < 0:
        raise HospitalDataError(f"{path}: {key!r} has negative label {array.min()}")
    return array.astype(np.int64)


def load_npz(
    path: str | PathLike[str],
    split_keys: Sequence[str] = NPZ_KEYS,
    num_classes: int | None = None,
) -> HospitalData:
    """Load MedMNIST-style images from an ``.npz`` file.

    Parameters
    ----------
    path
        ``.npz`` archive (loaded without pickle).
    split_keys
        Keys of train images, train labels, test images and test labels. Images are uint8
        ``(N, H, W)`` (grey) or ``(N, H, W, C)``; labels are ``(N, 1)`` or ``(N,)`` ints.
    num_classes
        Classes of the federation; default ``max(label) + 1`` over both splits, which is
        too small if this site lacks the highest classes, so federations should pass it.

    Returns
    -------
    HospitalData
        Images scaled to [0, 1], channels first ``(N, C, H, W)``; ``num_features = (C, H, W)``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingHospitalData(f"image archive {path} does not exist")
    keys = tuple(split_keys)
    if len(keys) != 4:
        raise ValueError(f"split_keys must name 4 arrays {NPZ_KEYS}, got {keys!r}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise HospitalDataError(f"{path} is not a readable .npz archive: {err}") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise HospitalDataError(f"{path} holds a single array, expected an .npz archive with {keys}")
    with archive:
        missing = [k for k in keys if k not in archive.files]
        if missing:
            raise HospitalDataError(f"{path}: missing key(s) {missing}; keys present: {archive.files}")
        train_key, train_label_key, test_key, test_label_key = keys
        x_train = _images(archive[train_key], path, train_key)
        x_test = _images(archive[test_key], path, test_key)
        y_train = _labels(archive[train_label_key], len(x_train), path, train_label_key)
        y_test = _labels(archive[test_label_key], len(x_test), path, test_label_key)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise HospitalDataError(
            f"{path}: {train_key!r} images are {x_train.shape[1:]} (C, H, W) but {test_key!r} "
            f"images are {x_test.shape[1:]}"
        )
    for key, images in ((train_key, x_train), (test_key, x_test)):
        if len(images) == 0:
            raise HospitalDataError(f"{path}: {key!r} holds no images")
    largest = int(max(y_train.max(), y_test.max()))
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        key = train_label_key if y_train.max() == largest else test_label_key
        raise HospitalDataError(
            f"{path}: {key!r} has label {largest}, expected labels below num_classes={num_classes}"
        )
    return HospitalData(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_features=tuple(int(d) for d in x_train.shape[1:]),
        num_classes=num_classes,
        class_names=tuple(range(num_classes)),
    )


# --------------------------------------------------------------------------- standardisation


def feature_moments(data: HospitalData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(count, sum, sum_of_squares)`` of the training features, in float64.

    These are additive across sites: the server sums the encrypted moments of all
    hospitals and :func:`mean_std_from_moments` turns the total into global statistics,
    without any site revealing its own. ``count`` has shape ``()``; the sums have the
    feature shape. Only the training split is used, so test data never shape training.
    """
    x = data.x_train.astype(np.float64)
    return np.array(float(len(x))), x.sum(axis=0), np.square(x).sum(axis=0)


def mean_std_from_moments(
    count: np.ndarray, total: np.ndarray, total_sq: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Turn summed :func:`feature_moments` into a mean and population standard deviation.

    Rounding can make ``E[x^2] - E[x]^2`` slightly negative; it is clipped to 0.
    """
    n = float(np.asarray(count))
    if not n > 0:
        raise ValueError(f"count must be > 0 to compute statistics, got {n}")
    mean = np.asarray(total, dtype=np.float64) / n
    var = np.asarray(total_sq, dtype=np.float64) / n - np.square(mean)
    return mean, np.sqrt(np.clip(var, 0.0, None))


def standardize(data: HospitalData, mean: np.ndarray, std: np.ndarray) -> HospitalData:
    """Return a copy with ``(x - mean) / std`` applied to both splits.

    ``mean`` and ``std`` must broadcast to the feature shape (per feature, or per channel as
    ``(C, 1, 1)`` for images). A zero ``std`` (a constant feature) is treated as 1 so the
    feature becomes 0 instead of NaN.
    """
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    shape = data.feature_shape
    for name, stat in (("mean", mean), ("std", std)):
        try:
            fits = np.broadcast_shapes(stat.shape, shape) == shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"{name} has shape {stat.shape}, expected one broadcastable to {shape}")
        if not np.all(np.isfinite(stat)):
            raise ValueError(f"{name} contains NaN or infinite values")
    if np.any(std < 0):
        raise ValueError("std contains negative values")
    scale = np.where(std == 0, 1.0, std)
    return dataclasses.replace(
        data,
        x_train=(data.x_train - mean) / scale,
        x_test=(data.x_test - mean) / scale,
    )

"""Seeded index splits shared by every source: the simulation's partitioning of one dataset into
hospitals, and each hospital's train/test split (stratified when the counts allow)."""

from __future__ import annotations

import math

import numpy as np
from sklearn.model_selection import train_test_split

PARTITIONINGS: tuple[str, ...] = ("iid", "dirichlet")
MIN_PARTITION_SIZE = 10
DIRICHLET_MAX_TRIES = 100


def check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")


def split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
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

"""The demo's source: a hospital's partition of scikit-learn's embedded breast cancer data, so a
simulation runs with no data files and no download."""

from __future__ import annotations

from sklearn.datasets import load_breast_cancer

from client.data.hospital import HospitalData
from client.data.split import check_fraction, partition_indices, split_indices


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
    check_fraction(test_fraction)
    bunch = load_breast_cancer()
    x, y = bunch.data, bunch.target
    idx = partition_indices(y, num_partitions, partitioning, alpha, seed)[partition_id]
    train_idx, test_idx = split_indices(y[idx], test_fraction, seed if split_seed is None else split_seed)
    return HospitalData(
        x_train=x[idx[train_idx]],
        y_train=y[idx[train_idx]],
        x_test=x[idx[test_idx]],
        y_test=y[idx[test_idx]],
        num_features=x.shape[1],
        num_classes=len(bunch.target_names),
        class_names=tuple(str(name) for name in bunch.target_names),
    )

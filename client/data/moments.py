"""Federated standardisation: each site's additive feature moments (summed encrypted by the
server), the global mean and standard deviation from their total, and applying them."""

from __future__ import annotations

import dataclasses

import numpy as np

from client.data.hospital import HospitalData


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

"""The hospital's local task: data selection, federated standardization passes, local rounds."""

import numpy as np
import pytest

from client.data import load_breast_cancer_partition
from client.local_data import TaskConfig, feature_statistics, hospital_data, raw_hospital_data

NODE = {"partition-id": 0, "num-partitions": 3}


def task(**overrides) -> TaskConfig:
    return TaskConfig.from_config({"seed": 1, **overrides})


def two_pass_statistics(parts):
    """What the server computes from the hospitals' passes (weighted by training examples)."""
    counts = np.array([len(d.y_train) for d in parts], dtype=float)
    moments = [feature_statistics(d, "moments") for d in parts]
    mean = sum(c * m[0] for c, m in zip(counts, moments, strict=True)) / counts.sum()
    square = sum(c * m[1] for c, m in zip(counts, moments, strict=True)) / counts.sum()
    scale = np.sqrt(square)
    spread = sum(
        c * feature_statistics(d, "spread", mean, scale)[0] for c, d in zip(counts, parts, strict=True)
    )
    return mean, scale * np.sqrt(spread / counts.sum())


def test_two_passes_give_the_pooled_mean_and_std() -> None:
    parts = [load_breast_cancer_partition(i, 3, seed=1) for i in range(3)]
    mean, std = two_pass_statistics(parts)
    pooled = np.concatenate([d.x_train for d in parts]).astype(np.float64)
    np.testing.assert_allclose(mean, pooled.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, pooled.std(axis=0), rtol=1e-9)


def test_unknown_pass_and_wrong_shapes_are_refused() -> None:
    data = raw_hospital_data(task(), NODE)
    with pytest.raises(ValueError, match="unknown statistics pass 'median'"):
        feature_statistics(data, "median")
    with pytest.raises(ValueError, match="mean and scale per feature"):
        feature_statistics(data, "spread", [0.0, 1.0], [1.0, 1.0])


def test_tabular_data_need_the_federations_statistics() -> None:
    with pytest.raises(ValueError, match="did not send"):
        hospital_data(task(), NODE)
    data = raw_hospital_data(task(), NODE)
    with pytest.raises(ValueError, match="cover 2 features"):
        hospital_data(task(**{"feature-mean": [0.0, 0.0], "feature-std": [1.0, 1.0]}), NODE)
    mean, std = data.x_train.mean(axis=0), data.x_train.std(axis=0)
    config = {"feature-mean": mean.tolist(), "feature-std": std.tolist()}
    standardized = hospital_data(task(**config), NODE)
    np.testing.assert_allclose(standardized.x_train.mean(axis=0), 0.0, atol=1e-4)


def test_simulated_hospitals_read_their_own_csv(tmp_path) -> None:
    paths = []
    for k in range(2):
        path = tmp_path / f"hospital{k}.csv"
        rows = [f"{k + i * 0.5},{i % 2}" for i in range(30)]
        path.write_text("age,target\n" + "\n".join(rows) + "\n")
        paths.append(str(path))
    config = task(**{"data-paths": ",".join(paths), "dataset": "csv"})
    first = raw_hospital_data(config, {"partition-id": 0, "num-partitions": 2})
    second = raw_hospital_data(config, {"partition-id": 1, "num-partitions": 2})
    assert first.x_train.min() < 1 <= second.x_train.min()
    with pytest.raises(ValueError, match="has no file"):
        raw_hospital_data(config, {"partition-id": 2, "num-partitions": 3})

"""Behaviour of client.data: partitioning, CSV/npz loading, federated standardisation."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_breast_cancer

from client.data import (
    HospitalData,
    csv_quality,
    feature_moments,
    load_breast_cancer_partition,
    load_csv,
    load_npz,
    mean_std_from_moments,
    partition_indices,
    standardize,
    zero_looks_missing,
)
from models.tabular import LogisticRegression
from models.training import evaluate, train

CANCER_X, CANCER_Y = load_breast_cancer(return_X_y=True)
N = len(CANCER_Y)


def all_rows(parts: list[HospitalData]) -> np.ndarray:
    """Every train and test row of every partition, sorted lexicographically."""
    rows = np.concatenate([np.concatenate([p.x_train, p.x_test]) for p in parts])
    return rows[np.lexsort(rows.T[::-1])]


def label_share(labels: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    return np.array([labels[p].mean() for p in parts])


# ----------------------------------------------------------------------------- partitions


@pytest.mark.parametrize("partitioning", ["iid", "dirichlet"])
def test_partitions_are_disjoint_and_cover_the_dataset(partitioning: str) -> None:
    parts = partition_indices(CANCER_Y, 7, partitioning, alpha=0.5, seed=3)
    assert len(parts) == 7
    merged = np.concatenate(parts)
    assert len(merged) == N
    np.testing.assert_array_equal(np.sort(merged), np.arange(N))
    assert min(len(p) for p in parts) >= 10


def test_iid_partitions_are_equal_sized_and_balanced() -> None:
    parts = partition_indices(CANCER_Y, 5, "iid", seed=0)
    assert {len(p) for p in parts} <= {N // 5, N // 5 + 1}
    shares = label_share(CANCER_Y, parts)
    assert np.all(np.abs(shares - CANCER_Y.mean()) < 0.12)


def test_dirichlet_partitions_are_label_skewed() -> None:
    parts = partition_indices(CANCER_Y, 5, "dirichlet", alpha=0.1, seed=0)
    shares = label_share(CANCER_Y, parts)
    assert shares.max() - shares.min() > 0.5
    sizes = [len(p) for p in parts]
    assert max(sizes) > 2 * min(sizes)


def test_partitions_are_reproducible_and_depend_on_seed() -> None:
    for partitioning in ("iid", "dirichlet"):
        first = partition_indices(CANCER_Y, 5, partitioning, seed=11)
        again = partition_indices(CANCER_Y, 5, partitioning, seed=11)
        other = partition_indices(CANCER_Y, 5, partitioning, seed=12)
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
        assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_partitioning_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="num_partitions=60 partitions of at least 10"):
        partition_indices(CANCER_Y, 60)
    with pytest.raises(ValueError, match=r"alpha=0\.001"):
        partition_indices(CANCER_Y, 50, "dirichlet", alpha=0.001)
    with pytest.raises(ValueError, match="iid, dirichlet"):
        partition_indices(CANCER_Y, 5, "shards")
    with pytest.raises(ValueError, match="alpha"):
        partition_indices(CANCER_Y, 5, "dirichlet", alpha=0.0)


@pytest.mark.parametrize("partitioning", ["iid", "dirichlet"])
def test_breast_cancer_partitions_hold_every_raw_row_once(partitioning: str) -> None:
    parts = [load_breast_cancer_partition(i, 4, partitioning, seed=1) for i in range(4)]
    expected = CANCER_X.astype(np.float32)
    np.testing.assert_array_equal(all_rows(parts), expected[np.lexsort(expected.T[::-1])])


def test_breast_cancer_partition_layout() -> None:
    data = load_breast_cancer_partition(2, 5, seed=0, test_fraction=0.25)
    assert data.num_features == 30
    assert data.num_classes == 2
    assert data.class_names == ("malignant", "benign")
    assert data.x_train.dtype == np.float32 and data.x_test.dtype == np.float32
    assert data.y_train.dtype == np.int64 and data.y_test.dtype == np.int64
    total = len(data.y_train) + len(data.y_test)
    assert total in (N // 5, N // 5 + 1)
    assert len(data.y_test) == int(np.ceil(0.25 * total))
    assert data.x_train.max() > 100  # raw features: loaders never standardise
    # stratified split: both sides keep the site's class balance
    assert abs(data.y_train.mean() - data.y_test.mean()) < 0.1
    with pytest.raises(ValueError):
        data.x_train[0, 0] = 0.0  # frozen means read-only arrays too


def test_breast_cancer_partition_is_reproducible() -> None:
    a = load_breast_cancer_partition(1, 3, "dirichlet", alpha=0.3, seed=5)
    b = load_breast_cancer_partition(1, 3, "dirichlet", alpha=0.3, seed=5)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((5, 5), "partition_id"),
        ((-1, 5), "partition_id"),
        ((0, 5, "iid", 0.5, 0, 1.0), "test_fraction"),
    ],
)
def test_breast_cancer_partition_rejects_bad_arguments(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_breast_cancer_partition(*args)


# ----------------------------------------------------------------------------- HospitalData


def test_loaders_shuffle_train_by_seed_and_keep_test_order() -> None:
    data = load_breast_cancer_partition(0, 2, seed=0)

    def first_batch(seed: int) -> torch.Tensor:
        return next(iter(data.loaders(batch_size=16, seed=seed)[0]))[0]

    assert torch.equal(first_batch(4), first_batch(4))
    assert not torch.equal(first_batch(4), first_batch(5))
    train_loader, test_loader = data.loaders(batch_size=16, seed=4)
    assert sum(len(y) for _, y in train_loader) == len(data.y_train)
    x_test = torch.cat([x for x, _ in test_loader])
    np.testing.assert_array_equal(x_test.numpy(), data.x_test)
    with pytest.raises(ValueError, match="batch_size"):
        data.loaders(batch_size=0, seed=0)


def test_hospital_data_validates_consistency() -> None:
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="y_train"):
        HospitalData(x, np.array([0, 1, 2, 0]), x, np.zeros(4), num_features=3, num_classes=2)
    with pytest.raises(ValueError, match="x_test"):
        HospitalData(x, np.zeros(4), np.zeros((4, 5)), np.zeros(4), num_features=3, num_classes=2)


# ----------------------------------------------------------------------------- standardisation


def test_summed_moments_give_pooled_training_statistics() -> None:
    parts = [load_breast_cancer_partition(i, 4, "dirichlet", seed=2) for i in range(4)]
    moments = [feature_moments(p) for p in parts]
    count, total, total_sq = (sum(m[k] for m in moments) for k in range(3))
    assert count.shape == () and total.shape == (30,) and total_sq.shape == (30,)
    mean, std = mean_std_from_moments(count, total, total_sq)
    pooled = np.concatenate([p.x_train for p in parts]).astype(np.float64)
    assert count == len(pooled)
    np.testing.assert_allclose(mean, pooled.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(std, pooled.std(axis=0), rtol=1e-6)

    scaled = [standardize(p, mean, std) for p in parts]
    pooled_scaled = np.concatenate([s.x_train for s in scaled]).astype(np.float64)
    np.testing.assert_allclose(pooled_scaled.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(pooled_scaled.std(axis=0), 1.0, atol=1e-5)
    assert scaled[0].x_test.dtype == np.float32
    np.testing.assert_array_equal(scaled[0].y_train, parts[0].y_train)


def test_standardize_treats_zero_std_as_one_and_checks_shape() -> None:
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    data = HospitalData(x, np.array([0, 1]), x, np.array([1, 0]), num_features=2, num_classes=2)
    out = standardize(data, mean=np.array([2.0, 5.0]), std=np.array([1.0, 0.0]))
    np.testing.assert_array_equal(out.x_train, [[-1.0, 0.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match=r"mean has shape \(3,\)"):
        standardize(data, mean=np.zeros(3), std=np.ones(2))
    with pytest.raises(ValueError, match="std contains negative"):
        standardize(data, mean=np.zeros(2), std=-np.ones(2))


def test_federated_pipeline_trains_a_good_local_model() -> None:
    parts = [load_breast_cancer_partition(i, 3, seed=0) for i in range(3)]
    moments = [feature_moments(p) for p in parts]
    mean, std = mean_std_from_moments(*(sum(m[k] for m in moments) for k in range(3)))
    site = standardize(parts[0], mean, std)
    train_loader, test_loader = site.loaders(batch_size=16, seed=0)
    model = LogisticRegression(site.num_features, site.num_classes)
    train(model, train_loader, epochs=5, lr=0.1, seed=0)
    metrics = evaluate(model, test_loader)
    assert metrics["num_examples"] == len(site.y_test)
    assert metrics["accuracy"] > 0.9
    assert metrics["auc"] > 0.95


# ----------------------------------------------------------------------------- CSV


def write_csv(path: Path, rows: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "row_id": np.arange(rows, dtype=float),
            "age": rng.integers(20, 90, rows).astype(float),
            "bmi": rng.normal(25, 4, rows),
            "outcome": np.where(np.arange(rows) % 3 == 0, "sick", "healthy"),
        }
    )
    frame.to_csv(path, index=False)
    return frame


def test_load_csv_basic(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    frame = write_csv(path)
    data = load_csv(path, "outcome", test_fraction=0.25, seed=1)
    assert data.num_features == 3
    assert data.class_names == ("healthy", "sick")
    assert data.num_classes == 2
    assert len(data.y_train) == 30 and len(data.y_test) == 10
    rows = np.concatenate([data.x_train, data.x_test])
    np.testing.assert_array_equal(np.sort(rows[:, 0]), np.arange(40))
    for x, y in zip(rows, np.concatenate([data.y_train, data.y_test]), strict=True):
        original = frame.iloc[int(x[0])]
        assert data.class_names[y] == original["outcome"]
        assert x[2] == np.float32(original["bmi"])

    subset = load_csv(path, "outcome", feature_columns=["bmi"], seed=1)
    assert subset.num_features == 1
    assert sorted(np.concatenate([subset.x_train, subset.x_test])[:, 0]) == sorted(
        frame["bmi"].astype(np.float32)
    )


def test_load_csv_split_is_seeded(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    write_csv(path)
    a, b = load_csv(path, "outcome", seed=3), load_csv(path, "outcome", seed=3)
    c = load_csv(path, "outcome", seed=4)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)


def test_load_csv_imputes_missing_features_with_training_median(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    frame = write_csv(path)
    missing_rows = [1, 4, 7, 20, 33]
    frame.loc[missing_rows, "age"] = np.nan
    frame.to_csv(path, index=False)
    data = load_csv(path, "outcome", seed=0)
    train_ids = data.x_train[:, 0].astype(int)
    median = np.nanmedian(frame.loc[train_ids, "age"])
    assert not np.isnan(data.x_train).any() and not np.isnan(data.x_test).any()
    for x in np.concatenate([data.x_train, data.x_test]):
        expected = median if int(x[0]) in missing_rows else frame.loc[int(x[0]), "age"]
        assert x[1] == pytest.approx(expected)


def test_load_csv_column_without_training_values_fails(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    frame = write_csv(path)
    frame["empty"] = np.nan
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"\['empty'\] have no values in the training split"):
        load_csv(path, "outcome")


def test_load_csv_drops_rows_without_target_and_logs_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "site.csv"
    frame = write_csv(path)
    frame["label"] = (np.arange(40) % 2).astype(float)
    frame.loc[[3, 8, 15], "label"] = np.nan
    frame.drop(columns="outcome").to_csv(path, index=False)
    with caplog.at_level(logging.WARNING, logger="client.data"):
        data = load_csv(path, "label")
    assert len(data.y_train) + len(data.y_test) == 37
    assert "dropped 3 row(s)" in caplog.text and "'label'" in caplog.text
    assert data.class_names == (0, 1)  # integer labels stay integers despite the NaNs
    assert {3, 8, 15}.isdisjoint(np.concatenate([data.x_train, data.x_test])[:, 0].astype(int))


def test_load_csv_with_federation_classes(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    write_csv(path)
    data = load_csv(path, "outcome", classes=["sick", "recovered", "healthy"])
    assert data.class_names == ("healthy", "recovered", "sick")
    assert data.num_classes == 3
    assert set(np.concatenate([data.y_train, data.y_test])) == {0, 2}
    with pytest.raises(ValueError, match=r"\['sick'\] of column 'outcome' are not in classes"):
        load_csv(path, "outcome", classes=["healthy", "recovered"])
    with pytest.raises(ValueError, match="duplicates"):
        load_csv(path, "outcome", classes=["healthy", "sick", "sick"])


def test_load_csv_single_class_needs_classes(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    frame = write_csv(path)
    frame["outcome"] = "healthy"
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match="single class"):
        load_csv(path, "outcome")
    data = load_csv(path, "outcome", classes=["healthy", "sick"])
    assert data.num_classes == 2 and not data.y_train.any()


def test_load_csv_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.csv"
    with pytest.raises(FileNotFoundError, match=r"nowhere\.csv"):
        load_csv(path, "outcome")


def test_load_csv_missing_columns_are_named_with_present_ones(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    write_csv(path)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['diagnosis'\]") as err:
        load_csv(path, "diagnosis")
    assert "['row_id', 'age', 'bmi', 'outcome']" in str(err.value)
    with pytest.raises(ValueError, match=r"\['height', 'weight'\]"):
        load_csv(path, "outcome", feature_columns=["age", "height", "weight"])


def test_load_csv_non_numeric_features_are_named(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    frame = write_csv(path)
    frame["ward"] = "A"
    frame["smoker"] = np.where(np.arange(40) % 2, "yes", "no")
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"\['ward', 'smoker'\] are not numeric"):
        load_csv(path, "outcome")
    assert load_csv(path, "outcome", feature_columns=["age", "bmi"]).num_features == 2


def test_load_csv_rejects_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_csv(path, "outcome")


# ----------------------------------------------------------------------------- npz


def write_npz(path: Path, rgb: bool, n_train: int = 12, n_test: int = 6, **overrides) -> dict:
    rng = np.random.default_rng(0)
    shape = (28, 28, 3) if rgb else (28, 28)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "train_labels": rng.integers(0, 4, (n_train, 1)),
        "test_images": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "test_labels": rng.integers(0, 4, (n_test, 1)),
    }
    arrays["train_labels"][0, 0] = 3  # make the largest label present
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def test_load_npz_greyscale(tmp_path: Path) -> None:
    path = tmp_path / "gray.npz"
    arrays = write_npz(path, rgb=False)
    data = load_npz(path)
    assert data.x_train.shape == (12, 1, 28, 28) and data.x_test.shape == (6, 1, 28, 28)
    assert data.num_features == (1, 28, 28)
    assert data.num_classes == 4
    assert data.x_train.dtype == np.float32
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0
    np.testing.assert_allclose(data.x_train[:, 0], arrays["train_images"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_test, arrays["test_labels"][:, 0])


def test_load_npz_rgb_is_channels_first(tmp_path: Path) -> None:
    path = tmp_path / "rgb.npz"
    arrays = write_npz(path, rgb=True)
    data = load_npz(path, num_classes=6)
    assert data.x_test.shape == (6, 3, 28, 28)
    assert data.num_features == (3, 28, 28)
    assert data.num_classes == 6
    images = arrays["test_images"]
    np.testing.assert_allclose(data.x_test[2, 1, 5, 7], images[2, 5, 7, 1] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(data.x_test.transpose(0, 2, 3, 1), images / 255.0, rtol=1e-6)
    train_loader, _ = data.loaders(batch_size=4, seed=0)
    assert next(iter(train_loader))[0].shape == (4, 3, 28, 28)


def test_load_npz_custom_keys(tmp_path: Path) -> None:
    path = tmp_path / "custom.npz"
    arrays = write_npz(path, rgb=False)
    np.savez(path, a=arrays["train_images"], b=arrays["train_labels"][:, 0],
             c=arrays["test_images"], d=arrays["test_labels"])  # fmt: skip
    assert load_npz(path, split_keys=("a", "b", "c", "d")).y_train.shape == (12,)


def test_load_npz_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.npz"):
        load_npz(tmp_path / "absent.npz")


def test_load_npz_missing_key_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "partial.npz"
    write_npz(path, rgb=False, test_labels=None)
    with pytest.raises(ValueError, match=r"partial.npz: missing key\(s\) \['test_labels'\]"):
        load_npz(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train_labels": np.zeros((11, 1), np.int64)}, r"'train_labels' has shape \(11, 1\)"),
        ({"test_labels": np.zeros((6, 14), dtype=np.int64)}, "multi-label"),
        ({"test_images": np.zeros((6, 28), dtype=np.uint8)}, r"'test_images' has shape \(6, 28\)"),
        ({"test_images": np.zeros((6, 32, 32), dtype=np.uint8)}, "'test_images' images are"),
        ({"train_images": np.zeros((12, 28, 28), dtype=np.float32)}, "expected uint8"),
        ({"train_labels": np.full((12, 1), -1)}, "negative label"),
    ],
)
def test_load_npz_shape_and_type_errors_name_the_key(tmp_path: Path, overrides: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    write_npz(path, rgb=False, **overrides)
    with pytest.raises(ValueError, match=message) as err:
        load_npz(path)
    assert "bad.npz" in str(err.value)


def test_load_npz_label_outside_num_classes(tmp_path: Path) -> None:
    path = tmp_path / "labels.npz"
    write_npz(path, rgb=False)
    with pytest.raises(ValueError, match="'train_labels' has label 3"):
        load_npz(path, num_classes=3)


def test_load_npz_rejects_non_archives(tmp_path: Path) -> None:
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        load_npz(single)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match=r"garbage\.npz"):
        load_npz(garbage)


def test_hospital_data_is_frozen() -> None:
    data = load_breast_cancer_partition(0, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.num_classes = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- the CSV data check


def write_site_csv(path: Path) -> Path:
    """A site's table with the traps the data check must name: a mostly-missing lab value, a blood
    pressure coded 0 for "not measured", a count where 0 is real, and an unbalanced label."""
    rng = np.random.default_rng(3)
    rows = 40
    lab = rng.normal(5.0, 1.0, rows)
    lab[:30] = np.nan  # 75 % missing
    pressure = rng.normal(120.0, 8.0, rows).round()
    pressure[[2, 9, 17]] = 0.0
    pregnancies = rng.integers(0, 6, rows).astype(float)
    pregnancies[:4] = [0, 1, 2, 3]
    frame = pd.DataFrame({"lab": lab, "systolic_bp": pressure, "pregnancies": pregnancies})
    frame["outcome"] = [1] * 34 + [0] * 6
    frame.to_csv(path, index=False)
    return path


def test_csv_quality_names_missing_columns_zero_codes_and_label_balance(tmp_path: Path) -> None:
    path = write_site_csv(tmp_path / "site.csv")
    quality = csv_quality(path, "outcome")
    assert quality.rows == 40
    assert quality.missing == {"lab": 30}
    assert quality.suspicious_zeros == {"systolic_bp": 3}  # not pregnancies: 0 is a real count
    assert quality.label_counts == {"0": 6, "1": 34}
    text = "\n".join(quality.lines())
    assert "column 'lab': 30 missing (75.0 %), imputed" in text
    assert "label balance: '0': 6, '1': 34" in text
    warnings = quality.warnings()
    assert len(warnings) == 2
    assert "'lab' is 75.0 % missing" in warnings[0]
    assert "'systolic_bp' holds 0 in 3 row(s)" in warnings[1]


def test_csv_quality_of_a_clean_table_warns_nothing_and_counts_missing_labels(tmp_path: Path) -> None:
    path = tmp_path / "clean.csv"
    pd.DataFrame({"age": [40.0, 51, 62, 38, 70, 45], "outcome": ["a", "b", "a", None, "a", "b"]}).to_csv(
        path, index=False
    )
    quality = csv_quality(path, "outcome")
    assert quality.missing == {} and quality.warnings() == []
    assert quality.label_counts == {"a": 3, "b": 2, "(missing)": 1}
    assert "no missing feature values (nothing imputed)" in "\n".join(quality.lines())
    with pytest.raises(ValueError, match="missing target column 'label'"):
        csv_quality(path, "label")


@pytest.mark.parametrize(
    ("values", "looks_missing"),
    [
        ([0, 0, 110, 120, 125, 130, 140], True),  # blood pressure: 0 far below every value
        ([0, 1, 2, 2, 3, 4, 5], False),  # a count: 0 is next to the values
        ([0, 0.1, 0.3, 2.0, 4.0, 9.0, 30.0], False),  # a skewed lab value near 0
        ([0, -120, -110, 100, 120, 130], False),  # values of both signs: 0 is in range
        ([0, 120, 125, 130], False),  # too few values to say
        ([110, 120, 125, 130, 140, 150], False),  # no 0 at all
        ([np.nan, 0, 0, 60, 70, 72, 75, 80], True),  # missing cells are ignored
    ],
)
def test_zero_looks_missing_rule(values: list[float], looks_missing: bool) -> None:
    assert zero_looks_missing(pd.Series(values, dtype=float)) is looks_missing

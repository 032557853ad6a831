"""This hospital's data for a run: the run's task settings, its own randomness, loading and the
federation's feature statistics.

Data come from the node's own configuration: in deployment ``data-path`` (and
``target-column``) point at the hospital's CSV or ``.npz`` file; in simulation
``partition-id`` selects a share of the embedded breast-cancer data, or one of the run's
``data-paths`` (one file per simulated hospital). Tabular features are standardized with the
federation's global mean and standard deviation, computed once per run from encrypted moments
(``feature_statistics``); no hospital's own statistics leave the site.

The randomness of training is the hospital's (``HospitalRandomness``), not the coordinator's:
the coordinator's ``seed`` only partitions the embedded simulation data and initialises the
model. Torch-free: the key set-up and statistics messages load data without the training stack
(``client.local_training`` trains).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np

from client.audit import STATE_DIR_KEY
from client.data import (
    HospitalData,
    HospitalDataError,
    load_breast_cancer_partition,
    load_csv,
    load_npz,
    require_named_classes,
    standardize,
)
from client.targets import TargetColumns
from privacy.config import RecordDpConfig

TRAINING_SEED_KEY = "training-seed"  # node config: the hospital pins its own randomness
SPLIT_SEED_FILE = "split-seed"  # <state-dir>/split-seed: the hospital's train/test split, kept


@dataclass(frozen=True)
class TaskConfig:
    """What the server asks for; plain values sent in each message's config."""

    dataset: str
    model: str
    partitioning: str
    alpha: float
    seed: int
    local_epochs: int
    batch_size: int
    lr: float
    optimizer: str
    target_column: str
    hidden: int
    model_args: str = ""  # JSON object: an import-path model's own arguments
    data_paths: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    feature_mean: tuple[float, ...] = ()
    feature_std: tuple[float, ...] = ()
    record_dp: RecordDpConfig | None = None  # dp=record: train with DP-SGD
    task: str = "classification"  # models.tasks
    time_column: str = "time"
    event_column: str = "event"
    time_bins: int = 20
    time_horizon: float = 0.0

    @classmethod
    def from_config(cls, config: dict) -> TaskConfig:
        return cls(
            dataset=str(config.get("dataset", "breast_cancer")),
            model=str(config.get("model", "mlp")),
            partitioning=str(config.get("partitioning", "iid")),
            alpha=float(config.get("alpha", 0.5)),
            seed=int(config.get("seed", 0)),
            local_epochs=int(config.get("local-epochs", 1)),
            batch_size=int(config.get("batch-size", 16)),
            lr=float(config.get("lr", 0.05)),
            optimizer=str(config.get("optimizer", "sgd")),
            target_column=str(config.get("target-column", "target")),
            hidden=int(config.get("hidden", 32)),
            model_args=str(config.get("model-args", "")),
            data_paths=tuple(p for p in str(config.get("data-paths", "")).split(",") if p),
            classes=tuple(c for c in str(config.get("classes", "")).split(",") if c),
            feature_mean=tuple(float(v) for v in config.get("feature-mean", [])),
            feature_std=tuple(float(v) for v in config.get("feature-std", [])),
            record_dp=RecordDpConfig.from_config(config),
            task=str(config.get("task", "classification")),
            time_column=str(config.get("time-column", "time")),
            event_column=str(config.get("event-column", "event")),
            time_bins=int(config.get("time-bins", 20)),
            time_horizon=float(config.get("time-horizon", 0.0)),
        )

    @property
    def data_source(self) -> TaskConfig:
        """The fields that select and load the data (the cache key of ``raw_hospital_data``)."""
        return replace(self, feature_mean=(), feature_std=(), lr=0.0, local_epochs=0, batch_size=0)


@dataclass(frozen=True)
class HospitalRandomness:
    """The hospital's train/test split, shuffling and dropout.

    Seeded by the coordinator, a re-run of a federation would be an exact copy, and two runs
    differing by one hospital would give away its update. ``pinned``: the hospital's own
    ``training-seed`` (reproducible, at its discretion). Otherwise shuffling and dropout draw
    fresh OS randomness every round, and the split seed is drawn once and kept in the state dir:
    a test split that changed between runs would leak through the evaluation sums too. Without a
    state dir (plain simulation, where there is no release ledger either) the coordinator's seed
    is used, as the simulation's encrypted-vs-plaintext comparisons need.
    """

    split_seed: int
    pinned: int | None

    def round_seeds(self, server_round: int) -> tuple[int, int]:
        """(shuffle seed, training seed) of one round."""
        if self.pinned is None:
            return secrets.randbits(63), secrets.randbits(63)
        return self.pinned + 1000 * server_round, self.pinned + 7919 * server_round


def hospital_randomness(task: TaskConfig, node_config: dict) -> HospitalRandomness:
    """This hospital's randomness, from its node configuration (``HospitalRandomness``)."""
    if TRAINING_SEED_KEY in node_config:
        pinned = int(node_config[TRAINING_SEED_KEY])
        return HospitalRandomness(pinned, pinned)
    state_dir = node_config.get(STATE_DIR_KEY)
    if state_dir in (None, ""):
        return HospitalRandomness(task.seed, task.seed)
    return HospitalRandomness(kept_split_seed(Path(str(state_dir))), None)


def kept_split_seed(state_dir: Path) -> int:
    """The split seed in ``<state-dir>/split-seed``, drawn once from the OS (written whole, 0600,
    by a link that fails if another process wrote it first)."""
    path = state_dir / SPLIT_SEED_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        draft = state_dir / f".{SPLIT_SEED_FILE}.{os.getpid()}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, str(secrets.randbits(31)).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    text = path.read_text().strip()
    if not text.isdigit():
        raise ValueError(f"{path}: expected the hospital's split seed (a number), got {text[:40]!r}")
    return int(text)


def target_columns(task: TaskConfig, node_config: dict) -> TargetColumns:
    """The run's task and target columns; a hospital's node config may pin ``task`` (a run
    asking for another is refused) and name its own columns (``target-column`` and so on)."""
    pinned = str(node_config.get("task", task.task))
    if pinned != task.task:
        raise HospitalDataError(f"this hospital's data are for task={pinned}; the run asks for {task.task}")
    return TargetColumns(
        task=task.task,
        target=str(node_config.get("target-column", task.target_column)),
        time=str(node_config.get("time-column", task.time_column)),
        event=str(node_config.get("event-column", task.event_column)),
    )


def load_hospital_data(task: TaskConfig, node_config: dict) -> HospitalData:
    """The hospital's raw data set, chosen by its node configuration (see module docstring)."""
    split_seed = hospital_randomness(task, node_config).split_seed
    targets = target_columns(task, node_config)
    if "data-path" in node_config:
        return _load_file(str(node_config["data-path"]), targets, split_seed, task.classes)
    if task.data_paths:
        partition = int(node_config["partition-id"])
        if partition >= len(task.data_paths):
            raise ValueError(
                f"simulated hospital {partition} has no file: data-paths lists {len(task.data_paths)}"
            )
        return _load_file(task.data_paths[partition], targets, split_seed, task.classes)
    if task.dataset == "breast_cancer" and task.task == "classification":
        return load_breast_cancer_partition(
            int(node_config["partition-id"]),
            int(node_config["num-partitions"]),
            partitioning=task.partitioning,
            alpha=task.alpha,
            seed=task.seed,
            split_seed=split_seed,
        )
    raise ValueError(
        f"dataset {task.dataset!r} (task={task.task}) needs a 'data-path' in every hospital's node config"
    )


def _load_file(path: str, targets: TargetColumns, seed: int, classes: tuple[str, ...]) -> HospitalData:
    if path.endswith(".npz"):
        if targets.task != "classification":
            raise ValueError(f"{path}: an image archive (.npz) holds class labels, not task={targets.task}")
        return load_npz(path)
    data = load_csv(path, targets.target, seed=seed, classes=classes or None, targets=targets)
    if not classes:
        require_named_classes(data, path, "dataset.classes=[...]")
    return data


@cache
def _cached_raw(task: TaskConfig, node_items: tuple) -> HospitalData:
    return load_hospital_data(task, dict(node_items))


def raw_hospital_data(task: TaskConfig, node_config: dict) -> HospitalData:
    return _cached_raw(task.data_source, tuple(sorted(node_config.items())))


def is_tabular(data: HospitalData) -> bool:
    return isinstance(data.num_features, int)


def feature_statistics(data: HospitalData, pass_name: str, mean=None, scale=None) -> list[np.ndarray]:
    """This hospital's contribution to one pass of the federation's feature statistics.

    ``moments``: per-feature mean and mean square. ``spread``: mean of ``((x - mean)/scale)^2``
    around the *global* mean and root mean square from the first pass, so every feature is
    summed at a precision relative to its own magnitude. Averaged over hospitals (weighted by
    examples) they give the global mean and ``std = scale * sqrt(spread)``.
    """
    x = data.x_train.astype(np.float64)
    if pass_name == "moments":
        return [x.mean(axis=0), np.square(x).mean(axis=0)]
    if pass_name == "spread":
        mean, scale = np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64)
        if mean.shape != (x.shape[1],) or scale.shape != mean.shape:
            raise ValueError(
                f"spread pass needs a mean and scale per feature ({x.shape[1]}), got {mean.shape}"
            )
        return [np.square((x - mean) / np.where(scale > 0, scale, 1.0)).mean(axis=0)]
    raise ValueError(f"unknown statistics pass {pass_name!r}; expected 'moments' or 'spread'")


def hospital_data(task: TaskConfig, node_config: dict) -> HospitalData:
    """The hospital's data, tabular features standardized with the federation's statistics."""
    data = raw_hospital_data(task, node_config)
    if not is_tabular(data):
        return data
    if not task.feature_mean:
        raise ValueError(
            "tabular data need the federation's feature statistics, which the server did not send"
        )
    if len(task.feature_mean) != data.num_features:
        raise ValueError(
            f"the federation's statistics cover {len(task.feature_mean)} features, this hospital's data has "
            f"{data.num_features}"
        )
    return standardize(data, np.array(task.feature_mean), np.array(task.feature_std))

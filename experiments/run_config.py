"""The Hydra config of a run as ``RunSettings``: every key checked before any process starts
(hospitals, quorum, data files, model, ``dp``), and the config of a run to resume from MLflow."""

from __future__ import annotations

import json
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from common.settings import RunSettings
from he.errors import RosterError
from he.params import preset
from he.roster import DEFAULT_COMMITTEE_SIZE, DEFAULT_MAX_ATTEMPTS, Quorum
from models.registry import IMAGE_MODELS, MODEL_NAMES


class ConfigError(ValueError):
    """The composed configuration cannot describe a valid run."""


def simulated_quorum(num_hospitals: int, threshold: int) -> Quorum:
    """The committee and threshold of the roster a simulation makes (``common.simulated_federation``):
    the first 16 hospitals, ``threshold`` of them (0: all)."""
    committee = tuple(range(1, min(num_hospitals, DEFAULT_COMMITTEE_SIZE) + 1))
    return Quorum(committee, threshold or len(committee))


def check_simulated_federation(num_hospitals: int, threshold: int, min_contributors: int, preset_name: str):
    """The roster a simulation will make is valid, with noise flooding that fits."""
    try:
        quorum = simulated_quorum(num_hospitals, threshold)
        if min_contributors < 2:
            raise RosterError(
                f"strategy.min_train_nodes must be >= 2 (one contributor would be decrypted alone), "
                f"got {min_contributors}"
            )
        preset(preset_name).check_federation(len(quorum.committee), DEFAULT_MAX_ATTEMPTS)
    except (RosterError, ValueError) as err:
        raise ConfigError(
            f"he.threshold={threshold}, federation.num_hospitals={num_hospitals}: {err}"
        ) from err


def dp_settings(cfg: DictConfig) -> dict:
    """The ``dp`` group as ``RunSettings`` fields; noise shares sized for more contributors than
    a round may have (``strategy.min_train_nodes``) would not add up to the promised noise."""
    dp = cfg.get("dp", {"name": "off"})
    if dp.name == "off":
        return {}
    if int(dp.min_contributors) > int(cfg.strategy.min_train_nodes):
        raise ConfigError(
            f"dp.min_contributors={dp.min_contributors} exceeds strategy.min_train_nodes="
            f"{cfg.strategy.min_train_nodes}: hospitals would refuse rounds with fewer noise shares"
        )
    return {
        "dp": str(dp.name),
        "dp_clip_norm": float(dp.clip_norm),
        "dp_noise_multiplier": float(dp.noise_multiplier),
        "dp_target_epsilon": float(dp.target_epsilon),
        "dp_delta": float(dp.delta),
        "dp_min_contributors": int(dp.min_contributors),
    }


def to_settings(cfg: DictConfig) -> tuple[RunSettings, int]:
    """Map the composed config to ``RunSettings`` and the number of hospitals; validate both."""
    num_hospitals = int(cfg.federation.num_hospitals)
    if num_hospitals < 1:
        raise ConfigError(f"federation.num_hospitals must be >= 1, got {num_hospitals}")
    if int(cfg.num_rounds) < 1:
        raise ConfigError(f"num_rounds must be >= 1, got {cfg.num_rounds}")
    threshold = int(cfg.he.threshold)
    min_nodes = int(cfg.strategy.min_train_nodes)
    if min_nodes > num_hospitals:
        raise ConfigError(
            f"strategy.min_train_nodes={min_nodes} exceeds federation.num_hospitals={num_hospitals}"
        )
    if cfg.strategy.name == "encrypted_fedavg" and not is_deployment(cfg):
        check_simulated_federation(num_hospitals, threshold, min_nodes, str(cfg.he.preset))
    data_paths = [str(path) for path in cfg.dataset.get("paths", [])]
    if cfg.dataset.name in ("csv", "npz") and not is_deployment(cfg) and len(data_paths) != num_hospitals:
        raise ConfigError(
            f"dataset={cfg.dataset.name} in simulation needs one file per hospital: dataset.paths lists "
            f"{len(data_paths)}, federation.num_hospitals={num_hospitals}"
        )
    model = model_settings(cfg)
    if model["model"] in MODEL_NAMES and (cfg.dataset.name == "npz") != (model["model"] in IMAGE_MODELS):
        raise ConfigError(
            f"model={cfg.model.name} does not fit dataset={cfg.dataset.name}: images (npz) need model="
            f"{' or '.join(IMAGE_MODELS)}, tables need mlp, logreg or a model by import path"
        )
    missing = [path for path in data_paths if not Path(path).is_file()]
    if missing and not is_deployment(cfg):
        raise ConfigError(f"dataset.paths: no such file(s): {missing}")
    try:
        settings = RunSettings(
            num_rounds=int(cfg.num_rounds),
            strategy=str(cfg.strategy.name),
            he_preset=str(cfg.he.preset),
            threshold=threshold,
            min_train_nodes=min_nodes,
            server_optimizer=str(cfg.strategy.server_optimizer),
            server_lr=float(cfg.strategy.server_lr),
            dataset=str(cfg.dataset.name),
            num_features=int(cfg.dataset.num_features),
            **task_settings(cfg),
            **model,
            image_channels=int(cfg.dataset.get("image_channels", 1)),
            image_size=int(cfg.dataset.get("image_size", 28)),
            partitioning=str(cfg.dataset.partitioning),
            alpha=float(cfg.dataset.alpha),
            seed=int(cfg.seed),
            local_epochs=int(cfg.strategy.local_epochs),
            batch_size=int(cfg.strategy.batch_size),
            lr=float(cfg.strategy.lr),
            optimizer=str(cfg.strategy.optimizer),
            target_column=str(cfg.dataset.get("target_column", "target")),
            data_paths="" if is_deployment(cfg) else ",".join(str(Path(p).absolute()) for p in data_paths),
            min_nodes=num_hospitals,
            round_timeout=float(cfg.strategy.round_timeout),
            max_failed_rounds=int(cfg.strategy.max_failed_rounds),
            classes=",".join(str(c) for c in cfg.dataset.get("classes") or []),
            eval_bins=int(cfg.evaluation.bins),
            time_bins=int(cfg.evaluation.get("time_bins", 20)),
            time_horizon=float(cfg.evaluation.get("time_horizon") or 0.0),
            per_hospital_plaintext=bool(cfg.evaluation.per_hospital_plaintext),
            **dp_settings(cfg),
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err
    check_model(settings)
    return settings, num_hospitals


def task_settings(cfg: DictConfig) -> dict:
    """The dataset's task and target columns as ``RunSettings`` fields; only classification
    needs ``dataset.num_classes``."""
    task = str(cfg.dataset.get("task", "classification"))
    columns = {
        "task": task,
        "time_column": str(cfg.dataset.get("time_column", "time")),
        "event_column": str(cfg.dataset.get("event_column", "event")),
    }
    if task != "classification":
        return columns
    if OmegaConf.is_missing(cfg.dataset, "num_classes"):
        raise ConfigError(f"dataset={cfg.dataset.name} with task=classification needs dataset.num_classes")
    return columns | {"num_classes": int(cfg.dataset.num_classes)}


MODEL_CONFIG_KEYS = ("_target_", "name", "weights")  # conf/model keys that are not model arguments


def model_settings(cfg: DictConfig) -> dict:
    """The ``model`` group as ``RunSettings`` fields: a preset (``model.name``, ``model.hidden``)
    or, with ``model._target_``, an import path whose other keys are its arguments (JSON)."""
    target = cfg.model.get("_target_")
    weights = cfg.model.get("weights")
    fields = {"model_weights": str(Path(str(weights)).expanduser().absolute()) if weights else ""}
    if not target:
        return fields | {"model": str(cfg.model.name), "hidden": int(cfg.model.get("hidden", 32))}
    args = OmegaConf.to_container(cfg.model, resolve=True)
    args = {key: value for key, value in args.items() if key not in MODEL_CONFIG_KEYS}
    return fields | {"model": str(target), "model_args": json.dumps(args, sort_keys=True) if args else ""}


def check_model(settings: RunSettings) -> None:
    """Build the run's starting model now (its class, arguments, encoder fit, pretrained weights),
    so a model that cannot run fails before any process starts. In deployment the ServerApp
    opens ``model.weights`` at the same absolute path on the SuperLink's machine."""
    from server.model import initial_model

    try:
        initial_model(settings)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise ConfigError(f"model: {err}") from err


def is_deployment(cfg: DictConfig) -> bool:
    return str(cfg.federation.get("engine", "simulation")) == "deployment"


CONFIG_GROUPS = ("dataset", "model", "strategy", "he", "federation", "dp")


def resumed_config(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """For ``resume=<MLflow run id>``: that run's own config (its ``config.yaml``) with this
    command's value overrides, and its latest checkpoint, downloaded into the output dir."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    run_id = str(cfg.resume)
    overrides = [o for o in HydraConfig.get().overrides.task if o.split("=")[0].lstrip("+~") != "resume"]
    groups = [o for o in overrides if o.split("=")[0].lstrip("+~") in CONFIG_GROUPS]
    if groups:
        raise ConfigError(f"resume={run_id} keeps the run's config groups; cannot change {groups}")
    tracking_uri = str(
        OmegaConf.from_dotlist(overrides).get("mlflow", {}).get("tracking_uri") or cfg.mlflow.tracking_uri
    )
    client, out = MlflowClient(tracking_uri), Path(HydraConfig.get().runtime.output_dir) / "resumed-from"
    out.mkdir(parents=True, exist_ok=True)
    try:
        client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"resume={run_id}: no such MLflow run in {tracking_uri}") from None
    try:
        config_path = client.download_artifacts(run_id, "config.yaml", str(out))
        checkpoint = client.download_artifacts(run_id, "checkpoint/checkpoint.npz", str(out))
    except (MlflowException, OSError):
        raise ConfigError(
            f"resume={run_id}: the run has no checkpoint (it completed no round) or no config.yaml"
        ) from None
    merged = OmegaConf.merge(OmegaConf.load(config_path), OmegaConf.from_dotlist(overrides))
    merged.resume = run_id
    return merged, Path(checkpoint)

"""Hydra experiment runner: compose ``conf/``, run the federation, track it in MLflow.

    python -m experiments.run num_rounds=3 he=compact federation.num_hospitals=4
    python -m experiments.run -m seed=0,1,2 strategy=fedavg,encrypted_fedavg
    python -m experiments.run federation=deployment federation.superlink=fl.example.org:9093 \
        federation.root_certificates=/path/ca.crt federation.roster=/srv/pilot/roster.json \
        mlflow.tracking_uri=http://mlflow:5000

Each run (and each multirun job) is one MLflow run. In simulation Flower/Ray output goes to
``<hydra output dir>/flower.log`` (with MLflow's own output); the terminal shows only a
progress bar and where to find the run.

With ``federation=deployment`` the run goes to a running SuperLink with ``flwr run`` (hospitals
run ``python -m client.daemon``); the ServerApp logs its MLflow run itself (the tracking URI is
passed in the run config, and so is the roster path ``federation.roster``), and the runner
waits for the Flower run to finish, follows the rounds in MLflow, then adds the Hydra config to
the same MLflow run. See ``docs/deployment.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from common.settings import RunSettings
from he.errors import RosterError
from he.params import preset
from he.roster import DEFAULT_COMMITTEE_SIZE, DEFAULT_MAX_ATTEMPTS, Quorum
from models.registry import IMAGE_MODELS, MODEL_NAMES

os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """The composed configuration cannot describe a valid run."""


class RunFailedError(RuntimeError):
    """The federation ran and stopped early; the message is the one line the engineer reads."""


def simulated_quorum(num_hospitals: int, threshold: int) -> Quorum:
    """The committee and threshold of the roster a simulation makes
    (``he.roster.write_simulated_federation``): the first 16 hospitals, ``threshold`` of them (0: all)."""
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


@contextlib.contextmanager
def output_to(log_path: Path) -> Iterator[object]:
    """Send fds 1/2 (Flower, Ray and its worker processes) to ``log_path``; yield the real stderr."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_err), "w", buffering=1)
    flwr_logger = logging.getLogger("flwr")
    saved_handlers = list(flwr_logger.handlers)
    file_handler = logging.FileHandler(log_path)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    with open(log_path, "a") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        flwr_logger.handlers = [file_handler]
        saved_propagate, flwr_logger.propagate = flwr_logger.propagate, False
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            flwr_logger.handlers = saved_handlers
            flwr_logger.propagate = saved_propagate
            file_handler.close()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()


def run_name(cfg: DictConfig) -> str:
    name = f"{cfg.strategy.name}-{cfg.he.preset}-seed{cfg.seed}"
    with contextlib.suppress(ValueError):
        job = HydraConfig.get().job
        if job.get("num") is not None and HydraConfig.get().mode.name == "MULTIRUN":
            name += f"-job{job.num}"
    return name


def fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else str(value)


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


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    checkpoint = None
    if cfg.get("resume"):
        cfg, checkpoint = resumed_config(cfg)
    settings, num_hospitals = to_settings(cfg)  # raises before any process starts
    if checkpoint is not None:
        from dataclasses import replace

        settings = replace(settings, resume_checkpoint=str(checkpoint.resolve()))
    try:
        if is_deployment(cfg):
            run_deployment(cfg, settings, num_hospitals)
        else:
            run_simulated(cfg, settings, num_hospitals)
    except RunFailedError as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra reports the job and the sweep goes on
        raise SystemExit(f"error: {err}") from None  # an expected stop: one line, no traceback


def run_simulated(cfg: DictConfig, settings: RunSettings, num_hospitals: int) -> None:
    import mlflow
    from flwr.simulation import run_simulation
    from tqdm import tqdm

    from client.app import app as client_app
    from server.app import RunStoppedError, make_server_app
    from server.tracking import MlflowTracker

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    log_path = out_dir / "flower.log"
    yaml_text = OmegaConf.to_yaml(cfg, resolve=True)
    params = OmegaConf.to_container(cfg, resolve=True)
    results: list = []
    stopped: list = []  # (reason, result so far) of a federation that stopped early

    with (
        output_to(log_path) as terminal,
        MlflowTracker(
            cfg.mlflow.tracking_uri,
            cfg.mlflow.experiment_name,
            run_name(cfg),
            artifact_location=cfg.mlflow.get("artifact_location"),
        ) as tracker,
    ):
        tracker.log_params(params)
        tracker.log_model_params(settings)
        tracker.log_config_yaml(yaml_text)
        if cfg.get("resume"):
            mlflow.set_tag("resumed_from", str(cfg.resume))
        bar = tqdm(
            total=settings.num_rounds,
            desc="round",
            unit="round",
            file=terminal,
            disable=not cfg.progress,
            dynamic_ncols=True,
        )

        def on_round(server_round: int, metrics: dict) -> None:
            tracker.log_round(server_round, metrics)
            bar.set_postfix({k: fmt(metrics[k]) for k in PROGRESS_METRICS if k in metrics})
            bar.update(1)

        def on_phase(phase: str) -> None:
            bar.set_description(phase)

        try:
            run_simulation(
                make_server_app(
                    settings,
                    on_round,
                    results.append,
                    lambda *stop: stopped.append(stop),
                    tracker.log_checkpoint,
                    on_phase,
                ),
                client_app,
                num_supernodes=num_hospitals,
                backend_config={"client_resources": {"num_cpus": int(cfg.federation.num_cpus_per_client)}},
            )
        except RunStoppedError:
            pass  # its reason and the result so far reached `stopped`: reported below
        finally:
            bar.close()
        if stopped:  # logged here: MLflow's active run belongs to this thread, not the ServerApp's
            reason, partial = stopped[0]
            quorum = simulated_quorum(num_hospitals, settings.threshold) if settings.encrypted else None
            tracker.log_stop(reason, partial, settings, quorum)
            raise RunFailedError(f"the federation stopped: {reason}; see {log_path}")
        if not results:
            raise RuntimeError(f"the federation did not finish; see {log_path}")
        result = results[0]
        quorum = simulated_quorum(num_hospitals, settings.threshold) if settings.encrypted else None
        tracker.log_result(result, settings, quorum)

    final = " ".join(f"{k}={fmt(v)}" for k, v in sorted(result.final_metrics.items()))
    print(
        f"final: {final}\n"
        f"flower log:  {log_path}\n"
        f"MLflow:      tracking_uri={tracker.tracking_uri} experiment={tracker.experiment_name} "
        f"run_id={tracker.run_id}\n"
        f"view with:   mlflow ui --backend-store-uri {tracker.tracking_uri}",
        flush=True,
    )


# -- deployment: submit to a running SuperLink with `flwr run`, wait, follow in MLflow ---------------
REPO_ROOT = Path(__file__).resolve().parents[1]
CONNECTION = "fedquorum"  # name of the SuperLink connection in the runner's FLWR_HOME


def absolute_tracking_uri(uri: str) -> str:
    """``sqlite:///rel.db`` -> ``sqlite:////abs/rel.db`` (the ServerApp runs in another process/cwd)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and uri != prefix + ":memory:":
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # JSON string escaping is valid TOML


def write_flwr_home(cfg: DictConfig, home: Path) -> Path:
    """A private flwr CLI config with one connection: the configured SuperLink."""
    fed = cfg.federation
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]"]
    lines.append(f"address = {toml_value(str(fed.superlink))}")
    if bool(fed.insecure):
        lines.append("insecure = true")
    else:
        if not fed.get("root_certificates"):
            raise ConfigError(
                "federation.root_certificates is required (the SuperLink's CA certificate, PEM) "
                "unless federation.insecure=true"
            )
        ca = Path(str(fed.root_certificates)).expanduser().resolve()
        if not ca.is_file():
            raise ConfigError(f"federation.root_certificates={ca} does not exist (expected a PEM file)")
        lines.append(f"root-certificates = {toml_value(str(ca))}")
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("\n".join(lines) + "\n")
    return home


def deployment_roster(cfg: DictConfig, settings: RunSettings, num_hospitals: int) -> Path:
    """``federation.roster`` as an absolute path, checked before anything is submitted.

    The ServerApp opens this path on the SuperLink machine; the runner can only check its own
    copy, so the roster must sit at the same absolute path on both (or run the runner there).
    A roster that contradicts the run (other number of hospitals, preset or threshold, flooding
    the preset cannot hold: the ServerApp's own checks) fails here rather than after the
    hospitals have connected.
    """
    from he.roster import Roster

    value = cfg.federation.get("roster")
    if not value:
        raise ConfigError(
            "federation.roster is required in deployment (the federation's roster.json, e.g. "
            "pilot/roster.json from `python -m server.coordinator init-pilot`)"
        )
    path = Path(str(value)).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"federation.roster={path} does not exist (expected the federation's roster.json)")
    try:
        roster = Roster.load(path)
    except RosterError as err:
        raise ConfigError(f"federation.roster: {err}") from None
    if roster.num_hospitals != num_hospitals:
        raise ConfigError(
            f"federation.num_hospitals={num_hospitals} but roster {path} names {roster.num_hospitals} "
            "hospitals; set federation.num_hospitals to match the roster"
        )
    if settings.encrypted:
        if roster.preset != settings.he_preset:
            raise ConfigError(
                f"he.preset={settings.he_preset!r} but roster {path} pins preset {roster.preset!r}; "
                f"set he.preset={roster.preset}"
            )
        if settings.threshold and settings.threshold != roster.threshold:
            raise ConfigError(
                f"he.threshold={settings.threshold} but roster {path} pins threshold {roster.threshold}; "
                "set he.threshold=0 (the roster's) or to match it"
            )
        try:
            preset(roster.preset).check_federation(len(roster.committee), roster.max_attempts)
        except ValueError as err:
            raise ConfigError(f"federation.roster {path}: {err}") from err
    log.info("roster %s: federation %r, fingerprint %s", path, roster.federation_id, roster.short_fingerprint)
    return path


def flwr_cli(home: Path, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    exe = shutil.which("flwr", path=str(Path(sys.executable).parent)) or shutil.which("flwr")
    if exe is None:
        raise RuntimeError("the flwr CLI is not installed in this environment")
    env = os.environ | {"FLWR_HOME": str(home), "FLWR_DISABLE_UPDATE_CHECK": "1", "NO_COLOR": "1"}
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=timeout)


def json_output(done: subprocess.CompletedProcess, what: str) -> dict:
    text = done.stdout
    try:
        return json.loads(text[text.index("{") : text.rindex("}") + 1])
    except ValueError as err:
        raise RuntimeError(
            f"{what} gave no JSON (exit {done.returncode}): {(done.stdout + done.stderr)[-2000:]}"
        ) from err


def submit(cfg: DictConfig, settings: RunSettings, home: Path, out_dir: Path) -> int:
    """``flwr run`` the app with the settings as run config; return the Flower run id."""
    app_dir = Path(str(cfg.federation.get("app_dir") or REPO_ROOT)).resolve()
    run_config = out_dir / "run-config.toml"
    run_config.write_text(
        "".join(f"{key} = {toml_value(value)}\n" for key, value in settings.to_run_config().items())
    )
    done = flwr_cli(
        home,
        "run",
        str(app_dir),
        CONNECTION,
        "--run-config",
        str(run_config),
        "--format",
        "json",
        timeout=300,
    )
    result = json_output(done, "flwr run")
    if not result.get("success") or "run-id" not in result:
        raise RuntimeError(f"flwr run failed to submit to {cfg.federation.superlink}: {result}")
    return int(result["run-id"])


def run_status(home: Path, run_id: int) -> str:
    done = flwr_cli(home, "list", CONNECTION, "--run-id", str(run_id), "--format", "json")
    runs = json_output(done, "flwr list").get("runs") or []
    return str(runs[0]["status"]) if runs else "unknown"


def find_mlflow_run(tracking_uri: str, experiment: str, flower_run_id: int):
    from mlflow.tracking import MlflowClient

    from server.app import FLOWER_RUN_TAG

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return client, None
    runs = client.search_runs([exp.experiment_id], f"tags.{FLOWER_RUN_TAG} = '{flower_run_id}'")
    return client, (runs[0] if runs else None)


def recorded_mlflow_run(tracking_uri: str, experiment: str, flower_run_id: int):
    """``find_mlflow_run``, without opening a SQLite store the ServerApp has not made yet (see
    ``run_recorded``): (client or None, run or None)."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and not run_recorded(Path(tracking_uri[len(prefix) :]), flower_run_id):
        return None, None
    return find_mlflow_run(tracking_uri, experiment, flower_run_id)


def run_recorded(db: Path, flower_run_id: int) -> bool:
    """Whether the ServerApp has created its MLflow run in the SQLite store ``db`` (read-only).

    Until then the store may be half made: an MLflow client opened on it would create or
    migrate the tables concurrently with the ServerApp, and the loser of that race fails.
    """
    import sqlite3

    from server.app import FLOWER_RUN_TAG

    if not db.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as con:
            row = con.execute(
                "SELECT 1 FROM tags WHERE key = ? AND value = ?", (FLOWER_RUN_TAG, str(flower_run_id))
            ).fetchone()
    except sqlite3.Error:  # no tags table yet, or busy
        return False
    return row is not None


PROGRESS_METRICS = (  # shown beside the bar, those the task has
    "contributors",
    "eval_loss",
    "eval_accuracy",
    "eval_auc",
    "eval_r2",
    "eval_c_index",
)


def progress_logged(
    tracking_uri: str, experiment: str, flower_run_id: int, num_rounds: int
) -> tuple[int, dict, str]:
    """Rounds the ServerApp has logged so far, the latest ``PROGRESS_METRICS`` and the phase it is
    in (its tag ``phase``; progress only: nothing if the store is not there yet)."""
    try:
        client, mlrun = recorded_mlflow_run(tracking_uri, experiment, flower_run_id)
        if mlrun is None:
            return 0, {}, ""
        rounds = min(num_rounds, len(client.get_metric_history(mlrun.info.run_id, "round_seconds")))
        latest = {k: v for k, v in mlrun.data.metrics.items() if k in PROGRESS_METRICS}
        return rounds, latest, mlrun.data.tags.get("phase", "")
    except Exception as err:  # a busy store must not end the wait
        log.debug("progress from MLflow unavailable: %s", err)
        return 0, {}, ""


def log_tail(text: str, lines: int = 25) -> str:
    """The end of a ServerApp log, where the reason a run failed is (not buried behind it)."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def attach_config(
    cfg: DictConfig, tracking_uri: str, experiment: str, run_id: int, status: str, log_path: Path
):
    """Add the Hydra config (``config.yaml``) to the MLflow run the ServerApp made for Flower run
    ``run_id``, whether it completed or failed (``resume=<id>`` needs it), and return that run;
    raise if the Flower run did not complete: ``RunFailedError`` with the reason the ServerApp
    recorded and the command that resumes it, else the end of the ServerApp log."""
    client, mlrun = recorded_mlflow_run(tracking_uri, experiment, run_id)
    if mlrun is not None:  # also for a run that failed: resume=<id> continues from its config.yaml
        # the Hydra view of the run, beside the run config the ServerApp logged as params (each
        # setting once: not again under its Hydra spelling)
        client.log_text(mlrun.info.run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        if cfg.get("resume"):
            client.set_tag(mlrun.info.run_id, "resumed_from", str(cfg.resume))
    if (
        status != "finished:completed"
        and mlrun is not None
        and (reason := mlrun.data.tags.get("failure_reason"))
    ):
        raise RunFailedError(
            f"Flower run {run_id} stopped: {reason} (ServerApp log: {log_path}; "
            f"resume with: python -m experiments.run resume={mlrun.info.run_id} "
            f"mlflow.tracking_uri={tracking_uri})"
        )
    if status != "finished:completed":
        raise RuntimeError(
            f"Flower run {run_id} ended with status {status!r}; the ServerApp log ({log_path}) ends:\n"
            + log_tail(log_path.read_text())
        )
    if mlrun is None:
        raise RuntimeError(
            f"Flower run {run_id} completed but no MLflow run is tagged with it in {tracking_uri} "
            f"(experiment {experiment!r}); ServerApp log: {log_path}"
        )
    return mlrun


def run_deployment(cfg: DictConfig, settings: RunSettings, num_hospitals: int) -> None:
    from dataclasses import replace

    from tqdm import tqdm

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    tracking_uri = absolute_tracking_uri(str(cfg.mlflow.tracking_uri))
    experiment = str(cfg.mlflow.experiment_name)
    roster = deployment_roster(cfg, settings, num_hospitals)
    # the ServerApp waits for every expected hospital before key set-up (they connect at their pace)
    settings = replace(
        settings,
        mlflow_tracking_uri=tracking_uri,
        mlflow_experiment=experiment,
        min_nodes=num_hospitals,
        roster=str(roster),
    )
    home = write_flwr_home(cfg, Path(str(cfg.federation.get("flwr_home") or out_dir / "flwr-home")))
    log_path = out_dir / "flower.log"
    run_id = submit(cfg, settings, home, out_dir)
    print(f"submitted Flower run {run_id} to {cfg.federation.superlink}", flush=True)

    timeout, poll = float(cfg.federation.timeout), float(cfg.federation.poll_seconds)
    bar = tqdm(
        total=settings.num_rounds, desc="round", unit="round", disable=not cfg.progress, file=sys.stderr
    )
    deadline, status = time.monotonic() + timeout, "pending"
    try:
        while time.monotonic() < deadline:
            status = run_status(home, run_id)
            rounds, latest, phase = progress_logged(tracking_uri, experiment, run_id, settings.num_rounds)
            if phase:
                bar.set_description(phase, refresh=False)
            if latest:
                bar.set_postfix({k: fmt(v) for k, v in latest.items()})
            bar.update(max(0, rounds - bar.n))
            if status.startswith("finished"):
                break
            time.sleep(poll)
        else:
            flwr_cli(home, "stop", str(run_id), CONNECTION)
            raise TimeoutError(
                f"Flower run {run_id} still {status!r} after federation.timeout={timeout:.0f} s; stopped it"
            )
    except KeyboardInterrupt:
        flwr_cli(home, "stop", str(run_id), CONNECTION)
        raise
    finally:
        bar.close()
        logs = flwr_cli(home, "log", str(run_id), CONNECTION, "--show")
        log_path.write_text(logs.stdout + logs.stderr)
    mlrun = attach_config(cfg, tracking_uri, experiment, run_id, status, log_path)
    final = {k[len("final_") :]: v for k, v in mlrun.data.metrics.items() if k.startswith("final_")}
    print(
        f"final: {' '.join(f'{k}={fmt(v)}' for k, v in sorted(final.items()))}\n"
        f"flower run:  {run_id} (status {status}); ServerApp log: {log_path}\n"
        f"MLflow:      tracking_uri={tracking_uri} experiment={experiment} run_id={mlrun.info.run_id}\n"
        f"view with:   mlflow ui --backend-store-uri {tracking_uri}",
        flush=True,
    )


if __name__ == "__main__":
    main()

"""A run on a running SuperLink: submit the app with ``flwr run``, wait for it while following
the rounds the ServerApp logs to MLflow, then add the Hydra config to that MLflow run (hospitals
run ``python -m client.daemon``; see ``docs/deployment.md``)."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from common.settings import RunSettings
from experiments.run_config import ConfigError
from experiments.run_report import PROGRESS_METRICS, RunFailedError, fmt
from he.errors import RosterError
from server.flower_cli import CONNECTION, flwr, json_output, run_status, write_cli_config

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]


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
    """A private flwr CLI config with one connection (``CONNECTION``): the configured SuperLink."""
    fed = cfg.federation
    ca = None
    if not bool(fed.insecure):
        if not fed.get("root_certificates"):
            raise ConfigError(
                "federation.root_certificates is required (the SuperLink's CA certificate, PEM) "
                "unless federation.insecure=true"
            )
        ca = Path(str(fed.root_certificates)).expanduser().resolve()
        if not ca.is_file():
            raise ConfigError(f"federation.root_certificates={ca} does not exist (expected a PEM file)")
    home.mkdir(parents=True, exist_ok=True)
    write_cli_config(home, str(fed.superlink), ca)
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
        try:
            roster.require(settings.he_preset, settings.threshold)
        except ValueError as err:
            raise ConfigError(f"federation.roster {path}: {err}") from err
    log.info("roster %s: federation %r, fingerprint %s", path, roster.federation_id, roster.short_fingerprint)
    return path


def submit(cfg: DictConfig, settings: RunSettings, home: Path, out_dir: Path) -> int:
    """``flwr run`` the app with the settings as run config; return the Flower run id."""
    app_dir = Path(str(cfg.federation.get("app_dir") or REPO_ROOT)).resolve()
    run_config = out_dir / "run-config.toml"
    run_config.write_text(
        "".join(f"{key} = {toml_value(value)}\n" for key, value in settings.to_run_config().items())
    )
    done = flwr(
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
            status = run_status(home, CONNECTION, run_id)
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
            flwr(home, "stop", str(run_id), CONNECTION)
            raise TimeoutError(
                f"Flower run {run_id} still {status!r} after federation.timeout={timeout:.0f} s; stopped it"
            )
    except KeyboardInterrupt:
        flwr(home, "stop", str(run_id), CONNECTION)
        raise
    finally:
        bar.close()
        logs = flwr(home, "log", str(run_id), CONNECTION, "--show")
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

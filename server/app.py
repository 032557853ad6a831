"""The Flower ServerApp: build the strategy from plain settings, run set-up and rounds, report.

In deployment the settings come from Flower's run config (``flwr run --run-config``); the
experiment runner builds the app with ``make_server_app(settings, ...)`` for simulation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.settings import RunSettings
from he.roster import Quorum
from models.training import get_weights
from server.model import initial_model
from strategies.checkpoint import Checkpoint
from strategies.encrypted_fedavg import EncryptedFedAvg
from strategies.fedavg import FedAvg
from strategies.run_record import FederationResult, RoundFailedError
from strategies.setup_stages import SetupFailedError

log = logging.getLogger(__name__)
FLOWER_RUN_TAG = "flower_run_id"  # MLflow tag of a deployment run: the Flower run id
LOGGED_PACKAGES = ("server", "strategies", "he", "privacy")  # our module loggers (``__name__``)


class RunStoppedError(RuntimeError):
    """The federation stopped before its last round; the message is the one-line reason."""


def show_logs_in_flower_log() -> None:
    """Send this app's INFO lines to the ServerApp process's stderr, which Flower streams to
    ``flwr log`` (and the runner's ``flower.log``). Without a handler of their own our module
    loggers would reach only Python's last-resort handler: warnings and errors, unformatted."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s fedquorum: %(message)s"))
    for name in LOGGED_PACKAGES:
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


def stop_reason(err: Exception) -> str:
    """One line for logs and MLflow: the error's type and the first line of its message."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def initial_weights(settings: RunSettings) -> list[np.ndarray]:
    """The initial global model: seeded (the same on every run with the same seed), or the
    pretrained weights the run names (``model_weights``)."""
    return get_weights(initial_model(settings))


def build_strategy(
    settings: RunSettings,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> FedAvg:
    """The run's strategy, resuming from ``settings.resume_checkpoint`` if set; ``on_checkpoint``
    receives a checkpoint after every round, ``on_phase`` each phase as it starts."""
    strategy = EncryptedFedAvg(settings, settings.clip_margin) if settings.encrypted else FedAvg(settings)
    if settings.resume_checkpoint:
        strategy.resume(Checkpoint.load(Path(settings.resume_checkpoint)))
    strategy.on_checkpoint = on_checkpoint
    strategy.on_phase = on_phase
    return strategy


OnStop = Callable[[str, FederationResult | None], None]  # (one-line reason, the result so far)


def start(
    strategy: FedAvg,
    grid: Grid,
    settings: RunSettings,
    on_round: Callable[[int, dict], None] | None = None,
    on_stop: OnStop | None = None,
) -> FederationResult:
    """Run the federation. If it stops early (a round or the set-up failed), log the one-line
    reason, hand it to ``on_stop`` with the model and metrics so far, and raise
    :class:`RunStoppedError` with that line instead of a traceback into the strategy."""
    try:
        return strategy.start(grid, initial_weights(settings), on_round)
    except (RoundFailedError, SetupFailedError) as err:
        reason = stop_reason(err)
        log.error("run stopped: %s", reason)
        if on_stop:
            on_stop(reason, strategy.result)
        raise RunStoppedError(reason) from None


def run_federation(
    grid: Grid,
    settings: RunSettings,
    on_round: Callable[[int, dict], None] | None = None,
    on_stop: OnStop | None = None,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> FederationResult:
    strategy = build_strategy(settings, on_checkpoint, on_phase)
    strategy.summary()
    return start(strategy, grid, settings, on_round, on_stop)


def make_server_app(
    settings: RunSettings | None = None,
    on_round: Callable[[int, dict], None] | None = None,
    on_result: Callable[[FederationResult], None] | None = None,
    on_stop: OnStop | None = None,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> ServerApp:
    """A ServerApp; with no ``settings`` it reads them from the run config."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if settings is None:  # deployment: our own process, whose output Flower streams
            show_logs_in_flower_log()
        run_settings = settings or RunSettings.from_run_config(dict(context.run_config))
        if run_settings.mlflow_tracking_uri and settings is None:
            result = run_tracked(grid, run_settings, int(context.run_id), on_round)
        else:
            result = run_federation(grid, run_settings, on_round, on_stop, on_checkpoint, on_phase)
        if on_result:
            on_result(result)

    return app


def roster_quorum(strategy: FedAvg) -> Quorum | None:
    """The committee and threshold of the roster the set-up used (None: plaintext, or no set-up)."""
    if isinstance(strategy, EncryptedFedAvg) and strategy.roster is not None:
        return strategy.roster.quorum
    return None


def run_tracked(
    grid: Grid, settings: RunSettings, flower_run_id: int, on_round: Callable[[int, dict], None] | None = None
) -> FederationResult:
    """Deployment: the ServerApp logs its own MLflow run (tagged with the Flower run id).

    Params are the run config (once, in its own spelling: the runner adds the Hydra view as
    ``config.yaml``); metrics per round; tags, final metrics, learning curve and the
    final model at the end. If the federation stops early the run is marked FAILED and keeps its
    params, the rounds' metrics, the last global model and the one-line reason (tag
    ``failure_reason``), also logged as one line (``run stopped: ...``) in the ServerApp log.
    """
    from server.tracking import MlflowTracker  # MLflow only where a run is tracked

    tracker = MlflowTracker(
        settings.mlflow_tracking_uri, settings.mlflow_experiment, run_name=f"flower-run-{flower_run_id}"
    )
    with tracker:
        import mlflow

        mlflow.set_tags({FLOWER_RUN_TAG: str(flower_run_id), "engine": "deployment"})
        tracker.log_params(settings.to_run_config())
        tracker.log_model_params(settings)

        def log_round(server_round: int, metrics: dict) -> None:
            tracker.log_round(server_round, metrics)
            if on_round:
                on_round(server_round, metrics)

        strategy = build_strategy(settings, tracker.log_checkpoint, tracker.log_phase)
        strategy.summary()

        def log_stop(reason: str, partial: FederationResult | None) -> None:
            tracker.log_stop(reason, partial, settings, roster_quorum(strategy))

        result = start(strategy, grid, settings, log_round, log_stop)
        tracker.log_result(result, settings, roster_quorum(strategy))
    log.info("MLflow run %s in %s", tracker.run_id, settings.mlflow_tracking_uri)
    return result


app = make_server_app()

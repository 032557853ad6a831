"""Hydra experiment runner: compose ``conf/``, simulate the federation, track it in MLflow.

    python -m experiments.run num_rounds=3 he=compact federation.num_hospitals=4
    python -m experiments.run -m seed=0,1,2 strategy=fedavg,encrypted_fedavg

Each run (and each multirun job) is one MLflow run. Flower/Ray output goes to
``<hydra output dir>/flower.log`` (with MLflow's own output); the terminal shows only a
progress bar and where to find the run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from he.params import preset
from server.settings import RunSettings

os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """The composed configuration cannot describe a valid run."""


def to_settings(cfg: DictConfig) -> tuple[RunSettings, int]:
    """Map the composed config to ``RunSettings`` and the number of hospitals; validate both."""
    num_hospitals = int(cfg.federation.num_hospitals)
    if num_hospitals < 1:
        raise ConfigError(f"federation.num_hospitals must be >= 1, got {num_hospitals}")
    if int(cfg.num_rounds) < 1:
        raise ConfigError(f"num_rounds must be >= 1, got {cfg.num_rounds}")
    threshold = int(cfg.he.threshold)
    if threshold < 0 or threshold > num_hospitals:
        raise ConfigError(
            f"he.threshold must be between 0 (n-of-n) and federation.num_hospitals={num_hospitals}, "
            f"got {threshold}"
        )
    min_nodes = int(cfg.strategy.min_train_nodes)
    if min_nodes > num_hospitals:
        raise ConfigError(
            f"strategy.min_train_nodes={min_nodes} exceeds federation.num_hospitals={num_hospitals}"
        )
    if cfg.strategy.name == "encrypted_fedavg":
        try:
            params = preset(str(cfg.he.preset))
        except (KeyError, ValueError) as err:
            raise ConfigError(str(err)) from err
        if num_hospitals > params.max_parties:
            raise ConfigError(
                f"HE preset {params.name!r} supports at most {params.max_parties} hospitals, "
                f"got federation.num_hospitals={num_hospitals}"
            )
    if cfg.dataset.name == "csv":
        raise ConfigError(
            "dataset=csv is not supported in simulation: hospitals read their file from the node "
            "config key 'data-path', which run_simulation cannot set per node. Use `flwr run` with "
            "a deployment federation (one SuperNode per hospital with --node-config data-path=...)."
        )
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
            num_classes=int(cfg.dataset.num_classes),
            model=str(cfg.model.name),
            hidden=int(cfg.model.hidden),
            partitioning=str(cfg.dataset.partitioning),
            alpha=float(cfg.dataset.alpha),
            seed=int(cfg.seed),
            local_epochs=int(cfg.strategy.local_epochs),
            batch_size=int(cfg.strategy.batch_size),
            lr=float(cfg.strategy.lr),
            optimizer=str(cfg.strategy.optimizer),
            target_column=str(cfg.dataset.get("target_column", "target")),
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return settings, num_hospitals


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


def simulation_server_app(
    settings: RunSettings, num_hospitals: int, on_round, on_result, timeout: float = 120.0
):
    """``server.app.make_server_app`` plus a wait until every simulated hospital has registered.

    ``run_simulation`` starts the ServerApp concurrently with node registration, so
    ``grid.get_node_ids()`` can be empty on the first call (observed: "0 hospitals connected").
    """
    from flwr.serverapp import ServerApp

    from server.app import run_federation

    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        deadline = time.monotonic() + timeout
        while len(grid.get_node_ids()) < num_hospitals:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(grid.get_node_ids())}/{num_hospitals} hospitals registered")
            time.sleep(0.1)
        on_result(run_federation(grid, settings, on_round))

    return app


def run_name(cfg: DictConfig) -> str:
    name = f"{cfg.strategy.name}-{cfg.he.preset}-seed{cfg.seed}"
    with contextlib.suppress(ValueError):
        job = HydraConfig.get().job
        if job.get("num") is not None and HydraConfig.get().mode.name == "MULTIRUN":
            name += f"-job{job.num}"
    return name


def fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else str(value)


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    settings, num_hospitals = to_settings(cfg)  # raises before any process starts

    from flwr.simulation import run_simulation
    from tqdm import tqdm

    from client.app import app as client_app
    from server.tracking import MlflowTracker

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    log_path = out_dir / "flower.log"
    yaml_text = OmegaConf.to_yaml(cfg, resolve=True)
    params = OmegaConf.to_container(cfg, resolve=True)
    results: list = []

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
        tracker.log_config_yaml(yaml_text)
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
            bar.set_postfix(
                {k: fmt(metrics[k]) for k in ("eval_loss", "eval_accuracy", "eval_auc") if k in metrics}
            )
            bar.update(1)

        try:
            run_simulation(
                simulation_server_app(settings, num_hospitals, on_round, results.append),
                client_app,
                num_supernodes=num_hospitals,
                backend_config={"client_resources": {"num_cpus": int(cfg.federation.num_cpus_per_client)}},
            )
        finally:
            bar.close()
        if not results:
            raise RuntimeError(f"the federation did not finish; see {log_path}")
        result = results[0]
        tracker.log_result(result, settings, num_hospitals)

    final = " ".join(f"{k}={fmt(v)}" for k, v in sorted(result.final_metrics.items()))
    print(
        f"final: {final}\n"
        f"flower log:  {log_path}\n"
        f"MLflow:      tracking_uri={tracker.tracking_uri} experiment={tracker.experiment_name} "
        f"run_id={tracker.run_id}\n"
        f"view with:   mlflow ui --backend-store-uri {tracker.tracking_uri}",
        flush=True,
    )


if __name__ == "__main__":
    main()

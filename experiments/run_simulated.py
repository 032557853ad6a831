"""A run in Flower's Simulation Engine, in this process: Flower/Ray output goes to
``<hydra output dir>/flower.log``, the terminal shows a progress bar, and the run is one MLflow run."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from common.settings import RunSettings
from experiments.redirect_output import redirect_output
from experiments.run_config import simulated_quorum
from experiments.run_report import PROGRESS_METRICS, RunFailedError, fmt


def run_name(cfg: DictConfig) -> str:
    name = f"{cfg.strategy.name}-{cfg.he.preset}-seed{cfg.seed}"
    with contextlib.suppress(ValueError):
        job = HydraConfig.get().job
        if job.get("num") is not None and HydraConfig.get().mode.name == "MULTIRUN":
            name += f"-job{job.num}"
    return name


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
        redirect_output(log_path, root_logging=False) as terminal,
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

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

import os

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from experiments.run_config import is_deployment, resumed_config, to_settings
from experiments.run_deployment import run_deployment
from experiments.run_report import RunFailedError
from experiments.run_simulated import run_simulated

os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


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


if __name__ == "__main__":
    main()

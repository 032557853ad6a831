"""MLflow tracking of one federated run, from plain values only (no Hydra/OmegaConf objects).

Only the global model, metrics and public configuration are logged; the server holds no HE
secret material, and nothing here reads any.
"""

from __future__ import annotations

import math
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import numpy as np

from common.settings import RunSettings
from he.roster import Quorum
from models.pooled_metrics import PooledEvaluation
from models.training import set_weights
from server.evaluation_plots import confusion_table, save_calibration_curve, save_roc_curve
from server.model import build_global_model, input_example, model_summary
from strategies.checkpoint import Checkpoint
from strategies.run_record import FederationResult

CURVE_METRICS = {  # the learning curves' panels, by task
    "classification": ("eval_loss", "eval_accuracy", "eval_auc"),
    "regression": ("eval_loss", "eval_mae", "eval_r2"),
    "survival": ("eval_loss", "eval_c_index"),
}
MAX_TAG = 5000  # MLflow's limit on a tag value


def flatten(params: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``; lists become their string form."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def finite_metrics(metrics: dict) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            continue
        if math.isfinite(float(value)):
            out[str(key)] = float(value)
    return out


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def default_artifact_location(tracking_uri: str) -> str | None:
    """For ``sqlite:///path/x.db``: ``path/mlartifacts`` (absolute), so artifacts sit beside the db."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or tracking_uri == prefix + ":memory:":
        return None
    return (Path(tracking_uri[len(prefix) :]).resolve().parent / "mlartifacts").as_uri()


def pinned_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("torch", "numpy", "cloudpickle"):
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


def threshold_tag(settings: RunSettings, quorum: Quorum | None) -> str:
    """``t_K/|K|`` of the roster the run used (what the engineer set may be 0, "the whole
    committee", or differ from a pinned roster); ``n/a`` for plaintext, ``unknown`` before set-up."""
    if not settings.encrypted:
        return "n/a"
    return f"{quorum.threshold}/{len(quorum.committee)}" if quorum else "unknown"


def run_tags(result: FederationResult | None) -> dict[str, str]:
    """The facts the strategy recorded about the run (``FederationResult.tags``, e.g.
    ``setup_missing_keyholders``), each cut to MLflow's tag length."""
    return {key: str(value)[:MAX_TAG] for key, value in (result.tags if result else {}).items()}


def rounds_completed(history: list[dict]) -> int:
    """Rounds of ``history`` that produced an aggregate (not ``round_skipped``)."""
    return sum(1 for entry in history if not entry.get("round_skipped"))


def model_from_weights(settings: RunSettings, weights: list[np.ndarray]):
    model = build_global_model(settings)
    set_weights(model, weights)
    model.eval()
    return model


class MlflowTracker:
    """One MLflow run: ``with MlflowTracker(uri, experiment, name) as tracker: ...``."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        run_name: str | None = None,
        artifact_location: str | None = None,
    ) -> None:
        self.tracking_uri = str(tracking_uri)
        self.experiment_name = str(experiment_name)
        self.run_name = run_name
        self.artifact_location = artifact_location or default_artifact_location(self.tracking_uri)
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.dropouts: list[str] = []

    def __enter__(self) -> MlflowTracker:
        mlflow.set_tracking_uri(self.tracking_uri)
        if mlflow.get_experiment_by_name(self.experiment_name) is None and self.artifact_location:
            mlflow.create_experiment(self.experiment_name, artifact_location=self.artifact_location)
        experiment = mlflow.set_experiment(self.experiment_name)
        self.experiment_id = experiment.experiment_id
        run = mlflow.start_run(run_name=self.run_name)
        self.run_id = run.info.run_id
        commit = git_commit()
        if commit:
            mlflow.set_tag("git_commit", commit)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        mlflow.end_run(status="FAILED" if exc_type else "FINISHED")

    def log_params(self, params: dict) -> None:
        flat = {k: (str(v) if isinstance(v, list | tuple) else v) for k, v in flatten(params).items()}
        mlflow.log_params(flat)

    def log_model_params(self, settings: RunSettings) -> None:
        """The model's class (import path), the number of values it sends per round and the task."""
        mlflow.log_params(model_summary(build_global_model(settings), settings) | {"task": settings.task})

    def log_round(self, server_round: int, metrics: dict) -> None:
        """The round's metrics; hospitals that sent no update (``missing``) join the tag
        ``missing_hospitals`` ("round 2: hospital-3; ..."), so a dropout is visible in the run."""
        values = finite_metrics(metrics)
        if values:
            # explicit run_id: Flower calls this from the ServerApp thread, and MLflow's active
            # run is thread-local (without it MLflow would open a second run)
            mlflow.log_metrics(values, step=int(server_round), run_id=self.run_id)
        if metrics.get("missing"):
            self.dropouts.append(f"round {server_round}: {metrics['missing']}")
            text = "; ".join(self.dropouts)
            tag = text if len(text) <= MAX_TAG else "... " + text[-(MAX_TAG - 4) :]
            mlflow.MlflowClient(self.tracking_uri).set_tag(self.run_id, "missing_hospitals", tag)

    def log_phase(self, phase: str) -> None:
        """What the run is doing now (tag ``phase``), which the deployment runner's progress bar
        shows while no round has been logged yet (the key set-up can take minutes)."""
        # explicit run id: called from the ServerApp thread (see log_round)
        mlflow.MlflowClient(self.tracking_uri).set_tag(self.run_id, "phase", phase[:MAX_TAG])

    def log_checkpoint(self, checkpoint: Checkpoint) -> None:
        """The latest checkpoint (``checkpoint/checkpoint.npz``, replaced every round), which
        ``python -m experiments.run resume=<run id>`` continues from."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "checkpoint.npz"
            checkpoint.save(path)
            # explicit run id: called from the ServerApp thread (see log_round)
            mlflow.MlflowClient(self.tracking_uri).log_artifact(self.run_id, str(path), "checkpoint")

    def log_stop(
        self,
        reason: str,
        result: FederationResult | None,
        settings: RunSettings,
        quorum: Quorum | None = None,
    ) -> None:
        """A run that stopped early keeps its reason (tag ``failure_reason``), how many rounds
        produced an aggregate (tag ``rounds_completed``: a skipped round kept the previous model)
        and, if any round ran, the last global model with its learning curve (``log_result``)."""
        mlflow.set_tags(
            {
                "failure_reason": reason[:MAX_TAG],
                "rounds_completed": str(rounds_completed(result.history if result else [])),
            }
            | run_tags(result)
        )
        if result is not None and result.history:
            self.log_result(result, settings, quorum)

    def log_config_yaml(self, yaml_text: str, name: str = "config.yaml") -> None:
        mlflow.log_text(yaml_text, name)

    def log_result(
        self, result: FederationResult, settings: RunSettings, quorum: Quorum | None = None
    ) -> None:
        """Tags, final metrics, plots and the final model; ``quorum`` is the roster's (``threshold``)."""
        mlflow.set_tags(
            {
                "strategy": settings.strategy,
                "he_preset": settings.he_preset if settings.encrypted else "none",
                "threshold": threshold_tag(settings, quorum),
            }
            | run_tags(result)
        )
        final = {f"final_{k}": v for k, v in finite_metrics(result.final_metrics).items()}
        if final:
            mlflow.log_metrics(final)
        with tempfile.TemporaryDirectory() as tmp:
            curve = Path(tmp) / "learning_curve.png"
            self._plot_curve(result.history, curve, CURVE_METRICS[settings.task])
            mlflow.log_artifact(str(curve))
            if isinstance(result.evaluation, PooledEvaluation):  # classification's curves and table
                for name, save in (
                    ("roc_curve.png", save_roc_curve),
                    ("calibration_curve.png", save_calibration_curve),
                ):
                    save(result.evaluation, Path(tmp) / name)
                    mlflow.log_artifact(str(Path(tmp) / name))
                mlflow.log_table(confusion_table(result.evaluation), artifact_file="confusion_matrix.json")
            weights = Path(tmp) / "final_weights.npz"
            np.savez(weights, *[np.asarray(w, dtype=np.float32) for w in result.weights])
            mlflow.log_artifact(str(weights))
        self._log_model(model_from_weights(settings, result.weights), settings)

    @staticmethod
    def _log_model(model, settings: RunSettings) -> None:
        """The final model twice over: as MLflow's LoggedModel ``model`` (the Models view,
        ``models:/...``) and as the run's artifact folder ``model/`` (the run's Artifacts view,
        ``runs:/<run id>/model``), which MLflow 3 no longer fills from a LoggedModel."""
        flavor = {
            "input_example": input_example(settings),
            # explicit requirements: MLflow's inference reloads the model in a subprocess (~20 s)
            "pip_requirements": pinned_requirements(),
            # pickle, not MLflow's default pt2 (torch.export): with a 1-row input example the
            # export specialises the batch dimension to 1. Loading needs this repo's models package.
            "serialization_format": "pickle",
        }
        mlflow.pytorch.log_model(model, name="model", **flavor)
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.pytorch.save_model(model, str(Path(tmp) / "model"), **flavor)
            mlflow.log_artifacts(str(Path(tmp) / "model"), "model")

    @staticmethod
    def _plot_curve(history: list[dict], path: Path, metrics: tuple[str, ...]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2))
        for ax, key in zip(axes, metrics, strict=True):
            points = [(h["round"], h[key]) for h in history if key in h and math.isfinite(float(h[key]))]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o")
            ax.set_title(key)
            ax.set_xlabel("round")
            ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

"""Run settings of a federation: plain values, from Flower's run config or the experiment runner."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from common import protocol as p
from models.registry import MODEL_NAMES, is_import_path, model_kwargs
from models.tasks import EvaluationSettings, get_task
from privacy.config import KEYS as DP_KEYS
from privacy.config import DpConfig

STRATEGIES = ("encrypted_fedavg", "fedavg")
SERVER_OPTIMIZERS = ("sgd", "adam", "yogi")


@dataclass(frozen=True)
class RunSettings:
    """Everything the ServerApp needs; ``task_config()`` is what hospitals receive.

    Parameters
    ----------
    strategy : str (default: "encrypted_fedavg")
        ``encrypted_fedavg`` (threshold HE) or ``fedavg`` (plaintext baseline).
    he_preset : str
        Name of an ``he.params`` preset.
    threshold : int
        Hospitals needed to decrypt (t); 0 means all of them (n-of-n).
    min_train_nodes : int
        Fewest contributions a round's aggregate may have; below it the run stops.
    model : str (default: "mlp")
        A preset of ``models.registry.MODEL_NAMES`` or the import path of a ``torch.nn.Module``
        subclass inside the app bundle (``model._target_``), e.g. ``examples.tabular_net.TabularNet``.
    model_args : str (default: "")
        The import-path model's own arguments, a JSON object (``models.registry.model_kwargs``).
    model_weights : str (default: "")
        A ``state_dict`` file (``torch.save``) the run starts from; opened by the ServerApp only
        (on the SuperLink's machine in deployment). Empty: the seeded initialisation.
    image_channels, image_size : int (default: 1, 28)
        Input shape of image models (MedMNIST-format images, ``dataset=npz``).
    data_paths : str (default: "")
        Simulation only: comma-separated files, the i-th for simulated hospital i (CSV/npz).
    clip_margin : float (default: 8.0)
        Encrypted rounds quantize within ``clip_margin`` x the previous aggregate's largest
        value (``strategies.encrypted_fedavg.next_clip``); 0 keeps the preset's clip.
    max_failed_rounds : int (default: 0)
        Stop the run after this many rounds in a row without an aggregate (each keeps the
        previous model: e.g. no decryption quorum); 0 never stops for that.
    min_nodes : int (default: 0)
        Hospitals to wait for before set-up (all of them for n-of-n); 0 means ``min_train_nodes``.
    server_optimizer : str
        ``sgd`` (FedAvg with ``server_lr``), ``adam`` or ``yogi`` on the decrypted average.
    mlflow_tracking_uri : str (default: "")
        Deployment only: when set, the ServerApp itself logs the run to this MLflow store
        (use an absolute ``sqlite:////abs/path.db`` or an ``http://`` server: the ServerApp
        runs in its own process, on the SuperLink's machine). Empty: no MLflow logging.
    mlflow_experiment : str (default: "fedquorum")
        MLflow experiment of that run.
    classes : str (default: "")
        CSV data: the federation's label values, comma-separated (``dataset.classes``). Every
        hospital numbers its labels in the sorted order of this list and refuses labels outside
        it; without it, text labels are refused (sites could number them differently).
    roster : str (default: "")
        Path of the federation's roster (``he.roster``) on the coordinator's machine; it fixes
        the keyholder committee, its threshold and the minimum contributors. Empty in
        simulation: a roster and signing keys for the simulated hospitals are made per run.
    eval_bins : int (default: 100)
        Score bins of the evaluation histograms hospitals send inside the ciphertext (pooled
        ROC AUC is exact up to the bound ``eval_auc_bound``, which shrinks with more bins); for
        survival, the risk bins of the concordance histograms.
    task : str (default: "classification")
        ``classification``, ``regression`` or ``survival`` (``models.tasks``): the loss, the
        model's outputs and the pooled metrics. A hospital may pin it in its node config.
    time_column, event_column : str (default: "time", "event")
        Survival CSV data: the follow-up time and the event indicator (1 event, 0 censored);
        ``target_column`` is the target of classification and regression.
    time_bins, time_horizon : int, float (default: 20, 0.0)
        Survival: the time bins of the pooled concordance histograms, equal bins over
        [0, ``time_horizon``) (later times share the last); the horizon is required.
    per_hospital_plaintext : bool (default: False)
        Also send each hospital's own test metrics in the clear (today's FedAvg habit). Off:
        they stay at the hospital, and only pooled sums leave it, encrypted.
    resume_checkpoint : str (default: "")
        Path of a checkpoint (``strategies.checkpoint``) to continue from, after a fresh key
        set-up; the runner's ``resume=<MLflow run id>`` downloads the run's latest one. In
        deployment the ServerApp opens this path on the SuperLink's machine.
    dp : str (default: "off")
        ``distributed``: each hospital clips its update to ``dp_clip_norm`` and adds its share
        of discrete Gaussian noise sized for ``dp_min_contributors`` (``privacy``,
        docs/privacy.md); ``dp_noise_multiplier`` (0: solved from ``dp_target_epsilon`` over
        ``num_rounds``) and ``dp_delta`` fix the guarantee. Sent to hospitals with every round.
    """

    num_rounds: int = 3
    strategy: str = "encrypted_fedavg"
    he_preset: str = "compact"
    threshold: int = 0
    min_train_nodes: int = 2
    min_nodes: int = 0
    server_optimizer: str = "sgd"
    server_lr: float = 1.0
    dataset: str = "breast_cancer"
    num_features: int = 30
    num_classes: int = 2
    model: str = "mlp"
    hidden: int = 32
    model_args: str = ""
    model_weights: str = ""
    image_channels: int = 1
    image_size: int = 28
    partitioning: str = "iid"
    alpha: float = 0.5
    seed: int = 0
    local_epochs: int = 1
    batch_size: int = 16
    lr: float = 0.05
    optimizer: str = "sgd"
    target_column: str = "target"
    data_paths: str = ""
    classes: str = ""
    clip_margin: float = 8.0
    round_timeout: float = 600.0
    max_failed_rounds: int = 0
    mlflow_tracking_uri: str = ""
    mlflow_experiment: str = "fedquorum"
    roster: str = ""
    eval_bins: int = 100
    per_hospital_plaintext: bool = False
    resume_checkpoint: str = ""
    dp: str = "off"
    dp_clip_norm: float = 1.0
    dp_noise_multiplier: float = 0.0
    dp_target_epsilon: float = 0.0
    dp_delta: float = 1e-5
    dp_min_contributors: int = 2
    task: str = "classification"
    time_column: str = "time"
    event_column: str = "event"
    time_bins: int = 20
    time_horizon: float = 0.0

    def __post_init__(self) -> None:
        if self.num_rounds < 1:
            raise ValueError(f"num_rounds must be >= 1, got {self.num_rounds}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.server_optimizer not in SERVER_OPTIMIZERS:
            raise ValueError(
                f"server_optimizer must be one of {SERVER_OPTIMIZERS}, got {self.server_optimizer!r}"
            )
        if self.threshold < 0 or self.min_train_nodes < 1:
            raise ValueError("threshold must be >= 0 and min_train_nodes >= 1")
        if self.max_failed_rounds < 0:
            raise ValueError(f"max_failed_rounds must be >= 0 (0: never stop), got {self.max_failed_rounds}")
        if not 2 <= self.eval_bins <= 10_000:
            raise ValueError(f"evaluation.bins must be in [2, 10000], got {self.eval_bins}")
        if self.model not in MODEL_NAMES and not is_import_path(self.model):
            raise ValueError(
                f"model must be one of {MODEL_NAMES} or an import path (package.module.Class), "
                f"got {self.model!r}"
            )
        model_kwargs(self.model, self.hidden, self.model_args)  # refuses model-args that are not JSON
        DpConfig.from_config(self.dp_config())  # refuses invalid DP settings now, not in round 1
        task = get_task(self.task)
        task.layout(self.evaluation_settings())  # refuses survival without a horizon, bins out of range
        if self.dp == "record":
            task.check_record_dp()

    def evaluation_settings(self) -> EvaluationSettings:
        return EvaluationSettings(self.num_classes, self.eval_bins, self.time_bins, self.time_horizon)

    @property
    def num_outputs(self) -> int:
        return get_task(self.task).num_outputs(self.num_classes)

    @property
    def encrypted(self) -> bool:
        return self.strategy == "encrypted_fedavg"

    def task_config(self) -> dict:
        """The keys ``client.local_data.TaskConfig`` reads (Flower config keys use dashes)."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "partitioning": self.partitioning,
            "alpha": self.alpha,
            "seed": self.seed,
            "local-epochs": self.local_epochs,
            "batch-size": self.batch_size,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "target-column": self.target_column,
            "hidden": self.hidden,
            "model-args": self.model_args,
            "data-paths": self.data_paths,
            "classes": self.classes,
            p.EVAL_BINS: self.eval_bins,
            p.PER_HOSPITAL_PLAINTEXT: self.per_hospital_plaintext,
            "task": self.task,
            "time-column": self.time_column,
            "event-column": self.event_column,
            "time-bins": self.time_bins,
            "time-horizon": self.time_horizon,
        } | self.dp_config()

    def dp_config(self) -> dict:
        """The DP settings as hospitals read them (``privacy.config.DpConfig.from_config``)."""
        if self.dp == "off":
            return {DP_KEYS["dp"]: "off"}
        return {key: getattr(self, name) for name, key in DP_KEYS.items()}

    def to_run_config(self) -> dict:
        """Flat ``key-with-dashes -> scalar`` form, for ``flwr run --run-config``."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}

    @classmethod
    def from_run_config(cls, run_config: dict) -> RunSettings:
        """Settings from Flower's run config (``num-rounds = 3``; keys with dashes).

        Values are converted to each field's type (TOML ``1`` for a float is fine); a key that
        is not a setting, or a value that does not convert, is an error naming the key.
        """
        types = {f.name: f.type for f in fields(cls)}
        values = {}
        for key, value in run_config.items():
            name = str(key).replace("-", "_")
            if name not in types:
                expected = sorted(k.replace("_", "-") for k in types)
                raise ValueError(f"unknown run-config key {key!r}; expected one of {expected}")
            values[name] = _convert(key, value, types[name])
        return cls(**values)


def _convert(key: str, value: object, type_name: object) -> object:
    """``value`` as the field type ``type_name`` (``"int"``, ``"float"``, ``"str"``, ``"bool"``)."""
    kind = {"int": int, "float": float, "str": str, "bool": bool}[str(type_name)]
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"run-config key {key!r} must be true or false, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"run-config key {key!r} must be a string, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"run-config key {key!r} must be a number ({kind.__name__}), got {value!r}")
    if kind is int and value != int(value):
        raise ValueError(f"run-config key {key!r} must be an integer, got {value!r}")
    return kind(value)

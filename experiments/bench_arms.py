"""The arms of one scenario of the head-to-head benchmark (``experiments.bench``), in one process.

    python -m experiments.bench_arms SPEC.json RESULT.json

``experiments.bench`` starts this process per scenario, or per scenario and arm (then an arm's
peak RSS is its own and not raised by the heap an earlier arm left behind). It runs one Flower
simulation whose hospitals answer with every arm's ClientApp (``BenchHospital``); per arm it:

1. sends every hospital a warm-up message naming the arm (the hospital loads its data; the first
   one also imports torch), so no arm pays the Ray workers' start-up inside its measured time;
2. runs the arm on a ``MeteredGrid``: every message down and every reply up is sized (array
   bytes, plus the bytes, strings and numbers of config and metric records: the SecAgg+ stages
   travel as config records), and each round starts with its first ``train`` message, so
   time and bytes are attributed the same way for every arm:

   - ``flower_fedavg``: ``flwr.serverapp.strategy.FedAvg`` (train + evaluate phases) with the
     ClientApp below, which trains our models on our data loaders with the seeds of
     ``client.task.run_local_round``;
   - ``secaggplus``: Flower's legacy ``DefaultWorkflow(SecAggPlusWorkflow)`` with the legacy
     ``FedAvg`` and a ``NumPyClient`` behind ``secaggplus_mod`` (four train stages, then an
     evaluate phase per round);
   - ``fedavg``, ``compact``, ``precise``: our strategies (``experiments._simulate.run_one``).

Tabular features of the Flower arms are standardized with the federation's statistics, which
this harness computes from the hospitals' files (our arms compute them in their own passes).

Peak RSS is the kernel's high-water mark, reset before each arm. The result file is rewritten at
every round, so a parent that stops a slow scenario still knows how far each arm got.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from client import task as local
from client.data import feature_moments, mean_std_from_moments
from common.settings import RunSettings
from experiments._simulate import BACKEND, log_file, quiet_output, run_one
from models.training import get_weights, set_weights, train
from server.app import initial_weights
from strategies.fedavg import weighted_client_metrics
from strategies.participation import wait_for_nodes

OUR_ARMS = {  # arm -> (strategy, HE preset) of RunSettings
    "fedavg": ("fedavg", "compact"),
    "compact": ("encrypted_fedavg", "compact"),
    "precise": ("encrypted_fedavg", "precise"),
}
ARMS = ("flower_fedavg", "secaggplus", *OUR_ARMS)
WARM_UP = "query.benchwarmup"  # also names the arm whose app answers next
ARM_KEY = "bench-arm"
STATS_KEY = "feature-stats"  # JSON {"feature-mean": [...], "feature-std": [...]} for the Flower arms


# -- measurement ----------------------------------------------------------------------------------
def value_bytes(value: object) -> int:
    if isinstance(value, bytes | str):
        return len(value)
    if isinstance(value, list):
        return sum(value_bytes(v) for v in value)
    return 1 if isinstance(value, bool) else 8


def content_bytes(content: RecordDict) -> int:
    """A message's payload size: array bytes, and config/metric values (bytes, str, numbers)."""
    size = 0
    for record in content.values():
        if isinstance(record, ArrayRecord):
            size += sum(len(a.data) for a in record.values())
        else:
            size += sum(value_bytes(v) for v in record.values())
    return size


@dataclass
class ArmResult:
    """What one arm measured (written as JSON; a stopped arm leaves the rounds it reached)."""

    arm: str
    hospitals: int
    num_rounds: int
    started: float = field(default_factory=time.perf_counter)
    round_starts: dict[int, float] = field(default_factory=dict)  # round -> s since measuring began
    bytes_down: dict[int, int] = field(default_factory=dict)  # round (0: set-up) -> bytes, all hospitals
    bytes_up: dict[int, int] = field(default_factory=dict)
    final: dict = field(default_factory=dict)  # eval_accuracy, eval_auc
    crypto: dict = field(default_factory=dict)  # our encrypted arms: median crypto seconds per round
    server_peak_rss: int = 0
    hospital_peak_rss: int = 0
    seconds: float = float("nan")
    error: str = ""
    done: bool = False

    @property
    def round(self) -> int:
        return max(self.round_starts, default=0)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "started"}


class BudgetExceededError(RuntimeError):
    """The arm ran past its time budget (checked whenever it sends)."""


class MeteredGrid(Grid):
    """A Grid that sizes every message, marks the start of each round and enforces a budget.

    A round starts with its first ``train`` message; its number is the message's group id
    (our strategies, SecAgg+) or its config's ``server-round`` (Flower's FedAvg).
    """

    def __init__(self, inner: Grid, result: ArmResult, budget: float, on_round: Callable[[], None]) -> None:
        self.inner, self.result, self.budget, self.on_round = inner, result, budget, on_round

    @staticmethod
    def round_of(message: Message) -> int | None:
        meta = message.metadata
        if meta.message_type != "train":
            return None
        if meta.group_id.isdigit():
            return int(meta.group_id)
        config = message.content.config_records.get("config")
        return int(config["server-round"]) if config is not None and "server-round" in config else None

    def _count_down(self, messages: list[Message]) -> None:
        elapsed = time.perf_counter() - self.result.started
        if elapsed > self.budget:
            raise BudgetExceededError(
                f"stopped after {elapsed:.0f} s (budget {self.budget:.0f} s) in round "
                f"{self.result.round}/{self.result.num_rounds}"
            )
        for message in messages:
            number = self.round_of(message)
            if number is not None and number not in self.result.round_starts:
                self.result.round_starts[number] = elapsed
                self.on_round()
            r = self.result.round
            self.result.bytes_down[r] = self.result.bytes_down.get(r, 0) + content_bytes(message.content)

    def _count_up(self, replies: list[Message]) -> None:
        r = self.result.round
        size = sum(content_bytes(m.content) for m in replies if m.has_content())
        self.result.bytes_up[r] = self.result.bytes_up.get(r, 0) + size

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        self._count_down(messages)
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.inner.pull_messages(message_ids))
        self._count_up(replies)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        self._count_down(messages)
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        self._count_up(replies)
        return replies

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def create_message(self, *args, **kwargs) -> Message:
        return self.inner.create_message(*args, **kwargs)

    def set_run(self, run) -> None:
        self.inner.set_run(run)

    @property
    def run(self):
        return self.inner.run


# -- peak memory: the kernel's high-water mark (VmHWM), reset before each arm ---------------------
def ray_workers() -> list[int]:
    """This process's Ray worker processes (descendants named ``ray::...``): the hospitals."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - tree
        tree |= frontier
    workers = []
    for pid in tree:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::"):
                workers.append(pid)
        except OSError:
            continue
    return workers


def reset_peak_rss() -> None:
    """Reset the peak RSS of this process and its Ray workers (``clear_refs`` 5, Linux >= 4.0)."""
    for pid in [os.getpid(), *ray_workers()]:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def vm_hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss() -> tuple[int, int]:
    """(server, largest hospital worker) peak RSS in bytes since the last reset."""
    return vm_hwm(os.getpid()), max((vm_hwm(pid) for pid in ray_workers()), default=0)


# -- the hospitals of the Flower arms: our model, data and seeds ------------------------------------
def task_of(config: dict) -> local.TaskConfig:
    stats = json.loads(str(config.get(STATS_KEY) or "{}"))
    return local.TaskConfig.from_config({**config, **stats})


def local_fit(
    config: dict, node_config: dict, weights: list[np.ndarray]
) -> tuple[list[np.ndarray], int, dict]:
    """Train the global model locally (the seeds of ``client.task.run_local_round``)."""
    task = task_of(config)
    data = local.hospital_data(task, node_config)
    server_round = int(config["server-round"])
    model = local.make_model(task, data.num_features, data.num_classes)
    set_weights(model, weights)
    loader, _ = data.loaders(task.batch_size, seed=task.seed + 1000 * server_round)
    loss = train(model, loader, task.local_epochs, task.lr, task.seed + 7919 * server_round, task.optimizer)
    return get_weights(model), len(data.y_train), {"train_loss": float(loss)}


def local_evaluate(config: dict, node_config: dict, weights: list[np.ndarray]) -> dict:
    task = task_of(config)
    return local.evaluate_global(task, local.hospital_data(task, node_config), weights)


flower_hospital = ClientApp()


@flower_hospital.train()
def _flower_train(message: Message, context: Context) -> Message:
    config = dict(message.content["config"])
    weights, count, metrics = local_fit(
        config, dict(context.node_config), message.content["arrays"].to_numpy_ndarrays()
    )
    content = RecordDict(
        {"arrays": ArrayRecord(weights), "metrics": MetricRecord({**metrics, "num-examples": count})}
    )
    return Message(content=content, reply_to=message)


@flower_hospital.evaluate()
def _flower_evaluate(message: Message, context: Context) -> Message:
    config = dict(message.content["config"])
    metrics = local_evaluate(config, dict(context.node_config), message.content["arrays"].to_numpy_ndarrays())
    metrics["num-examples"] = metrics["eval_examples"]
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message)


def secaggplus_hospital() -> ClientApp:
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod

    class Hospital(NumPyClient):
        def __init__(self, node_config: dict) -> None:
            self.node_config = node_config

        def fit(self, parameters, config):
            return local_fit(dict(config), self.node_config, parameters)

        def evaluate(self, parameters, config):
            metrics = local_evaluate(dict(config), self.node_config, parameters)
            return metrics["eval_loss"], metrics["eval_examples"], metrics

    return ClientApp(
        client_fn=lambda context: Hospital(dict(context.node_config)).to_client(), mods=[secaggplus_mod]
    )


class BenchHospital(ClientApp):
    """Every arm's hospital app in one: the arm's warm-up message says which answers next."""

    def __init__(self) -> None:
        super().__init__()
        from client.app import app as ours

        self.apps = {"flower_fedavg": flower_hospital, "secaggplus": secaggplus_hospital()}
        self.apps |= dict.fromkeys(OUR_ARMS, ours)

    def __call__(self, message: Message, context: Context) -> Message:
        if message.metadata.message_type == WARM_UP:
            config = dict(message.content["config"])
            local.raw_hospital_data(task_of(config), dict(context.node_config))
            context.state[ARM_KEY] = ConfigRecord({ARM_KEY: config[ARM_KEY]})
            return Message(content=RecordDict(), reply_to=message)
        return self.apps[str(context.state[ARM_KEY][ARM_KEY])](message, context)


# -- the server side of each arm ------------------------------------------------------------------
def federation_statistics(settings: RunSettings, hospitals: int) -> dict:
    """Global feature mean and std over the hospitals' training splits (empty for images)."""
    task = local.TaskConfig.from_config(settings.task_config())
    moments = []
    for partition in range(hospitals):
        data = local.raw_hospital_data(task, {"partition-id": partition, "num-partitions": hospitals})
        if not local.is_tabular(data):
            return {}
        moments.append(feature_moments(data))
    mean, std = mean_std_from_moments(*(sum(m[i] for m in moments) for i in range(3)))
    return {"feature-mean": mean.tolist(), "feature-std": std.tolist()}


def flower_config(settings: RunSettings, hospitals: int) -> dict:
    return {**settings.task_config(), STATS_KEY: json.dumps(federation_statistics(settings, hospitals))}


def aggregate_evaluation(records: list[RecordDict], _key: str) -> MetricRecord:
    return MetricRecord(weighted_client_metrics([dict(r["metrics"]) for r in records]))


def run_flower_fedavg(grid: Grid, settings: RunSettings, hospitals: int) -> dict:
    from flwr.serverapp.strategy import FedAvg

    strategy = FedAvg(
        min_train_nodes=hospitals,
        min_evaluate_nodes=hospitals,
        min_available_nodes=hospitals,
        evaluate_metrics_aggr_fn=aggregate_evaluation,
    )
    config = ConfigRecord(flower_config(settings, hospitals))
    result = strategy.start(
        grid,
        ArrayRecord(initial_weights(settings)),
        num_rounds=settings.num_rounds,
        timeout=settings.round_timeout,
        train_config=config,
        evaluate_config=config,
    )
    return dict(result.evaluate_metrics_clientapp.get(settings.num_rounds, {}))


def run_secaggplus(
    grid: Grid, context: Context, settings: RunSettings, hospitals: int, options: dict
) -> dict:
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    from he.params import preset

    config = flower_config(settings, hospitals)
    strategy = FedAvg(
        min_fit_clients=hospitals,
        min_evaluate_clients=hospitals,
        min_available_clients=hospitals,
        initial_parameters=ndarrays_to_parameters(initial_weights(settings)),
        on_fit_config_fn=lambda r: {**config, "server-round": r},
        on_evaluate_config_fn=lambda r: {**config, "server-round": r},
        evaluate_metrics_aggregation_fn=lambda results: weighted_client_metrics([m for _, m in results]),
    )
    legacy = LegacyContext(context, config=ServerConfig(num_rounds=settings.num_rounds), strategy=strategy)
    compact = preset("compact")  # the same quantization as our default preset
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=options["num_shares"],
            reconstruction_threshold=options["reconstruction_threshold"],
            clipping_range=compact.clip,
            quantization_range=1 << compact.value_bits,
            timeout=settings.round_timeout,
        )
    )
    workflow(grid, legacy)
    return {key: values[-1][1] for key, values in legacy.history.metrics_distributed.items() if values}


def run_ours(grid: Grid, settings: RunSettings, result: ArmResult) -> dict:
    run = run_one(grid, settings)
    if not run.ok:
        raise RuntimeError(run.error)
    history = run.result.history[1:]  # round 1 left out, as for the round times
    keys = ("encrypt_seconds", "aggregate_seconds", "decrypt_seconds", "client_decrypt_seconds")
    for key in keys if settings.encrypted else ():
        values = [h[key] for h in history if key in h and math.isfinite(h[key])]
        if values:
            result.crypto[key] = statistics.median(values)
    return run.result.final_metrics


def settings_of(spec: dict, arm: str) -> RunSettings:
    strategy, he_preset = OUR_ARMS.get(arm, ("fedavg", "compact"))
    hospitals = int(spec["hospitals"])
    return RunSettings(
        **spec["settings"],
        strategy=strategy,
        he_preset=he_preset,
        min_train_nodes=hospitals,
        min_nodes=hospitals,
    )


class HospitalErrors(logging.Handler):
    """Keeps the last exception line of a hospital failure the server logs (e.g. the ray traceback
    of a ``CiphertextError``), so a failed arm's row names the hospital's reason, not only the
    server's."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        lines = [line.strip() for line in record.getMessage().splitlines() if "Error: " in line]
        if lines:
            self.last = lines[-1]


def switch_arm(grid: Grid, settings: RunSettings, arm: str, nodes: list[int]) -> None:
    """Tell every hospital which arm's app answers next; it loads its data (a warm-up)."""
    config = ConfigRecord({**settings.task_config(), ARM_KEY: arm})
    messages = [
        Message(
            content=RecordDict({"config": config}), message_type=WARM_UP, dst_node_id=n, group_id="warmup"
        )
        for n in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=settings.round_timeout))
    failed = [r.error.reason for r in replies if r.has_error()]
    if failed or len(replies) < len(nodes):
        raise RuntimeError(f"warm-up: {len(replies)}/{len(nodes)} hospitals replied; {failed[:1]}")


def run_arm(
    grid: Grid,
    context: Context,
    spec: dict,
    nodes: list[int],
    result: ArmResult,
    on_round: Callable[[], None],
) -> None:
    """One arm on the simulation's hospitals; a failure or an exceeded budget ends only the arm."""
    arm, hospitals = result.arm, result.hospitals
    settings = settings_of(spec, arm)
    causes = HospitalErrors()
    logging.getLogger().addHandler(causes)
    try:
        switch_arm(grid, settings, arm, nodes)
        reset_peak_rss()
        result.started = time.perf_counter()
        metered = MeteredGrid(grid, result, float(spec["arm_budget"]), on_round)
        if arm == "flower_fedavg":
            final = run_flower_fedavg(metered, settings, hospitals)
        elif arm == "secaggplus":
            final = run_secaggplus(metered, context, settings, hospitals, spec["secaggplus"])
        else:
            final = run_ours(metered, settings, result)
        result.final = {k: float(final[k]) for k in ("eval_accuracy", "eval_auc") if k in final}
        result.done = result.round == settings.num_rounds and bool(result.final)
        if not result.done:
            result.error = f"reached round {result.round}/{settings.num_rounds} without final metrics"
    except Exception as err:  # the table reports why an arm failed
        result.error = f"{type(err).__name__}: {err}" + (
            f" (a hospital: {causes.last})" if causes.last else ""
        )
    finally:
        logging.getLogger().removeHandler(causes)
    result.seconds = time.perf_counter() - result.started
    result.server_peak_rss, result.hospital_peak_rss = peak_rss()


def run_scenario(spec: dict, out: Path) -> dict[str, ArmResult]:
    """Every arm of ``spec`` one after the other in one simulation; results written to ``out``."""
    from flwr.simulation import run_simulation

    hospitals, results = int(spec["hospitals"]), {}
    app = ServerApp()

    def write() -> None:
        out.write_text(json.dumps({arm: r.as_dict() for arm, r in results.items()}, default=float))

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        nodes = wait_for_nodes(grid, hospitals, float(spec["arm_budget"]))
        for arm in spec["arms"]:
            results[arm] = ArmResult(arm, hospitals, int(spec["settings"]["num_rounds"]))
            run_arm(grid, context, spec, nodes, results[arm], write)
            write()

    with quiet_output(log_file(f"bench-{spec['label']}")):
        run_simulation(app, BenchHospital(), num_supernodes=hospitals, backend_config=BACKEND)
    write()
    return results


if __name__ == "__main__":
    spec_path, out_path = sys.argv[1:3]
    outcome = run_scenario(json.loads(Path(spec_path).read_text()), Path(out_path))
    sys.exit(0 if all(r.done for r in outcome.values()) else 1)

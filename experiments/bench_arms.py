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
     ``client.local_training.run_local_round``;
   - ``secaggplus``: Flower's legacy ``DefaultWorkflow(SecAggPlusWorkflow)`` with the legacy
     ``FedAvg`` and a ``NumPyClient`` behind ``secaggplus_mod`` (four train stages, then an
     evaluate phase per round);
   - ``fedavg``, ``compact``, ``precise``: our strategies (``experiments._simulate.run_one``).

Tabular features of the Flower arms are standardized with the federation's statistics, which
this harness computes from the hospitals' files (our arms compute them in their own passes).

Peak RSS is the kernel's high-water mark, reset before each arm. The result file is rewritten at
every round, so a parent that stops a slow scenario still knows how far each arm got.

This module runs the arms (their server side, one scenario); what is measured and how is
``experiments.bench_metering``, the hospitals' app ``experiments.bench_hospitals``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from client import local_data as local
from client.data import feature_moments, mean_std_from_moments
from common.settings import RunSettings
from experiments._simulate import BACKEND, log_file, quiet_output, run_one
from experiments.bench_hospitals import ARM_KEY, OUR_ARMS, STATS_KEY, WARM_UP, BenchHospital
from experiments.bench_metering import ArmResult, MeteredGrid, peak_rss, reset_peak_rss
from server.app import initial_weights
from strategies.fedavg import weighted_client_metrics
from strategies.participation import wait_for_nodes

ARMS = ("flower_fedavg", "secaggplus", *OUR_ARMS)


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

"""Shared helper of the round benchmarks: one simulated federation, timed, with its output quiet.

``simulate_many(jobs, num_hospitals)`` runs Flower's Simulation Engine in-process (Ray starts
and stops with each call) and runs every job (a ``RunSettings``) as its own federation on the
same simulated hospitals, one after the other, returning each ``FederationResult`` with its
key set-up time and time before round 1. Flower/Ray output goes to a log file.

HE preset variants
------------------
The hospitals run in Ray worker processes that import ``he.params`` afresh, so a preset added to
``he.params.PRESETS`` in the benchmark process is *not* seen by them (``unknown HE preset``).
Variants are therefore named by what they change, e.g. ``compact:value_bits=10`` or
``compact:value_bits=12,max_parties=16`` (``dataclasses.replace`` on the base
preset), and the benchmark's ClientApp (``client_app`` below: ``client.app.app`` behind a
wrapper) registers a variant named in a message or in the node's run state before the
hospital's handler runs, in whichever worker process that is. The server side registers it in
the benchmark process. Nothing in ``he/`` or ``client/`` changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client import app as hospital
from common import protocol as p
from common.settings import RunSettings
from experiments.redirect_output import redirect_output
from he import params as heparams
from strategies.run_record import FederationResult

VARIANT_SEPARATOR = ":"
BACKEND = {"client_resources": {"num_cpus": 1}}


# -- preset variants ------------------------------------------------------------------------------
def variant_name(base: str, **changes: object) -> str:
    """``compact`` + ``value_bits=10`` -> ``compact:value_bits=10`` (the base name if no change)."""
    if not changes:
        return base
    return base + VARIANT_SEPARATOR + ",".join(f"{k}={v}" for k, v in sorted(changes.items()))


def _convert(field_type: object, text: str) -> object:
    kind = str(field_type)
    if "bool" in kind:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"not a boolean: {text!r}")
        return text.lower() in ("true", "1")
    if "int" in kind:
        return int(text)
    if "float" in kind:
        return float(text)
    raise ValueError(f"field of type {kind} cannot be varied")


def ensure_preset(name: str) -> heparams.HEParams:
    """The preset ``name``; a ``base:field=value,...`` variant is built and registered first."""
    if name in heparams.PRESETS or VARIANT_SEPARATOR not in name:
        return heparams.preset(name)
    base, _, spec = name.partition(VARIANT_SEPARATOR)
    types = {f.name: f.type for f in dataclasses.fields(heparams.HEParams)}
    changes = {}
    for item in spec.split(","):
        key, _, value = item.partition("=")
        if key not in types or key in ("name", "coeff_modulus_bits", "insecure_for_tests"):
            raise ValueError(f"preset variant {name!r}: cannot vary {key!r}")
        changes[key] = _convert(types[key], value)
    params = dataclasses.replace(heparams.preset(base), name=name, **changes)  # validated again
    heparams.PRESETS[name] = params
    return params


def _register_presets_of(message: Message, context: Context) -> None:
    names = [str(hospital.config_of(message).get(p.PRESET, ""))]
    state = context.state.config_records.get(hospital.STATE)
    if state is not None and "preset" in state:
        names.append(str(state["preset"]))
    for name in names:
        if VARIANT_SEPARATOR in name:
            ensure_preset(name)


class _VariantAwareApp(ClientApp):
    """The hospital ClientApp, registering a variant preset first in whichever worker runs it."""

    def __call__(self, message: Message, context: Context) -> Message:
        _register_presets_of(message, context)
        return hospital.app(message, context)


client_app = _VariantAwareApp()


# -- simulated federations ------------------------------------------------------------------------
@dataclass
class Run:
    """One federation: its result (or why it failed) and where its time went."""

    settings: RunSettings
    result: FederationResult | None = None
    error: str = ""
    setup_seconds: float = float("nan")  # key set-up (encrypted only), measured around setup()
    before_round1_seconds: float = float("nan")  # strategy start -> round 1 (set-up, statistics)
    seconds: float = float("nan")  # the whole federation, final evaluation included

    @property
    def ok(self) -> bool:
        return self.result is not None and not self.error


@dataclass
class Simulation:
    """Several federations run one after the other on the same simulated hospitals."""

    runs: list[Run]
    startup_seconds: float = float("nan")  # run_simulation call -> every hospital registered
    warm_up: Run | None = None  # the throwaway first federation that starts the Ray workers
    wall_seconds: float = float("nan")
    log_path: Path | None = None


@contextlib.contextmanager
def quiet_output(log_path: Path | None) -> Iterator[TextIO]:
    """Send fds 1/2 (Flower, Ray, its workers) and logging to ``log_path``; yield the terminal."""
    if log_path is None:
        yield sys.stderr
        return
    with redirect_output(log_path, root_logging=True) as terminal:
        yield terminal


sim_terminal: list[TextIO] = [sys.stderr]  # where progress lines go while fds 1/2 are redirected


def progress(text: str) -> None:
    print(text, file=sim_terminal[0], flush=True)


def run_one(grid, settings: RunSettings) -> Run:
    """One federation on ``grid`` (as ``server.app.run_federation``), timed; errors are kept."""
    from server.app import build_strategy, initial_weights

    run = Run(settings)
    started = time.perf_counter()
    try:
        strategy = build_strategy(settings)
        strategy.summary()
        setup = strategy.setup

        def timed_setup(g) -> None:
            t0 = time.perf_counter()
            setup(g)
            run.setup_seconds = time.perf_counter() - t0

        strategy.setup = timed_setup

        def on_round(server_round: int, metrics: dict) -> None:
            if server_round == 1:
                run.before_round1_seconds = time.perf_counter() - started - metrics["round_seconds"]

        run.result = strategy.start(grid, initial_weights(settings), on_round)
        if not run.result.final_metrics:
            run.error = "the final evaluation returned no metrics (every hospital failed it?)"
    except Exception as err:  # a benchmark reports a failed federation and goes on
        run.error = f"{type(err).__name__}: {err}"
        logging.getLogger(__name__).exception("federation %s failed", settings)
    if not settings.encrypted:
        run.setup_seconds = float("nan")
    run.seconds = time.perf_counter() - started
    return run


def simulate_many(
    jobs: Sequence[RunSettings],
    num_hospitals: int,
    log_path: Path | None = None,
    warm_up: RunSettings | None = None,
    on_run: Callable[[int, Run], None] | None = None,
    timeout: float = 300.0,
    hospital_app: ClientApp | None = None,
) -> Simulation:
    """Run ``jobs`` one after the other in one ``run_simulation`` (Ray and its workers start once).

    Every federation does its own key set-up (``query.hello`` makes each hospital a fresh
    ``KeyHolder``), so they are independent; only the worker processes (imports, data cache,
    SEAL contexts) are shared. ``warm_up`` (e.g. a 1-round plaintext federation) runs first
    so that the measured federations do not pay the workers' start-up. ``hospital_app``
    replaces the variant-aware ``client_app`` (e.g. ``client.app.app`` itself).
    """
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from strategies.participation import wait_for_nodes

    for settings in jobs:
        if settings.encrypted:
            ensure_preset(settings.he_preset)  # the server's side of a variant preset
    sim = Simulation(runs=[], log_path=log_path)
    app = ServerApp()
    started = time.perf_counter()

    @app.main()
    def main(grid, context) -> None:
        # run_simulation starts the ServerApp while nodes still register: wait for all of them.
        if len(wait_for_nodes(grid, num_hospitals, timeout)) < num_hospitals:
            raise TimeoutError(f"only {len(grid.get_node_ids())}/{num_hospitals} hospitals registered")
        sim.startup_seconds = time.perf_counter() - started
        if warm_up is not None:
            sim.warm_up = run_one(grid, warm_up)
            if on_run:
                on_run(-1, sim.warm_up)
        for index, settings in enumerate(jobs):
            sim.runs.append(run_one(grid, settings))
            if on_run:
                on_run(index, sim.runs[-1])

    with quiet_output(log_path) as terminal:
        sim_terminal[0] = terminal
        try:
            run_simulation(
                app, hospital_app or client_app, num_supernodes=num_hospitals, backend_config=BACKEND
            )
        finally:
            sim_terminal[0] = sys.stderr
    sim.wall_seconds = time.perf_counter() - started
    for settings in jobs[len(sim.runs) :]:
        sim.runs.append(Run(settings, error="not run: the simulation stopped early"))
    return sim


def log_file(name: str) -> Path:
    """Where a benchmark's Flower/Ray output goes (``FEDQUORUM_BENCH_LOG_DIR``, default /tmp)."""
    directory = Path(os.environ.get("FEDQUORUM_BENCH_LOG_DIR", "/tmp"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"fedquorum-{name}-{os.getpid()}.log"

"""The Deployment Engine scenario of the head-to-head benchmark (``experiments.bench``).

A scenario with ``engine: deployment`` (``deploy-5`` in ``conf/bench/full.yaml``) runs on
127.0.0.1 what a pilot runs across hospitals:

1. ``python -m server.coordinator init-pilot`` makes the PKI, node keys, signing keys and roster;
2. ``python -m server.coordinator superlink`` runs the SuperLink with TLS and SuperNode
   authentication and registers the hospitals' keys (runtime dependency installation off);
3. one plain ``flower-supernode`` per hospital with TLS, its node authentication key and a node
   config naming its partition of the embedded data (the same partitions as the simulation's
   ``mlp-5``) and its roster and signing key. Plain SuperNodes, not ``client.daemon``: the
   daemon only runs approved app bundles through its policy, and this benchmark's bundle carries
   Flower's own FedAvg and SecAgg+ hospitals as well (docs/deployment.md);
4. ``flwr run`` of a bundle whose ServerApp (``app`` below) runs each arm with
   ``experiments.bench_arms.run_arm`` on a ``MeteredGrid`` (the same time and byte accounting as
   the simulation) and whose ClientApp is ``BenchHospital`` (every arm's hospital in one); the
   ServerApp writes the result file the simulation's scenario process writes.

Every process is started and stopped by PID through ``experiments.local_pilot.Processes``
(SIGTERM, then SIGKILL; Flower's children recorded by PID and killed by PID if they linger).

Hospital peak RSS is not measured here: each message runs in a fresh ``flwr-clientapp`` process
whose high-water mark dies with it (the column says ``–``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.bundle import bundle_packages
from experiments.bench_arms import run_arm
from experiments.bench_hospitals import OUR_ARMS
from experiments.bench_metering import ArmResult
from experiments.local_pilot import Processes, free_port, start_superlink, wait_for_run
from server.flower_cli import executable, flower_env, flwr, json_output
from strategies.participation import wait_for_nodes

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = bundle_packages()
EXPERIMENT_FILES = (
    "__init__.py",
    "_simulate.py",
    "bench_arms.py",
    "bench_hospitals.py",
    "bench_metering.py",
    "bench_deploy.py",
)

# -- the bundle's ServerApp (run by the SuperLink's ServerApp process) --
app = ServerApp()  # its ClientApp is experiments.bench_hospitals:hospital, which imports no torch


@app.main()
def main(grid: Grid, context: Context) -> None:
    spec = json.loads(Path(str(context.run_config["bench-spec"])).read_text())
    out = Path(str(context.run_config["bench-result"]))
    hospitals, results = int(spec["hospitals"]), {}

    def write() -> None:
        out.write_text(json.dumps({arm: r.as_dict() for arm, r in results.items()}, default=float))

    nodes = wait_for_nodes(grid, hospitals, float(spec["arm_budget"]))
    for arm in spec["arms"]:
        results[arm] = ArmResult(arm, hospitals, int(spec["settings"]["num_rounds"]))
        run_arm(grid, context, spec, nodes, results[arm], write)
        results[arm].hospital_peak_rss = 0  # not this process's children: see the module docstring
        write()


# -- the driver (in the benchmark's process) --------------------------------------------------------
def write_bundle(directory: Path) -> Path:
    """An app directory: the project's code, and a pyproject naming this module's apps."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, directory / package, ignore=ignore)
    (directory / "experiments").mkdir()
    for name in EXPERIMENT_FILES:
        shutil.copy(REPO_ROOT / "experiments" / name, directory / "experiments" / name)
    include = ", ".join(f'"{p}/**/*.py"' for p in (*PACKAGES, "experiments"))
    (directory / "pyproject.toml").write_text(
        "[build-system]\n"
        'requires = ["hatchling"]\n'
        'build-backend = "hatchling.build"\n\n'
        "[project]\n"
        'name = "fedquorum-bench"\n'
        'version = "0.1.0"\n'
        "dependencies = []\n\n"
        "[tool.hatch.build.targets.wheel]\n"
        'packages = ["."]\n\n'
        "[tool.flwr.app]\n"
        'publisher = "fedquorum"\n'
        f"fab-include = [{include}]\n\n"
        "[tool.flwr.app.components]\n"
        'serverapp = "experiments.bench_deploy:app"\n'
        'clientapp = "experiments.bench_hospitals:hospital"\n\n'
        "[tool.flwr.app.config]\n"
        'bench-spec = ""\n'
        'bench-result = ""\n'
    )
    return directory


def node_config(pilot: Path, name: str, partition: int, hospitals: int) -> str:
    from he.roster import NODE_HOSPITAL, NODE_ROSTER, NODE_SIGNING_KEY

    folder = pilot / "hospitals" / name
    return (
        f"partition-id={partition} num-partitions={hospitals} "
        f'{NODE_ROSTER}="{folder / "roster.json"}" {NODE_SIGNING_KEY}="{folder / "signing.key"}" '
        f'{NODE_HOSPITAL}="{name}"'
    )


def pilot_preset(arms: list[str]) -> str:
    """The HE preset the pilot's roster pins: that of the scenario's encrypted arms (one roster,
    so one preset per scenario; plaintext arms ignore it)."""
    presets = {OUR_ARMS[arm][1] for arm in arms if OUR_ARMS.get(arm, ("",))[0] == "encrypted_fedavg"}
    if len(presets) > 1:
        raise ValueError(
            f"a deployment scenario pins one HE preset in its roster; its arms ask for {sorted(presets)}"
        )
    return presets.pop() if presets else "compact"


def run_scenario(spec: dict, work: Path, limit: float) -> tuple[dict, str]:
    """Start the pilot, run every arm of ``spec`` in one Flower run, stop everything by PID.

    Returns the arms' results (as ``experiments.bench_arms`` writes them) and a note (empty if the
    run finished within ``limit`` seconds)."""
    label = str(spec["label"])
    root = work / label
    if root.exists():
        shutil.rmtree(root)
    (root / "logs").mkdir(parents=True)
    hospitals = int(spec["hospitals"])
    coordinator_home = root / "flwr-coordinator"
    env = flower_env(coordinator_home)  # FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
    pilot = root / "pilot"
    python = [sys.executable, "-m"]
    made = subprocess.run(
        [
            *python,
            "server.coordinator",
            "init-pilot",
            "--hospitals",
            str(hospitals),
            "--preset",
            pilot_preset(spec["arms"]),
            "--out",
            str(pilot),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if made.returncode != 0:
        return {}, f"init-pilot failed: {made.stderr[-300:]}"
    from server import pki

    layout = pki.PilotLayout(pilot.absolute())
    spec = spec | {"settings": spec["settings"] | {"roster": str(layout.roster)}}
    spec_path, out_path = root / "spec.json", root / "result.json"
    spec_path.write_text(json.dumps(spec))

    procs = Processes(root / "logs")
    note = ""
    try:
        link, port = start_superlink(procs, pilot, env, hospitals)
        if link.poll() is not None:
            return {}, f"the SuperLink exited: {procs.log('superlink')[-300:]}"
        started = time.perf_counter()
        for partition, name in enumerate(layout.hospital_names()):
            folder = pilot / "hospitals" / name
            node_env = flower_env(root / f"flwr-{name}") | {"OMP_NUM_THREADS": "1"}
            procs.start(
                name,
                [
                    executable("flower-supernode"),
                    "--superlink",
                    f"127.0.0.1:{port}",
                    "--root-certificates",
                    str(folder / "ca.crt"),
                    "--auth-supernode-private-key",
                    str(folder / "node.key"),
                    "--node-config",
                    node_config(pilot, name, partition, hospitals),
                    "--port",
                    str(free_port()),
                ],
                node_env,
            )
        bundle = write_bundle(root / "app")
        home = pki.private_dir(layout.superlink_dir / "flwr")  # the coordinator's CLI config
        submitted = flwr(
            home,
            "run",
            str(bundle),
            "pilot",
            "--run-config",
            f'bench-spec="{spec_path}" bench-result="{out_path}"',
            "--format",
            "json",
        )
        run = json_output(submitted, "flwr run")
        if not run.get("success") or "run-id" not in run:
            return {}, f"flwr run failed: {json.dumps(run)[:300]}"
        run_id = int(run["run-id"])
        print(f"bench:   deployment: Flower run {run_id}, logs in {root / 'logs'}", flush=True)
        try:
            status = wait_for_run(
                home, "pilot", run_id, timeout=max(60.0, limit - (time.perf_counter() - started))
            )
            if status != "finished:completed":
                note = f"the Flower run ended {status}"
        except TimeoutError:
            flwr(home, "stop", str(run_id), "pilot")
            note = f"scenario stopped after {limit:.0f} s"
        logs = flwr(home, "log", str(run_id), "pilot", "--show")
        (root / "logs" / "serverapp.log").write_text(logs.stdout + logs.stderr)
    except Exception as err:  # the table says why the scenario did not run
        note = f"{type(err).__name__}: {err}"[:300]
    finally:
        procs.stop_all()
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    if not results and not note:
        note = f"no result file (logs in {root / 'logs'})"
    return results, note

"""Helpers for deployment tests: processes started by PID and always stopped by PID.

Every process a test starts goes through :class:`Processes` (fixture ``procs`` in conftest): its output goes
to ``<tmp>/<name>.log``, and at teardown (also on failure) each one gets SIGTERM, then SIGKILL
after a grace period; descendants Flower spawned (SuperExec, ClientApp and ServerApp processes)
are recorded by PID while their parent lives and waited for (then killed by PID) as well.
Everything binds 127.0.0.1; every SuperLink starts with runtime dependency installation off.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# generous: on a loaded 2-core CI machine one deployment message phase took up to ~60 s
RUN_TIMEOUT = float(os.environ.get("FEDQUORUM_E2E_TIMEOUT", "1200"))


def identity_args(hospital_dir: Path, name: str, signing_key: Path | None = None) -> list[str]:
    """Daemon flags for a hospital's roster and signing key, as ``init-pilot`` lays them out."""
    return [
        "--roster",
        str(hospital_dir / "roster.json"),
        "--signing-key",
        str(signing_key or hospital_dir / "signing.key"),
        "--hospital",
        name,
    ]


def flower_env(home: Path) -> dict[str, str]:
    return os.environ | {
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "NO_COLOR": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def start_superlink(
    procs: Processes, pilot: Path, env: dict[str, str], hospitals: int
) -> tuple[subprocess.Popen, int]:
    """The pilot's SuperLink (``server.coordinator superlink``: TLS, node authentication) on a
    free port, waited for until it has registered ``hospitals`` keys (or exited); (process, port)."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "server.coordinator",
        "superlink",
        "--pilot",
        str(pilot),
        "--port",
        str(port),
    ]
    link = procs.start("superlink", command, env)
    wait_until(
        lambda: f"ready with {hospitals} registered" in procs.log("superlink") or link.poll() is not None,
        300,
        "the SuperLink to start and register the hospitals",
    )
    return link, port


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, ..., starttime at [19])."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants_of(pid: int) -> dict[int, str]:
    """Direct and indirect children of ``pid``: ``{pid: start time}`` (from /proc)."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = (int(fields[1]), fields[19])
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        kids = {child: start for child, (parent, start) in parents.items() if parent == current}
        found |= kids
        frontier += list(kids)
    return found


def alive(pid: int, start_time: str | None = None) -> bool:
    """``pid`` runs (not a zombie) and, if given, is the process that started at ``start_time``."""
    fields = _stat(pid)
    if fields is None or fields[0] == "Z":
        return False
    return start_time is None or fields[19] == start_time


class Processes:
    """Processes of one test, stopped by PID at teardown.

    A watcher thread records, twice a second, the PIDs (and start times) of everything the
    started processes spawned, and reaps started processes that exit (so Flower's children,
    which watch their parent's PID, notice). At teardown the started processes get SIGTERM
    (SIGKILL after a grace period); recorded descendants get time to exit on their own, then
    SIGKILL by PID if they are still the same process.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: dict[str, subprocess.Popen] = {}
        self.descendants: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            self.note_descendants()

    def start(
        self, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd or ROOT)
        log.close()
        with self._lock:
            self.started[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def note_descendants(self) -> None:
        with self._lock:
            for proc in self.started.values():
                if proc.poll() is None:
                    self.descendants |= descendants_of(proc.pid)

    def stop(self, name: str, grace: float = 20.0) -> int | None:
        proc = self.started[name]
        if proc.poll() is None:
            self.note_descendants()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    def stop_all(self) -> None:
        self.note_descendants()
        self._stopping.set()
        self._watcher.join(timeout=5)
        for name in reversed(list(self.started)):  # SuperNodes before the SuperLink
            self.stop(name)
        # Flower's own children (SuperExec, ClientApp/ServerApp) exit when their parent is gone
        deadline = time.monotonic() + 20
        while any(alive(p, t) for p, t in self.descendants.items()) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid, start_time in self.descendants.items():
            if alive(pid, start_time):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def flwr(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "flwr"), *args], capture_output=True, text=True, env=flower_env(home), timeout=timeout
    )


def json_of(done: subprocess.CompletedProcess) -> dict:
    import json

    text = done.stdout
    assert "{" in text, f"no JSON from flwr (exit {done.returncode}): {done.stdout}{done.stderr}"
    return json.loads(text[text.index("{") : text.rindex("}") + 1])


def wait_for_run(home: Path, connection: str, run_id: int, timeout: float = RUN_TIMEOUT) -> str:
    """Poll ``flwr list`` until the run is finished; return its status (``finished:completed``)."""
    status = "unknown"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = json_of(flwr(home, "list", connection, "--run-id", str(run_id), "--format", "json"))["runs"]
        status = str(runs[0]["status"]) if runs else "unknown"
        if status.startswith("finished"):
            return status
        time.sleep(3)
    raise TimeoutError(f"Flower run {run_id} still {status!r} after {timeout:.0f} s")


def mlflow_run_of(db: Path, flower_run_id: int):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("fedquorum")
    assert experiment is not None, f"no MLflow experiment 'fedquorum' in {db}"
    runs = client.search_runs([experiment.experiment_id], f"tags.flower_run_id = '{flower_run_id}'")
    assert len(runs) == 1, f"expected one MLflow run tagged with Flower run {flower_run_id}, got {len(runs)}"
    return client, runs[0]


def read_audit(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def run_captured(
    args: list[str], env: dict | None = None, cwd: Path = ROOT, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``args`` run to the end, output kept as text (for the assertions and their messages)."""
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def init_pilot(pilot: Path, env: dict, hospitals: int) -> subprocess.CompletedProcess:
    """``init-pilot``: PKI, signing keys and roster of ``hospitals`` in ``pilot``; it must succeed."""
    made = run_captured(
        python("server.coordinator", "init-pilot", "--hospitals", str(hospitals), "--out", str(pilot)),
        env,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    return made


def hospital_csvs(folder: Path, hospitals: int) -> list[Path]:
    """The breast-cancer table split across the hospitals, one CSV file each (as a site would have)."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "diagnosis"})
    order = np.random.default_rng(0).permutation(len(frame))
    paths = []
    for i, rows in enumerate(np.array_split(order, hospitals)):
        path = folder / f"hospital-{i + 1}.csv"
        frame.iloc[rows].to_csv(path, index=False)
        paths.append(path)
    return paths


def daemon_args(
    pilot: Path,
    name: str,
    port: int,
    data: Path,
    state: Path,
    key: Path | None = None,
    signing_key: Path | None = None,
    ca: Path | None = None,
) -> list[str]:
    """``python -m client.daemon`` for hospital ``name`` of an ``init-pilot`` layout, on its CSV
    (``key``, ``signing_key``, ``ca``: another file than the hospital's own)."""
    return python(
        "client.daemon",
        "--superlink",
        f"127.0.0.1:{port}",
        "--root-certificates",
        str(ca or pilot / "hospitals" / name / "ca.crt"),
        "--auth-key",
        str(key or pilot / "hospitals" / name / "node.key"),
        "--data",
        str(data),
        "--target-column",
        "diagnosis",
        "--num-features",
        "30",
        "--num-classes",
        "2",
        "--state-dir",
        str(state),
        "--port",
        str(free_port()),
        *identity_args(pilot / "hospitals" / name, name, signing_key),
    )


def engineer_command(pilot: Path, port: int, db: Path, hospitals: int, *overrides: str) -> list[str]:
    """The ML engineer's ``python -m experiments.run federation=deployment ...`` on the pilot's CSVs."""
    return python(
        "experiments.run",
        "federation=deployment",
        f"federation.superlink=127.0.0.1:{port}",
        f"federation.root_certificates={pilot / 'ca' / 'ca.crt'}",
        f"federation.roster={pilot / 'roster.json'}",
        f"federation.num_hospitals={hospitals}",
        "federation.poll_seconds=2",
        "dataset=csv",
        "dataset.num_features=30",
        "dataset.num_classes=2",
        "dataset.target_column=diagnosis",
        f"mlflow.tracking_uri=sqlite:///{db}",
        "progress=false",
        *overrides,
    )

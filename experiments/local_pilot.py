"""A whole pilot on this machine, for the deployment tests and ``experiments.bench_deploy``: free
127.0.0.1 ports, the pilot's SuperLink, and every process started by PID and always stopped by PID.

Every process goes through :class:`Processes`: its output goes to ``<log_dir>/<name>.log``, and at
teardown (also on failure) each one gets SIGTERM, then SIGKILL after a grace period; descendants
Flower spawned (SuperExec, ClientApp and ServerApp processes) are recorded by PID while their
parent lives and waited for (then killed by PID) as well. Everything binds 127.0.0.1; every
SuperLink starts with runtime dependency installation off (``server.flower_cli.flower_env``).
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

from server.flower_cli import run_status

REPO_ROOT = Path(__file__).resolve().parents[1]
# generous: on a loaded 2-core CI machine one deployment message phase took up to ~60 s
RUN_TIMEOUT = float(os.environ.get("FEDQUORUM_E2E_TIMEOUT", "1200"))


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
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd or REPO_ROOT)
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


def wait_for_run(home: Path, connection: str, run_id: int, timeout: float = RUN_TIMEOUT) -> str:
    """Poll ``flwr list`` until the run is finished; return its status (``finished:completed``)."""
    status = "unknown"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run_status(home, connection, run_id)
        if status.startswith("finished"):
            return status
        time.sleep(3)
    raise TimeoutError(f"Flower run {run_id} still {status!r} after {timeout:.0f} s")

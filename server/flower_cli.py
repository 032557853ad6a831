"""How the coordinator's tools call Flower: its executables, their FLWR_HOME and the CLI's
connection config. One place, so the SuperLink, registration and status all talk to the same
SuperLink the same way (TLS with the pilot CA, or a loud insecure trial)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from server import pki

CONNECTION = "pilot"


def executable(name: str) -> str:
    """``name`` from this interpreter's environment first (the pinned Flower), else PATH."""
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if exe is None:
        raise SystemExit(f"error: {name} is not installed in this environment")
    return exe


def flwr_home(layout: pki.PilotLayout) -> Path:
    """The coordinator's Flower directory: CLI connection config, and the SuperLink's apps."""
    return pki.private_dir(layout.superlink_dir / "flwr")


def client_address(host: str, port: int) -> str:
    """Where local tools reach a SuperLink listening on ``host`` (wildcards: loopback)."""
    return f"{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"


def write_cli_config(home: Path, address: str, ca_cert: Path | None) -> Path:
    """``<home>/config.toml`` with one connection ``pilot`` (TLS with the pilot CA, or insecure)."""
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]"]
    lines.append(f"address = {json.dumps(address)}")
    if ca_cert is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {json.dumps(str(ca_cert))}")
    path = home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def flower_env(home: Path) -> dict[str, str]:
    """The environment of a Flower executable: the coordinator's FLWR_HOME, no dependency
    installation at run time, no update check or telemetry, no colour codes in the output we
    parse, and this environment's executables first (the processes Flower starts are the pinned
    ones)."""
    return os.environ | {
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "NO_COLOR": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def flwr(home: Path, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """The ``flwr`` CLI with the config in ``home`` (its output captured, as text)."""
    return subprocess.run(
        [executable("flwr"), *args], capture_output=True, text=True, env=flower_env(home), timeout=timeout
    )


def json_output(done: subprocess.CompletedProcess, what: str) -> dict:
    """The JSON object a ``flwr ... --format json`` printed; a clear error with its output if none."""
    text = done.stdout
    try:
        return json.loads(text[text.index("{") : text.rindex("}") + 1])
    except ValueError as err:
        raise RuntimeError(
            f"{what} gave no JSON (exit {done.returncode}): {(done.stdout + done.stderr)[-2000:]}"
        ) from err


def run_status(home: Path, connection: str, run_id: int) -> str:
    """The Flower run's status as ``flwr list`` reports it (``unknown`` if it lists none)."""
    done = flwr(home, "list", connection, "--run-id", str(run_id), "--format", "json")
    runs = json_output(done, "flwr list").get("runs") or []
    return str(runs[0]["status"]) if runs else "unknown"

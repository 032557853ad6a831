"""How the daemon becomes the SuperNode: the node config and the ``flwr-clientapp`` launcher it
writes to the state dir, the ``flower-supernode`` command and environment, and the ``--check-only``
probe of the SuperLink. Kept apart from the checks so the start is one readable step."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path

from client import node_check as check

log = logging.getLogger("fedquorum.daemon")

NODE_CONFIG_FILE = "node-config.toml"
LAUNCHER_DIR = "bin"  # <state-dir>/bin: the hospital's flwr-clientapp, first on the SuperNode's PATH


def toml_string(value: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML)."""
    return json.dumps(value)


def write_node_config(state_dir: Path, values: dict) -> Path:
    """``<state-dir>/node-config.toml``, read by ``flower-supernode --node-config``."""
    lines = [
        f"{key} = {toml_string(v) if isinstance(v, str) else json.dumps(v)}" for key, v in values.items()
    ]
    path = state_dir / NODE_CONFIG_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        "# written by python -m client.daemon at start; edits are overwritten\n" + "\n".join(lines) + "\n"
    )
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def write_launcher(state_dir: Path) -> Path:
    """``<state-dir>/bin/flwr-clientapp``: runs ``client.launcher`` (the app approval check) with this
    interpreter. The SuperNode starts ClientApp processes by that name from ``PATH``."""
    directory = state_dir / LAUNCHER_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / "flwr-clientapp"
    tmp = path.with_suffix(".tmp")
    python = shlex.quote(sys.executable)
    tmp.write_text(f'#!/bin/sh\n# written by client.daemon\nexec {python} -m client.launcher "$@"\n')
    tmp.chmod(0o700)
    tmp.replace(path)
    return directory


def supernode_env(launcher_dir: Path) -> dict[str, str]:
    """The SuperNode's environment: our ``flwr-clientapp`` first, then this environment's Flower
    tools (``flower-superexec``), so a service without an activated venv works."""
    path = os.pathsep.join([str(launcher_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return os.environ | {"PATH": path, "FLWR_DISABLE_UPDATE_CHECK": "1"}


def supernode_command(args: argparse.Namespace, node_config: Path, extra: list[str]) -> list[str]:
    exe = shutil.which("flower-supernode", path=str(Path(sys.executable).parent)) or shutil.which(
        "flower-supernode"
    )
    if exe is None:
        raise check.NodeCheckError("flower-supernode is not on PATH; install the project's requirements")
    cmd = [exe, "--superlink", args.superlink, "--host", "127.0.0.1", "--port", str(args.port)]
    if args.insecure:
        cmd.append("--insecure")
    else:
        cmd += ["--root-certificates", str(args.root_certificates)]
        cmd += ["--auth-supernode-private-key", str(args.auth_key)]
    cmd += ["--node-config", str(node_config)]
    return cmd + extra


def probe_superlink(args: argparse.Namespace) -> None:
    """``--check-only``: reach the SuperLink as the SuperNode will (``check.check_superlink``)."""
    if args.insecure:
        log.info(check.check_superlink(args.superlink, None, None))
    else:
        log.info(check.check_superlink(args.superlink, Path(args.root_certificates), Path(args.auth_key)))

"""Hospital registration with a running SuperLink, and their status by name.

``flwr supernode register`` admits a hospital's node key; Flower lists nodes by id only, so the
name each id was registered under is kept in the coordinator's FLWR_HOME (``NAMES_FILE``) and
``status`` shows hospitals by name, online or offline and since when.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

from server import pki
from server.flower_cli import CONNECTION, executable, flower_env, write_cli_config

log = logging.getLogger("fedquorum.coordinator")


def pilot_node_keys(layout: pki.PilotLayout) -> list[tuple[str, Path]]:
    """(name, node.pub) of every hospital of the pilot, as ``init-pilot`` wrote them."""
    return [(name, layout.hospital_dir(name) / "node.pub") for name in layout.hospital_names()]


def register_keys(home: Path, public_keys: list[tuple[str, Path]], timeout: float = 120.0) -> dict[str, str]:
    """``flwr supernode register`` each (name, .pub); return name -> node id or 'already registered'."""
    flwr = executable("flwr")
    results = {}
    for name, path in public_keys:
        pki.load_node_public_key(path)  # clear error before the CLI's
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(
                [flwr, "supernode", "register", str(path), CONNECTION, "--name", name, "--format", "json"],
                capture_output=True,
                text=True,
                env=flower_env(home),
                timeout=120,
            )
            output = done.stdout + done.stderr
            node_id = _node_id(done.stdout)
            if node_id is not None:
                results[name] = node_id
                remember_name(home, node_id, name)
                break
            if "already" in output.lower() and "use" in output.lower():
                results[name] = "already registered"
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"registering {name} ({path}) failed: {output.strip()[-1000:]}")
            time.sleep(2)  # the SuperLink may still be starting its Control API
        log.info("registered %s (%s): %s", name, path, results[name])
    return results


NAMES_FILE = "hospital-names.json"  # in the coordinator's FLWR_HOME: node id -> hospital name


def remember_name(home: Path, node_id: str, name: str) -> None:
    """Record which hospital a node id is: Flower's node list shows ids only."""
    path = home / NAMES_FILE
    names = json.loads(path.read_text()) if path.exists() else {}
    names[str(node_id)] = name
    path.write_text(json.dumps(names, indent=1, sort_keys=True) + "\n")


def format_status(nodes: list[dict], names: dict[str, str]) -> str:
    """``flwr supernode list --format json`` as a table by hospital name: online or offline, since."""
    rows = [("hospital", "node id", "status", "since")]
    for node in nodes:
        status = str(node.get("status", "?"))
        since = node.get("online-at") if status == "online" else node.get("offline-at")
        node_id = str(node.get("node-id", "?"))
        rows.append((names.get(node_id, "(unknown name)"), node_id, status, str(since or "never")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _node_id(stdout: str) -> str | None:
    try:
        data = json.loads(stdout[stdout.index("{") : stdout.rindex("}") + 1])
    except ValueError:
        return None
    return str(data["node-id"]) if data.get("success") and "node-id" in data else None


class SuperLinkUnreachableError(RuntimeError):
    """``status`` got no node list: no SuperLink answers at the address (or not this pilot's)."""


def configured_address(home: Path) -> str | None:
    """The SuperLink address ``superlink`` wrote into the coordinator's CLI config, if any."""
    path = home / "config.toml"
    if not path.exists():
        return None
    return tomllib.loads(path.read_text())["superlink"][CONNECTION]["address"]


def list_nodes(address: str, ca_cert: Path | None) -> list[dict]:
    """``flwr supernode list`` against ``address``, from a throwaway CLI config: asking about
    one SuperLink must not repoint the pilot's own config at it."""
    with tempfile.TemporaryDirectory() as tmp:
        write_cli_config(Path(tmp), address, ca_cert)
        done = subprocess.run(
            [executable("flwr"), "supernode", "list", CONNECTION, "--format", "json"],
            env=flower_env(Path(tmp)),
            capture_output=True,
            text=True,
            timeout=120,
        )
    try:
        listing = json.loads(done.stdout[done.stdout.index("{") : done.stdout.rindex("}") + 1])
    except ValueError:
        listing = {"success": False, "error-message": (done.stdout + done.stderr).strip()}
    if listing.get("success") is False or "nodes" not in listing:
        why = " ".join(str(listing.get("error-message", listing)).split())
        raise SuperLinkUnreachableError(
            f"cannot list hospitals: no answer from a SuperLink at {address} ({why[-300:]}); is it "
            "running (`python -m server.coordinator superlink`), and is --superlink its address?"
        )
    return listing["nodes"]

"""The pilot's SuperLink: ``flower-superlink`` with TLS and SuperNode authentication, started
as a child that dies with the coordinator, then every pilot hospital's node key registered.

SIGTERM/SIGINT are passed on to the SuperLink, and ``run`` returns its exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import subprocess
import time
from pathlib import Path

from common.child_process import die_with_parent
from server import pki
from server.flower_cli import CONNECTION, client_address, executable, flower_env, flwr_home, write_cli_config
from server.registration import pilot_node_keys, register_keys

log = logging.getLogger("fedquorum.coordinator")

INSECURE_WARNING = """
**************************************************************************************
*  INSECURE SUPERLINK: no TLS and no SuperNode authentication. Anyone who can reach  *
*  this port can join the federation as a hospital or read the traffic. Use only on  *
*  one machine for a trial, never with patient data.                                 *
**************************************************************************************"""


def wait_for_port(address: str, timeout: float, alive=lambda: True) -> None:
    """Return once ``address`` accepts TCP connections; raise if ``alive()`` turns false (the
    SuperLink died) or ``timeout`` seconds pass, so a failed start is reported, not waited on."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the SuperLink exited before {address} accepted connections")
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the SuperLink at {address} did not accept connections within {timeout:.0f} s")


def superlink_command(args: argparse.Namespace, layout: pki.PilotLayout) -> list[str]:
    """The ``flower-superlink`` command line: TLS with the pilot's certificates and SuperNode
    authentication, unless ``--insecure``; a missing certificate stops here, naming it
    (``PKIError``: the command exits 2, which the systemd unit does not restart on)."""
    cmd = [executable("flower-superlink"), "--host", args.host, "--port", str(args.port)]
    cmd += ["--database", str(args.database or layout.superlink_dir / "state.db")]
    cmd += ["--disable-runtime-dependency-installation"]
    if args.insecure:
        return [*cmd, "--insecure"]
    for path, what in (
        (layout.superlink_ca, "CA certificate"),
        (layout.server_cert, "SuperLink certificate"),
        (layout.server_key, "SuperLink private key"),
    ):
        if not path.is_file():
            raise pki.PKIError(f"{what} {path} is missing; run `init-pilot --out {layout.root}` first")
    return [
        *cmd,
        "--ssl-ca-certfile",
        str(layout.superlink_ca),
        "--ssl-certfile",
        str(layout.server_cert),
        "--ssl-keyfile",
        str(layout.server_key),
        "--enable-supernode-auth",
    ]


def run(args: argparse.Namespace) -> int:
    """Start the SuperLink of ``args.pilot`` and register its hospitals; its exit code."""
    layout = pki.PilotLayout(Path(args.pilot).expanduser().absolute())
    cmd = superlink_command(args, layout)  # before anything is written: a mistyped --pilot stays empty
    pki.private_dir(layout.superlink_dir)
    home = flwr_home(layout)
    address = client_address(args.host, args.port)
    if args.insecure:
        log.warning(INSECURE_WARNING)
    write_cli_config(home, address, None if args.insecure else layout.superlink_ca)
    log.info("starting: %s", " ".join(cmd))
    child = subprocess.Popen(cmd, env=flower_env(home), preexec_fn=die_with_parent)

    def forward(signum, _frame) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        wait_for_port(address, args.start_timeout, alive=lambda: child.poll() is None)
        if args.insecure or args.no_register:
            log.info("SuperLink at %s; no hospital keys registered", address)
        else:
            keys = pilot_node_keys(layout)
            if not keys:
                log.warning(
                    "no hospital public keys under %s; register them with `register`", layout.hospitals_dir
                )
            register_keys(home, keys, args.start_timeout)
            log.info("SuperLink at %s ready with %d registered hospital(s)", address, len(keys))
        # the pilot's CLI config, for `flwr ls` & co: FLWR_HOME=<this dir>
        log.info("flwr CLI config: FLWR_HOME=%s (connection %r)", home, CONNECTION)
    except (RuntimeError, TimeoutError, pki.PKIError) as err:
        log.error("%s; stopping the SuperLink", err)
        child.terminate()
        child.wait(timeout=30)
        return 1
    return child.wait()

"""Run ``flower-supernode`` as the daemon's child: say when it is connected, and retry an activation
the SuperLink refuses only because this hospital's previous node is still registered as online.

A SuperNode restarted within about a minute of a crash (SIGKILL, power loss) is refused by the
SuperLink ("Failed to activate SuperNode", exit 305) until the old node's heartbeat expires; the same
exit comes from an unregistered key or a SuperLink that is down. The registration probe
(``node_check.check_superlink``) tells them apart: a registered key is worth waiting for, anything
else is reported with its reason and ends the daemon.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from client import node_check as check
from common.child_process import die_with_parent

log = logging.getLogger("fedquorum.daemon")

ACTIVATION_REFUSED = 305  # Flower 1.42 ExitCode.SUPERNODE_CONNECTION_ERROR (the process exits 1)
NODE_ID_LINE = re.compile(r"SuperNode ID: (\d+)")  # Flower logs it once the node is activated
EXIT_CODE_LINE = re.compile(r"Exit Code: (\d+)")  # Flower's own code, logged as it exits
BACKOFF_SECONDS = (5.0, 10.0, 20.0, 30.0, 60.0)  # then 60 s each time
MAX_ACTIVATION_RETRIES = 12  # about 9 minutes: a heartbeat expires well within that


class Relay:
    """Copies the SuperNode's output to ours line by line, noting its node id and exit code.

    A thread of its own: the pipe stays open after the SuperNode exits as long as its SuperExec
    child lives, so the end of the output cannot tell that the SuperNode is gone."""

    def __init__(self, child: subprocess.Popen, address: str) -> None:
        self.address = address
        self.connected = False
        self.flower_code: int | None = None  # the code Flower logs as it exits (its status is 1)
        self.thread = threading.Thread(target=self._copy, args=(child.stdout,), daemon=True)
        self.thread.start()

    def _copy(self, stream) -> None:
        for line in stream:
            sys.stderr.write(line)
            sys.stderr.flush()
            if not self.connected and (match := NODE_ID_LINE.search(line)):
                self.connected = True
                log.info("connected to SuperLink %s (node id %s)", self.address, match[1])
            if match := EXIT_CODE_LINE.search(line):
                self.flower_code = int(match[1])

    def drain(self, seconds: float = 2.0) -> None:
        """Give the lines written before the SuperNode exited time to be read."""
        self.thread.join(timeout=seconds)


def supervise(
    cmd: list[str],
    env: dict[str, str],
    address: str,
    key_registered: Callable[[], str],
    backoff: tuple[float, ...] = BACKOFF_SECONDS,
    max_retries: int = MAX_ACTIVATION_RETRIES,
) -> int:
    """Run ``cmd`` until it exits for good; its exit code. ``key_registered`` raises
    ``NodeCheckError`` with the reason when the node key is not registered or the SuperLink is not
    reachable (``node_check.check_superlink``); SIGTERM/SIGINT go to the child, which then ends."""
    child: subprocess.Popen | None = None
    stopping = False

    def forward(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    attempt = 0
    while True:
        child = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            preexec_fn=die_with_parent,
        )
        relay = Relay(child, address)
        code = child.wait()
        relay.drain()
        if stopping or relay.connected or relay.flower_code != ACTIVATION_REFUSED or attempt >= max_retries:
            return code
        try:
            key_registered()
        except check.NodeCheckError as err:
            log.error("SuperLink %s did not activate this node: %s", address, err)
            return code
        wait = backoff[min(attempt, len(backoff) - 1)]
        log.warning(
            "SuperLink %s did not activate this node: the previous node is still registered until its "
            "heartbeat expires; retrying in %.0f s",
            address,
            wait,
        )
        time.sleep(wait)
        if stopping:  # stopped while waiting: no new node
            return code
        attempt += 1

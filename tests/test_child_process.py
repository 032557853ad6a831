"""``die_with_parent``: a child started with it ends when its parent is killed with SIGKILL, one
started without it lives on (the orphaned SuperNode or SuperLink the daemon and coordinator avoid)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARENT = """
import subprocess, sys
from common.child_process import die_with_parent
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(120)"],
    preexec_fn=die_with_parent if sys.argv[1] == "with" else None,
)
print(child.pid, flush=True)
child.wait()
"""


def alive(pid: int) -> bool:
    """Running, not gone and not a zombie waiting for a reaper."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
@pytest.mark.parametrize(("mode", "survives"), [("with", False), ("without", True)])
def test_a_child_dies_with_its_killed_parent_only_with_die_with_parent(mode: str, survives: bool) -> None:
    root = Path(__file__).resolve().parents[1]
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode],
        cwd=root,
        env=os.environ | {"PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(parent.stdout.readline())
    try:
        assert alive(child)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + (1 if survives else 10)  # SIGTERM comes at once
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive(child) == survives
    finally:
        parent.stdout.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)

"""Fixtures of the deployment tests (helpers live in ``deploy_helpers``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from experiments.local_pilot import Processes


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Processes started by the test; all stopped by PID at teardown, also on failure."""
    processes = Processes(tmp_path)
    try:
        yield processes
    finally:
        processes.stop_all()

"""Send a simulation's Flower/Ray output to a log file, keeping a handle on the terminal.

One home for the fd and logger juggling that both the experiment runner
(``experiments.run_simulated``) and the benchmarks (``experiments._simulate``) need.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


@contextlib.contextmanager
def redirect_output(log_path: Path, *, root_logging: bool) -> Iterator[TextIO]:
    """Send fds 1/2 (Flower, Ray, its workers) and the ``flwr`` logger to ``log_path``; yield the
    real stderr. ``root_logging``: the root logger's records go there too; the runner leaves it
    off so that its own (Hydra-configured) log lines stay where Hydra sends them."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_err), "w", buffering=1)
    flwr_logger = logging.getLogger("flwr")
    saved_handlers, saved_propagate = list(flwr_logger.handlers), flwr_logger.propagate
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved_root = list(root.handlers)
    with open(log_path, "a") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        flwr_logger.handlers, flwr_logger.propagate = [handler], False
        if root_logging:
            root.handlers = [handler]
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            flwr_logger.handlers, flwr_logger.propagate = saved_handlers, saved_propagate
            if root_logging:
                root.handlers = saved_root
            handler.close()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()

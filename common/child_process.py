"""A child process that dies with its parent: what the hospital daemon and the coordinator share.

Both run a Flower process as their child (``flower-supernode``, ``flower-superlink``) and must not
leave it running when they die, even by SIGKILL: an orphaned SuperNode would keep holding the
hospital's node key and answering for it. This lives in ``he/`` because it is the one package both
``client/`` and ``server/`` may import; it knows nothing of the protocol.
"""

from __future__ import annotations

import contextlib
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: this process gets SIGTERM when its parent dies (``preexec_fn`` of ``subprocess.Popen``).

    Elsewhere, or if libc cannot be loaded, nothing happens: the parent's own SIGTERM handler still
    passes a normal stop on.
    """
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

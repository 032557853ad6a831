"""A Flower message as the coordinator sends it, for tests that hand it to the real ClientApp.

Shared by ``tests/client`` and ``tests/deployment`` (this directory is on ``sys.path`` through
``tests/conftest.py``), so the metadata every hand-built message needs is written once; the
content is the strategies' own ``make_content``.
"""

from __future__ import annotations

import time

import numpy as np
from flwr.app import Message, Metadata
from flwr.common.constant import SUPERLINK_NODE_ID

from strategies.messaging import make_content

HOSPITAL_NODE_ID = 7  # the node id of the tests' hospital contexts
TTL_SECONDS = 600.0


def message_for(
    message_type: str,
    config: dict,
    *,
    blobs: dict[str, bytes] | None = None,
    arrays: list[np.ndarray] | None = None,
    run_id: int = 1,
    group_id: str = "",
    dst_node_id: int = HOSPITAL_NODE_ID,
    message_id: str | None = None,
) -> Message:
    """A ``message_type`` message of Flower run ``run_id`` carrying ``config`` (and ``blobs``,
    ``arrays``) to node ``dst_node_id``; a fresh message id unless ``message_id`` is given."""
    metadata = Metadata(
        run_id=run_id,
        message_id=message_id or f"m-{time.monotonic_ns()}",
        src_node_id=SUPERLINK_NODE_ID,
        dst_node_id=dst_node_id,
        reply_to_message_id="",
        group_id=group_id,
        created_at=time.time(),
        ttl=TTL_SECONDS,
        message_type=message_type,
    )
    return Message(metadata=metadata, content=make_content(config, blobs, arrays))

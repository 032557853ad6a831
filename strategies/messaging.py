"""Pure helpers for building, sending and reading Flower messages (no strategy state)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from he import protocol as p

log = logging.getLogger(__name__)
POLL_SECONDS = 0.05


def blob_array(data: bytes) -> Array:
    return Array(dtype="uint8", shape=(len(data),), stype="raw-bytes", data=data)


def make_content(
    config: dict, blobs: dict[str, bytes] | None = None, arrays: list[np.ndarray] | None = None
) -> RecordDict:
    content = RecordDict({p.CONFIG: ConfigRecord(config)})
    if blobs:
        content[p.BLOBS] = ArrayRecord({name: blob_array(b) for name, b in blobs.items()})
    if arrays is not None:
        content[p.ARRAYS] = ArrayRecord([np.asarray(a) for a in arrays])
    return content


def blobs_of(message: Message) -> dict[str, bytes]:
    record = message.content.array_records.get(p.BLOBS)
    return {} if record is None else {name: bytes(a.data) for name, a in record.items()}


def metrics_of(message: Message) -> dict:
    record = message.content.metric_records.get(p.METRICS)
    return {} if record is None else dict(record)


def content_bytes(content: RecordDict) -> int:
    """Approximate wire size of a message's content: its arrays' bytes."""
    return sum(len(a.data) for record in content.array_records.values() for a in record.values())


def stream_replies(grid: Grid, messages: list[Message], timeout: float) -> Iterator[Message]:
    """Yield replies as they arrive (so they can be summed one by one), until all or timeout."""
    ids = [mid for mid in grid.push_messages(messages) if mid]
    pending = set(ids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        got = list(grid.pull_messages(list(pending)))
        for reply in got:
            pending.discard(reply.metadata.reply_to_message_id)
            yield reply
        if not got:
            time.sleep(POLL_SECONDS)
    if pending:
        log.warning("%d node(s) did not reply within %.0f s", len(pending), timeout)


def failure_reason(reply: Message) -> str | None:
    if reply.has_error():
        return f"node {reply.metadata.src_node_id} failed: {reply.error.reason}"
    return None

"""Which hospitals take part: waiting for them to connect, and noting who replied in a round."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from flwr.app import Message
from flwr.serverapp import Grid

from strategies.messaging import NO_REPLY_CODES


def wait_for_nodes(grid: Grid, minimum: int, timeout: float, settle: float = 1.0) -> list[int]:
    """Node ids once at least ``minimum`` hospitals are connected and none joined for ``settle`` s."""
    deadline = time.monotonic() + timeout
    nodes, stable_since = [], time.monotonic()
    while time.monotonic() < deadline:
        current = sorted(grid.get_node_ids())
        if current != nodes:
            nodes, stable_since = current, time.monotonic()
        elif len(nodes) >= minimum and time.monotonic() - stable_since >= settle:
            break
        time.sleep(0.1)
    return nodes


def noting_senders(replies: Iterable[Message], answered: set[int], replied: set[int]) -> Iterator[Message]:
    """``replies`` unchanged, adding each sender that is alive to ``replied`` and, if its reply is
    not an error, to ``answered``. A hospital whose training failed or was refused replied (it is
    online); the SuperLink's "node/message unavailable" errors stand in for a silent one."""
    for reply in replies:
        if reply.has_error() and reply.error.code in NO_REPLY_CODES:
            yield reply
            continue
        replied.add(int(reply.metadata.src_node_id))
        if not reply.has_error():
            answered.add(int(reply.metadata.src_node_id))
        yield reply

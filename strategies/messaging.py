"""Pure helpers for building, sending and reading Flower messages (no strategy state)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from common.records import blob_array
from common.sender_name import split_sender
from he import protocol as p

log = logging.getLogger(__name__)
POLL_SECONDS = 0.05
# the SuperLink's own error replies for a node that is gone (no heartbeat) or a message that expired:
# the hospital said nothing
NO_REPLY_CODES = frozenset(
    {ErrorCode.NODE_UNAVAILABLE, ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE}
)


def make_content(
    config: dict, blobs: dict[str, bytes] | None = None, arrays: list[np.ndarray] | None = None
) -> RecordDict:
    content = RecordDict({p.CONFIG: ConfigRecord(config)})
    if blobs:
        content[p.BLOBS] = ArrayRecord({name: blob_array(b) for name, b in blobs.items()})
    if arrays is not None:
        content[p.ARRAYS] = ArrayRecord([np.asarray(a) for a in arrays])
    return content


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


# how Flower words a ClientApp's exception in an error reply: "<class 'T'>:<'message'>", the
# message itself sometimes prefixed by Flower's ClientAppException wrapper (in simulation also
# by the Ray actor's traceback: everything up to the last wrapper goes)
FLOWER_EXCEPTION = re.compile(r"^<class '[\w.()]+'>:<'(?P<message>.*)'>$", re.DOTALL)
CLIENT_APP_WRAPPER = re.compile(r"^.*Exception ClientAppException occurred\. Message:\s*", re.DOTALL)


def error_text(reply: Message) -> str | None:
    """The text of an error reply without Flower's wrapping; None for a successful reply."""
    if not reply.has_error():
        return None
    reason = str(reply.error.reason).strip()
    while (match := FLOWER_EXCEPTION.match(reason)) is not None:
        reason = CLIENT_APP_WRAPPER.sub("", match["message"]).strip()
    return " ".join(reason.split()) or f"error code {reply.error.code}"


def hospital_reason(reply: Message) -> str | None:
    """The hospital's own words in an error reply (its policy key, the app hash it refused),
    without Flower's wrapping and the name it gives itself; None for a successful reply."""
    text = error_text(reply)
    return None if text is None else split_sender(text)[1]


def claimed_sender(reply: Message) -> str | None:
    """The name a hospital gives itself in an error reply (``common.sender_name``), unverified."""
    text = error_text(reply)
    return None if text is None else split_sender(text)[0]


class Refusals:
    """The error replies of one phase by hospital, so that a phase failing for lack of replies
    says who refused and why in one line, instead of only how many replied."""

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}

    def add(self, hospital: str, reply: Message) -> None:
        self.reasons[hospital] = hospital_reason(reply) or "no reason given"

    def summary(self, phase: str, asked: int) -> str:
        """``"set-up failed: 4 of 4 hospitals refused: hospital-a (policy ...), ..."``."""
        named = ", ".join(f"{name} ({why})" for name, why in sorted(self.reasons.items()))
        return f"{phase} failed: {len(self.reasons)} of {asked} hospitals refused: {named}"

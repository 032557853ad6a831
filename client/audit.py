"""The hospital's audit log: one JSON line per message its ClientApp handles.

``audit_mod`` is a Flower client mod (``ClientApp(mods=[audit_mod])``). When the node config has
a ``state-dir`` (deployment: set by ``python -m client.daemon``), every message handled appends
one line to ``<state-dir>/audit.jsonl`` (file mode 0600):

* ``ts``, ``hospital`` (this site's roster name), ``node_id``, ``run_id`` (ids as strings),
  ``message_id``, ``group_id`` (the round, ``setup`` or ``final``), ``message_type``,
  ``seconds`` spent;
* ``received``: byte count of the arrays the server sent and the server's configuration
  values (public task settings, round number, contributor list; a list of more than
  ``MAX_LISTED_VALUES`` numbers, such as the feature statistics, as its length and digest);
* ``sent`` (what left the hospital): for every array or blob its record, name, dtype, shape,
  size in bytes and SHA-256 digest; every metric name and value; every config value;
* ``own_metrics``: the hospital's own test metrics of that message (loss, accuracy, AUC, test
  size), with ``left_site`` 0 unless the run opted into per-hospital plaintext -- its staff
  see them here, and ``sent`` shows they did not leave;
* ``outcome``: ``replied``, ``refused`` (the hospital declined: its policy, an unapproved app,
  a second decryption of a round) or ``error``, with the ``reason`` for the last two.

``python -m client.daemon audit`` (or ``python -m client.audit summary``; ``client.audit_summary``)
prints it per run for a data protection officer, and writes it as HTML with ``--html PATH``.

What is never logged: the node's run state (``context.state``: secret key shares, pairwise
keys), array contents (only digests), and the hospital's data. Replies never carry secret
material in the first place; digests let an auditor match what left the site with what the
server received. Without ``state-dir`` (e.g. in simulation) the mod does nothing.

If the log cannot be opened the message is not processed (fail closed): a hospital that
promised an audit trail must not answer unaudited.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from client.audit_file import AUDIT_FILE
from client.refusals import RefusedRequest
from he.roster import NODE_HOSPITAL

STATE_DIR_KEY = "state-dir"
FILE_MODE = 0o600
MAX_LISTED_VALUES = 8  # longer lists (feature statistics) are logged as length + digest


class AuditLogError(RuntimeError):
    """The audit log cannot be written; the message is not processed."""


OWN_METRICS = "own-metrics"  # run-state record a handler leaves for this message's audit line


def audit_path(node_config: dict) -> Path | None:
    """``<state-dir>/audit.jsonl``, or ``None`` when the node config has no ``state-dir``."""
    state_dir = node_config.get(STATE_DIR_KEY)
    return None if state_dir in (None, "") else Path(str(state_dir)) / AUDIT_FILE


def open_audit_log(path: Path) -> int:
    """Open ``path`` for appending with mode 0600 (tightened if it was wider); return the fd."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    except OSError as err:
        raise AuditLogError(
            f"audit log {path} cannot be opened for appending ({err.strerror}); expected a writable "
            f"'{STATE_DIR_KEY}' directory in the node config"
        ) from err
    if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
        os.fchmod(fd, FILE_MODE)
    return fd


def append_line(fd: int, entry: dict) -> None:
    line = (json.dumps(entry, sort_keys=True, allow_nan=False, default=str) + "\n").encode()
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        os.write(fd, line)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _scalar(value: Any) -> Any:
    """A JSON-safe rendering of a record value; bytes only as size and digest."""
    if isinstance(value, bytes):
        return {"bytes": len(value), "sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        if len(value) > MAX_LISTED_VALUES:  # e.g. the 60 feature statistics of every message
            return {"values": len(value), "sha256": hashlib.sha256(json.dumps(value).encode()).hexdigest()}
        return [_scalar(v) for v in value]
    return value


def describe_arrays(content: RecordDict) -> list[dict]:
    """Name, dtype, shape, size and SHA-256 of every array in every ArrayRecord."""
    out = []
    for record_name, record in content.array_records.items():
        for name, array in record.items():
            data = bytes(array.data)
            out.append(
                {
                    "record": record_name,
                    "name": name,
                    "dtype": array.dtype,
                    "shape": list(array.shape),
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
    return out


def describe_values(records: dict) -> dict:
    """``{record: {key: value}}`` of Metric/Config records (bytes as size + digest)."""
    return {name: {k: _scalar(v) for k, v in record.items()} for name, record in records.items()}


def describe_received(message: Message) -> dict:
    content = message.content
    return {
        "array_bytes": sum(len(a.data) for r in content.array_records.values() for a in r.values()),
        "config": describe_values(content.config_records),
    }


def describe_sent(reply: Message) -> dict:
    if reply.has_error():
        return {}
    content = reply.content
    return {
        "arrays": describe_arrays(content),
        "metrics": describe_values(content.metric_records),
        "config": describe_values(content.config_records),
    }


def message_entry(message: Message, context: Context) -> dict[str, Any]:
    """The audit line's header: when, which run, node, hospital and message, what was received.

    Ids are strings: 64-bit integers lose digits in JSON tools such as jq 1.6, and then no
    longer match MLflow's ``flower_run_id`` tag. ``hospital`` is the roster name, which stays
    the same across runs (a party index may not).
    """
    meta = message.metadata
    node_config = dict(context.node_config)
    return {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "hospital": str(node_config.get(NODE_HOSPITAL, "")),
        "node_id": str(context.node_id),
        "run_id": str(meta.run_id),
        "message_id": meta.message_id,
        "group_id": meta.group_id,
        "message_type": meta.message_type,
        "received": describe_received(message),
    }


def record_refusal(message: Message, context: Context, reason: str) -> None:
    """An audit line for a message refused before any handler ran (``client.launcher``)."""
    path = audit_path(dict(context.node_config))
    if path is None:
        return
    fd = open_audit_log(path)
    try:
        entry = message_entry(message, context) | {"outcome": "refused", "reason": reason, "sent": {}}
        append_line(fd, entry | {"seconds": 0.0})
    finally:
        os.close(fd)


def audit_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower client mod: handle ``message`` and append its audit line (see module docstring)."""
    path = audit_path(dict(context.node_config))
    if path is None:
        return call_next(message, context)
    fd = open_audit_log(path)
    try:
        entry = message_entry(message, context)
        started = time.perf_counter()
        try:
            reply = call_next(message, context)
        except RefusedRequest as err:
            entry |= {"outcome": "refused", "reason": str(err), "sent": {}}
            raise
        except Exception as err:
            entry |= {"outcome": "error", "reason": f"{type(err).__name__}: {err}", "sent": {}}
            raise
        else:
            if reply.has_error():
                entry |= {"outcome": "error", "reason": reply.error.reason}
            else:
                entry["outcome"] = "replied"
            entry["sent"] = describe_sent(reply)
            kept = context.state.metric_records.get(OWN_METRICS)
            if kept is not None:  # this site's own evaluation (client.app.own_metrics), for its staff
                entry["own_metrics"] = {k: _scalar(v) for k, v in kept.items()}
                del context.state[OWN_METRICS]
            return reply
        finally:
            entry["seconds"] = round(time.perf_counter() - started, 3)
            append_line(fd, entry)
    finally:
        os.close(fd)


if __name__ == "__main__":
    import sys

    from client.audit_summary import main as summary_main

    if sys.argv[1:2] != ["summary"]:
        sys.exit(
            "usage: python -m client.audit summary [--run ID] (--state-dir DIR | --log FILE) [--html PATH]"
        )
    sys.exit(summary_main(sys.argv[2:], prog="python -m client.audit summary"))

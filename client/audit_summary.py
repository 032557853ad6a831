"""``python -m client.audit summary [--run ID] [--state-dir DIR | --log FILE]``: the audit log for
a data protection officer.

Per run: one row per message (time, round, request, outcome, what left the site and whether it
was encrypted, bytes sent), then the totals and every refusal or error with its reason. "What
left" is read from the ``sent`` part of each line (``client.audit``): arrays in the ``blobs``
record are ciphertexts, decryption shares or signed statements; arrays in the ``arrays`` record
are plaintext model values (a plaintext run); metrics are plaintext numbers, named here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from client.audit import AUDIT_FILE

PLAINTEXT_RECORD = "arrays"


def read_entries(path: Path) -> list[dict]:
    """The log's lines; a line that is not JSON is an error naming its number."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {number} is not JSON: {err.msg}") from None
    return entries


def what_left(entry: dict) -> tuple[str, int]:
    """A short description of what the hospital sent for this message, and its size in bytes."""
    sent = entry.get("sent") or {}
    arrays = sent.get("arrays") or []
    size = sum(int(a.get("bytes", 0)) for a in arrays)
    plaintext = [a for a in arrays if a.get("record") == PLAINTEXT_RECORD]
    metrics = sorted(k for record in (sent.get("metrics") or {}).values() for k in record)
    parts = []
    if plaintext:
        parts.append(f"PLAINTEXT arrays ({len(plaintext)})")
    encrypted = sorted({a["name"].rstrip("0123456789-") for a in arrays if a not in plaintext})
    if encrypted:
        parts.append("encrypted/signed: " + ",".join(encrypted))
    if metrics:
        parts.append("plaintext metrics: " + ",".join(metrics))
    return ("; ".join(parts) or "nothing"), size


def summarize(entries: list[dict], run_id: str | None = None) -> str:
    """The report text (see module docstring)."""
    runs: dict[str, list[dict]] = {}
    for entry in entries:
        runs.setdefault(str(entry.get("run_id")), []).append(entry)
    if run_id is not None:
        if run_id not in runs:
            return f"no messages of run {run_id} (runs in this log: {sorted(runs)})"
        runs = {run_id: runs[run_id]}
    out = []
    for rid, items in runs.items():
        hospital = next((e["hospital"] for e in items if e.get("hospital")), "?")
        out.append(f"run {rid} at {hospital}: {len(items)} message(s), {items[0]['ts']} .. {items[-1]['ts']}")
        total, plaintext = 0, False
        for e in items:
            what, size = what_left(e)
            total += size
            plaintext |= "PLAINTEXT" in what
            out.append(
                f"  {e['ts']}  {e.get('group_id', ''):>6}  {e.get('message_type', ''):<17} "
                f"{e.get('outcome', '?'):<8} {size:>10} B  {what}"
            )
        outcomes = Counter(e.get("outcome", "?") for e in items)
        out.append(
            f"  total sent: {total} B; "
            + ("PLAINTEXT model values left the site" if plaintext else "no plaintext model values left")
            + "; outcomes: "
            + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        )
        for e in items:
            if e.get("outcome") in ("refused", "error"):
                where = f"{e.get('message_type')} ({e.get('group_id')})"
                out.append(f"  {e['outcome']}: {where}: {e.get('reason')}")
    return "\n".join(out) if out else "the audit log is empty"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m client.audit summary", description=__doc__.split("\n\n")[0])
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--state-dir", type=Path, help=f"the daemon's state dir (reads {AUDIT_FILE})")
    source.add_argument("--log", type=Path, help="an audit log file")
    ap.add_argument("--run", help="only this Flower run id")
    args = ap.parse_args(argv)
    path = args.log or args.state_dir / AUDIT_FILE
    try:
        print(summarize(read_entries(path), args.run))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0

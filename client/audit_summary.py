"""``python -m client.audit summary [--run ID] [--state-dir DIR | --log FILE]``: the audit log for
a data protection officer.

Per run: one row per message (time, round, request, outcome, what left the site and whether it
was encrypted, bytes sent), then the totals and every refusal or error with its reason. "What
left" is read from the ``sent`` part of each line (``client.audit``): arrays in the ``blobs``
record are ciphertexts, decryption shares or signed statements; arrays in the ``arrays`` record
are plaintext model values (a plaintext run); metrics are plaintext numbers, named here, and
the summary says plainly whether any of them were this hospital's own results (its loss,
accuracy, AUC, test-set size: a run with per-hospital plaintext) or only timings and flags.

With ``--state-dir`` it ends with the privacy budget: the ε each run spent under differential
privacy (the release ledger, ``client.ledger``), the total, and what the policy's
``lifetime_epsilon`` leaves (``<state-dir>/policy.toml``, or ``--policy``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from client.audit_file import AUDIT_FILE
from client.ledger import DP, LedgerError, ReleaseLedger
from client.policy import POLICY_FILE, Policy

PLAINTEXT_RECORD = "arrays"
OPERATIONAL_METRICS = {"encrypt_seconds", "decrypt_seconds", "ready", "tabular"}  # timings and flags


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


def sent_arrays(entry: dict) -> list[dict]:
    return (entry.get("sent") or {}).get("arrays") or []


def plaintext_arrays(entry: dict) -> list[dict]:
    return [a for a in sent_arrays(entry) if a.get("record") == PLAINTEXT_RECORD]


def sent_metric_names(entry: dict) -> set[str]:
    return {k for record in ((entry.get("sent") or {}).get("metrics") or {}).values() for k in record}


def what_left(entry: dict) -> tuple[str, int]:
    """A short description of what the hospital sent for this message, and its size in bytes."""
    arrays = sent_arrays(entry)
    size = sum(int(a.get("bytes", 0)) for a in arrays)
    plaintext = plaintext_arrays(entry)
    metrics = sorted(sent_metric_names(entry))
    parts = []
    if plaintext:
        parts.append(f"PLAINTEXT arrays ({len(plaintext)})")
    encrypted = sorted({a["name"].rstrip("0123456789-") for a in arrays if a not in plaintext})
    if encrypted:
        parts.append("encrypted/signed: " + ",".join(encrypted))
    if metrics:
        parts.append("plaintext metrics: " + ",".join(metrics))
    return ("; ".join(parts) or "nothing"), size


def in_the_clear(items: list[dict]) -> str:
    """What of a run left the site unencrypted, in plain words; never "no plaintext model values
    left" when the hospital's own results did."""
    plaintext = any(plaintext_arrays(e) for e in items)
    numbers = set().union(*(sent_metric_names(e) for e in items))
    own = sorted(numbers - OPERATIONAL_METRICS)
    parts = ["PLAINTEXT model values left the site"] if plaintext else []
    if own:
        parts.append("this hospital's own results left in the clear: " + ",".join(own))
    if not parts:
        flags = f" (in the clear only timings and flags: {','.join(sorted(numbers))})" if numbers else ""
        parts.append("no plaintext model values left" + flags)
    return "; ".join(parts)


def budget_report(ledger: ReleaseLedger, policy: Policy) -> str:
    """The ε each run spent under DP, the lifetime total and what the policy leaves."""
    last: dict[str, dict] = {}
    for record in ledger.records(DP):
        last[str(record["run"])] = record
    out = ["privacy budget (differential privacy, from this hospital's release ledger):"]
    for run, record in last.items():
        out.append(
            f"  run {run}: epsilon {float(record['epsilon']):.4g} (delta {record['delta']}) "
            f"after round {record['round']}"
        )
    spent = ledger.epsilon_spent()
    left = max(policy.lifetime_epsilon - spent, 0.0)
    out.append(
        f"  spent in all runs: epsilon {spent:.4g} of the lifetime budget {policy.lifetime_epsilon:g} "
        f"(policy lifetime_epsilon); left: {left:.4g}"
    )
    if not last:
        out.append("  no run has trained under differential privacy here yet")
    return "\n".join(out)


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
        total = 0
        for e in items:
            what, size = what_left(e)
            total += size
            out.append(
                f"  {e['ts']}  {e.get('group_id', ''):>6}  {e.get('message_type', ''):<17} "
                f"{e.get('outcome', '?'):<8} {size:>10} B  {what}"
            )
        outcomes = Counter(e.get("outcome", "?") for e in items)
        out.append(
            f"  total sent: {total} B; {in_the_clear(items)}; outcomes: "
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
    ap.add_argument("--policy", type=Path, help=f"the policy TOML (default: <state-dir>/{POLICY_FILE})")
    args = ap.parse_args(argv)
    path = args.log or args.state_dir / AUDIT_FILE
    try:
        print(summarize(read_entries(path), args.run))
        if args.state_dir is None:
            print("privacy budget: not shown (give --state-dir: the release ledger lives there)")
        else:
            policy = Policy.load(args.policy or args.state_dir / POLICY_FILE)
            print(budget_report(ReleaseLedger.in_state_dir(args.state_dir), policy))
    except (OSError, ValueError, LedgerError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0

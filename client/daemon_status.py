"""The daemon's ``status`` subcommand: what this hospital's own files in the state dir say (policy,
approved apps, the last audit lines, the release ledger), read without the network or the daemon."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from client import approval
from client import node_check as check
from client.audit import AUDIT_FILE
from client.audit_summary import read_entries
from client.ledger import LedgerError, ReleaseLedger
from client.policy import POLICY_FILE, Policy

STATUS_AUDIT_LINES = 5


def status_lines(state_dir: Path, policy_path: Path | None = None) -> list[str]:
    """What this hospital's own files say: policy, approved apps, the last audit lines, the release
    ledger. Raises ``NodeCheckError`` if the state dir is missing or a file cannot be trusted."""
    if not state_dir.is_dir():
        raise check.NodeCheckError(
            f"state dir {state_dir} does not exist (expected the daemon's --state-dir)"
        )
    policy_path = policy_path or state_dir / POLICY_FILE
    try:
        policy = Policy.load(policy_path)
        ledger = ReleaseLedger.in_state_dir(state_dir)
        records, spent = len(ledger.records()), ledger.epsilon_spent()
        audit = state_dir / AUDIT_FILE
        entries = read_entries(audit) if audit.exists() else []
    except LedgerError as err:  # its text names the file only (it may reach the coordinator)
        raise check.NodeCheckError(f"{ledger.path}: {err}") from None
    except (ValueError, OSError) as err:  # PolicyError and a non-JSON audit line: ValueError
        raise check.NodeCheckError(str(err)) from None
    source = policy_path if policy_path.exists() else f"defaults ({policy_path} does not exist)"
    approved = sorted(approval.approved_hashes(state_dir))
    out = [f"state dir: {state_dir}", f"policy: {source}: {policy}"]
    out.append(f"approved apps ({approval.APPROVALS_FILE}): " + (", ".join(approved) or "none"))
    last = entries[-STATUS_AUDIT_LINES:]
    out.append(f"audit log {audit}: {len(entries)} line(s); the last {len(last)}:")
    out += [
        f"  {e.get('ts', '?')}  run {e.get('run_id', '?')}  {e.get('message_type', '?')}  "
        f"outcome {e.get('outcome', '?')}"
        for e in last
    ]
    out.append(f"release ledger {ledger.path}: {records} record(s), epsilon spent {spent:.4g}")
    out.append(
        "daemon connection: no daemon log in the state dir (the daemon logs 'connected to SuperLink' "
        "to its console: journalctl -u fedquorum-node)"
    )
    return out


def status_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m client.daemon status",
        description="Show, from this hospital's own files only, the policy in force, the approved apps, "
        "the last audit lines and the release ledger.",
    )
    ap.add_argument("--state-dir", type=Path, required=True, help="the daemon's state dir")
    ap.add_argument("--policy", type=Path, help=f"the policy TOML (default: <state-dir>/{POLICY_FILE})")
    args = ap.parse_args(argv)
    try:
        lines = status_lines(args.state_dir.expanduser().absolute(), args.policy)
    except check.NodeCheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0

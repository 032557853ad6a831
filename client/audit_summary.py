"""``python -m client.daemon audit [--run ID] (--state-dir DIR | --log FILE) [--html PATH]``: the
audit log for a data protection officer (also ``python -m client.audit summary``).

A legend, then per run: the settings the server sent (encrypted, per-hospital plaintext metrics,
differential privacy, rounds), a table of every message (time, step in words such as "training
round 3" or "final evaluation", what was asked, outcome, bytes received and sent, what left and
how), the totals by kind, every refusal or error with its reason, and the bottom line: exactly
what left in the clear and how many bytes, and the ε the run spent here when it trained with DP
(``client.audit_report``). ``--html PATH`` also writes the same report as one HTML page
(``client.audit_html``, mode 0600).

With ``--state-dir`` it ends with the privacy budget: the ε each run spent under differential
privacy (the release ledger, ``client.ledger``), the total, and what the policy's
``lifetime_epsilon`` leaves (``<state-dir>/policy.toml``, or ``--policy``). A line of the log
that cannot be read is named and left out; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from client.audit_file import AUDIT_FILE
from client.audit_html import write_html
from client.audit_report import (
    LEGEND,
    AuditLog,
    Budget,
    RunReport,
    no_runs,
    read_entries,
    read_log,
    run_reports,
)
from client.ledger import LedgerError, ReleaseLedger
from client.policy import POLICY_FILE, Policy

__all__ = ["budget_report", "main", "read_entries", "render", "summarize"]

COLUMNS = ("time (UTC)", "step", "request", "outcome", "received B", "sent B", "what left")
NUMERIC = {"received B", "sent B"}


def table(rows: list[tuple[str, ...]], indent: str = "  ") -> list[str]:
    """Rows under ``COLUMNS``, every column as wide as its widest cell, numbers right-aligned."""
    cells = [COLUMNS, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    out = []
    for row in cells:
        padded = [
            cell.rjust(width) if name in NUMERIC else cell.ljust(width)
            for name, cell, width in zip(COLUMNS, row, widths, strict=True)
        ]
        out.append((indent + "  ".join(padded)).rstrip())
    return out


def render_run(run: RunReport) -> list[str]:
    out = [
        f"Run {run.run_id} at {run.hospital}: {len(run.rows)} message(s), {run.first} to {run.last} UTC",
        f"  Settings the server sent: {run.settings}",
    ]
    out += table(
        [
            (r.time, r.step, r.request, r.outcome, f"{r.received:,}", f"{r.sent:,}", r.what_left)
            for r in run.rows
        ]
    )
    out.append(f"  {run.totals} {run.outcome_words()}")
    failed = [r for r in run.rows if r.reason is not None]
    if failed:
        out.append("  Refused or failed:")
        out += [f"    {r.time}  {r.step}: {r.outcome}: {r.reason}" for r in failed]
    out.append("  Bottom line:")
    out += [f"    {line}" for line in run.bottom_line]
    return out


def render(log: AuditLog, runs: list[RunReport], source: str, run_id: str | None = None) -> str:
    """The whole text report: title, legend, unreadable lines, then each run."""
    out = [f"Audit summary: what this hospital received and sent, per run ({source})", "", "Legend:"]
    width = max(len(term) for term, _ in LEGEND)
    out += [f"  {term.ljust(width)}  {meaning}" for term, meaning in LEGEND]
    if log.problems:
        out += ["", f"WARNING: {len(log.problems)} line(s) of the log could not be read; left out below:"]
        out += [f"  {problem}" for problem in log.problems]
    for run in runs:
        out += ["", *render_run(run)]
    if not runs:
        out.append("")
        out.append(no_runs(log, run_id))
    return "\n".join(out)


def summarize(entries: list, run_id: str | None = None, budget: Budget | None = None) -> str:
    """The text report of already parsed lines (those without the audit line's shape are named)."""
    log = AuditLog()
    for number, entry in enumerate(entries, start=1):
        log.add(f"entry {number}", entry)
    return render(log, run_reports(log.entries, run_id, budget), "given lines", run_id)


def budget_report(ledger: ReleaseLedger, policy: Policy) -> str:
    """The ε each run spent under DP, the lifetime total and what the policy leaves."""
    budget = Budget.of(ledger, policy.lifetime_epsilon)
    out = ["Privacy budget (differential privacy, from this hospital's release ledger):"]
    for run, record in budget.last_by_run.items():
        out.append(
            f"  run {run}: epsilon {float(record['epsilon']):.4g} (delta {record['delta']}) "
            f"after round {record['round']}"
        )
    left = max(policy.lifetime_epsilon - budget.spent, 0.0)
    out.append(
        f"  spent in all runs: epsilon {budget.spent:.4g} of the lifetime budget {policy.lifetime_epsilon:g} "
        f"(policy lifetime_epsilon); left: {left:.4g}"
    )
    if not budget.last_by_run:
        out.append("  no run has trained under differential privacy here yet")
    return "\n".join(out)


def main(argv: list[str], prog: str = "python -m client.daemon audit") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--state-dir", type=Path, help=f"the daemon's state dir (reads {AUDIT_FILE})")
    source.add_argument("--log", type=Path, help="an audit log file")
    ap.add_argument("--run", help="only this Flower run id")
    ap.add_argument("--policy", type=Path, help=f"the policy TOML (default: <state-dir>/{POLICY_FILE})")
    ap.add_argument("--html", type=Path, help="also write the report as an HTML page to this file (mode 600)")
    args = ap.parse_args(argv)
    path = args.log or args.state_dir / AUDIT_FILE
    try:
        log = read_log(path)
        budget, budget_text = (
            None,
            "Privacy budget: not shown (give --state-dir: the release ledger lives there)",
        )
        if args.state_dir is not None:
            policy = Policy.load(args.policy or args.state_dir / POLICY_FILE)
            ledger = ReleaseLedger.in_state_dir(args.state_dir)
            budget, budget_text = Budget.of(ledger, policy.lifetime_epsilon), budget_report(ledger, policy)
        runs = run_reports(log.entries, args.run, budget)
        print(render(log, runs, str(path), args.run))
        print()
        print(budget_text)
        if args.html is not None:
            write_html(args.html, log, runs, str(path), budget_text, args.run)
            print(f"\nHTML report written to {args.html}")
    except (OSError, ValueError, LedgerError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if log.problems else 0

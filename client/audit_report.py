"""The audit log as a report per run: the rows, the totals and a bottom line that is true.

Built once from the log (``client.audit``) and the release ledger (``client.ledger``), then
written as text (``client.audit_summary``) or HTML (``client.audit_html``), so both say the
same. The bottom line names exactly what left the hospital in the clear, with its size: its
own test results when the run enabled per-hospital plaintext, a plaintext run's model values,
and otherwise only timings and status flags; and the ε a DP run spent here. A line of the log
that cannot be read is reported by number and left out, never a reason to print nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from client import audit_labels as words
from client.ledger import DP, ReleaseLedger
from common import protocol as p
from privacy.config import KEYS as DP_KEYS

LEGEND = (  # (term, meaning), in the order the report uses them
    ("received B", "bytes of arrays the coordinator sent (the model, sums to decrypt); settings not counted"),
    ("sent B", "bytes this hospital sent, every item counted"),
    (
        "ciphertext",
        "values encrypted under this hospital's key for this run; only pooled sums of several "
        "hospitals are ever decrypted, by a quorum of keyholders",
    ),
    (
        "decryption share",
        "this hospital's part, as keyholder, of decrypting a pooled sum; masked and "
        "noised: alone it reveals nothing, with a quorum's shares only the pooled sum",
    ),
    ("sealed key share", "a piece of this hospital's run key, encrypted to one other keyholder"),
    (
        "signed statement",
        "a signed hello, dealing or contribution: public keys and digests; readable "
        "by the coordinator, no patient data",
    ),
    ("complaint list", "the hospitals whose dealt key share failed this keyholder's check; readable"),
    ("software versions", "the fedquorum and Flower versions this hospital runs; readable"),
    ("IN THE CLEAR", "values the coordinator can read as sent"),
    (
        "refused",
        "this hospital declined the request (its policy, an unapproved app, a second "
        "decryption); nothing was sent",
    ),
    ("error", "the request failed here; nothing was sent"),
    (
        "ε (epsilon)",
        "differential privacy: how much what is released can depend on any one hospital's "
        "data (smaller is more private); the hospital's policy caps it per run and for life",
    ),
)


@dataclass(frozen=True)
class Row:
    """One message of a run, in words."""

    time: str
    step: str
    request: str
    outcome: str
    received: int
    sent: int
    what_left: str
    reason: str | None


@dataclass
class RunReport:
    """One run at this hospital: its rows, totals and bottom line (sentences, in order)."""

    run_id: str
    hospital: str
    first: str
    last: str
    settings: str
    rows: list[Row] = field(default_factory=list)
    totals: str = ""
    bottom_line: list[str] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)

    def outcome_words(self) -> str:
        """``Outcomes: refused 1, replied 28.``"""
        return "Outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())) + "."


@dataclass(frozen=True)
class Budget:
    """The ledger's DP records, for the ε a run spent and the lifetime total."""

    last_by_run: dict[str, dict]
    spent: float
    lifetime: float

    @classmethod
    def of(cls, ledger: ReleaseLedger, lifetime: float) -> Budget:
        last = {str(r["run"]): r for r in ledger.records(DP)}
        return cls(last, ledger.epsilon_spent(), lifetime)


@dataclass
class AuditLog:
    """The readable lines of a log, and a problem (line number and why) for each other line."""

    entries: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, where: str, entry) -> None:
        """Keep ``entry`` if it has the audit line's shape, else note at ``where`` why not."""
        problem = entry_problem(entry)
        if problem is None:
            self.entries.append(entry)
        else:
            self.problems.append(f"{where}: {problem}")


def entry_problem(entry) -> str | None:
    """Why a parsed line cannot be summarized (not the shape ``client.audit`` writes), or None."""
    if not isinstance(entry, dict):
        return f"expected a JSON object, got {type(entry).__name__}"
    for key in ("run_id", "message_type", "ts"):
        if not isinstance(entry.get(key), str):
            return f"expected '{key}' as a string"
    received, sent = entry.get("received", {}), entry.get("sent", {})
    if not isinstance(received, dict) or not isinstance(received.get("config", {}), dict):
        return "expected 'received' as an object with a 'config' object"
    if not isinstance(received.get("array_bytes", 0), int):
        return "expected 'received.array_bytes' as a number of bytes"
    if not isinstance(sent, dict):
        return "expected 'sent' as an object"
    arrays = sent.get("arrays") or []
    if not isinstance(arrays, list) or not all(
        isinstance(a, dict) and isinstance(a.get("bytes"), int) for a in arrays
    ):
        return "expected 'sent.arrays' as a list of objects with 'bytes'"
    for section in ("metrics", "config"):
        records = sent.get(section) or {}
        if not isinstance(records, dict) or not all(isinstance(r, dict) for r in records.values()):
            return f"expected 'sent.{section}' as an object of records"
    return None


def read_log(path: Path) -> AuditLog:
    """Every line of the log that has the audit line's shape; the others as problems."""
    log = AuditLog()
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            log.add(f"line {number}", json.loads(line))
        except json.JSONDecodeError as err:
            log.problems.append(f"line {number}: not JSON ({err.msg})")
    return log


def read_entries(path: Path) -> list[dict]:
    """The log's lines, strictly: the first line that cannot be read is a ValueError naming it."""
    log = read_log(path)
    if log.problems:
        raise ValueError(f"{path} {log.problems[0]}")
    return log.entries


def printable(text: object) -> str:
    """``text`` with control characters escaped (``\\x1b``): a log line must not drive the
    terminal or the page that shows it."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def clock(ts: str) -> str:
    """``2026-11-27 21:51:35`` (UTC, as logged) from the line's ISO time stamp."""
    try:
        return datetime.fromisoformat(ts).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return printable(ts)


def run_settings(entries: list[dict], final_round: int | None) -> tuple[str, dict]:
    """What the run asked of this hospital, in words, and the server's values it is read from."""
    config: dict = {}
    for entry in entries:
        config = words.request_config(entry) | config  # the first message that says wins
    encrypted = config.get(p.ENCRYPTED)
    parts = [{True: "encrypted run", False: "PLAINTEXT run (model updates in the clear)"}.get(encrypted, "")]
    per_site = bool(config.get(p.PER_HOSPITAL_PLAINTEXT, False))
    parts.append(f"per-hospital plaintext metrics {'ON' if per_site else 'off'}")
    dp = config.get(DP_KEYS["dp"], "off")
    parts.append(f"differential privacy {dp}")
    if final_round is not None:
        parts.append(f"{final_round - 1} training round(s)")
    return "; ".join(x for x in parts if x), config


def privacy_line(run_id: str, config: dict, budget: Budget | None) -> str:
    """The ε this run spent here, and the lifetime total, when the run trained with DP."""
    dp = config.get(DP_KEYS["dp"], "off")
    if dp in ("off", None):
        return "Differential privacy: off in this run; no ε spent."
    if budget is None:
        return (
            f"Differential privacy: {dp}; the ε spent is not shown (give --state-dir: the release "
            "ledger lives there)."
        )
    record = budget.last_by_run.get(run_id)
    spent = (
        f"ε {float(record['epsilon']):.4g} spent in this run (δ {record['delta']}, by training round "
        f"{record['round']}, {record.get('mechanism', dp)})"
        if record
        else "no ε spent in this run (no DP round was charged here)"
    )
    left = max(budget.lifetime - budget.spent, 0.0)
    return (
        f"Differential privacy ({dp}): {spent}; all runs at this hospital: ε {budget.spent:.4g} of the "
        f"lifetime budget {budget.lifetime:g}, {left:.4g} left."
    )


def bottom_line(sent: list[words.Sent], config: dict) -> list[str]:
    """What left in the clear, exactly, with its size; and what did not."""
    lines = []
    for kind in words.CLEAR_ORDER:
        carrying = [s for s in sent if kind in s.clear]
        if not carrying:
            continue
        names = sorted(set().union(*(s.clear[kind] for s in carrying)))
        size = sum(s.clear_bytes[kind] for s in carrying)
        listed = "" if kind in words.ARRAY_KINDS else f" ({', '.join(names)})"
        why = ""
        if kind == words.OWN_RESULTS and config.get(p.PER_HOSPITAL_PLAINTEXT):
            why = ", because the run enabled per-hospital plaintext metrics"
        lines.append(f"IN THE CLEAR: {kind}{listed}, in {len(carrying)} message(s), {size:,} B{why}.")
    unrecognised = sorted({w for s in sent for w in s.unrecognised()})
    if unrecognised:
        lines.append(
            f"NOT RECOGNISED by this summary (check them): {', '.join(unrecognised)}; counted in the "
            "bytes sent, not as encrypted."
        )
    if not any(s.clear for s in sent):
        lines.append("Nothing left in the clear as numbers or arrays.")
    if not (words.ARRAY_KINDS | {words.OWN_RESULTS}) & {k for s in sent for k in s.clear}:
        lines.append(
            "No model update, feature statistic or test result of this hospital left in the clear; "
            "those it sent were encrypted (ciphertexts)."
        )
    protocol = sum(s.bytes_of(words.PROTOCOL) for s in sent)
    if protocol:
        lines.append(
            f"Readable by design: signed statements, complaint lists and software versions, {protocol:,} B "
            "(public keys, digests and protocol facts; no patient data)."
        )
    return lines


def totals_line(sent: list[words.Sent], received: int) -> str:
    """Bytes sent in the run, by kind of item, and bytes received."""
    by_item: Counter = Counter()
    for s in sent:
        for _, item, size in s.items:
            by_item[item] += size
        by_item["in the clear"] += sum(s.clear_bytes.values())
    total = sum(by_item.values())
    parts = ", ".join(f"{item} {size:,} B" for item, size in by_item.most_common() if size)
    return f"Sent {total:,} B ({parts or 'nothing'}); received {received:,} B."


def run_report(run_id: str, entries: list[dict], budget: Budget | None) -> RunReport:
    final_round = words.final_round_of(entries)
    settings, config = run_settings(entries, final_round)
    hospital = printable(next((e["hospital"] for e in entries if e.get("hospital")), "?"))
    first, last = clock(entries[0]["ts"]), clock(entries[-1]["ts"])
    report = RunReport(printable(run_id), hospital, first, last, printable(settings))
    sent = []
    for entry in entries:
        what = words.describe_sent(entry)
        sent.append(what)
        outcome = str(entry.get("outcome", "?"))
        report.outcomes[outcome] += 1
        reason = entry.get("reason") if outcome in ("refused", "error") else None
        report.rows.append(
            Row(
                clock(entry["ts"]),
                printable(words.step_label(entry, final_round)),
                printable(words.request_words(entry)),
                printable(outcome),
                int((entry.get("received") or {}).get("array_bytes", 0)),
                what.total,
                printable(what.words()),
                None if reason is None else printable(reason),
            )
        )
    received = sum(r.received for r in report.rows)
    report.totals = totals_line(sent, received)
    lines = [*bottom_line(sent, config), privacy_line(run_id, config, budget)]
    report.bottom_line = [printable(line) for line in lines]
    return report


def no_runs(log: AuditLog, run_id: str | None) -> str:
    """What to say when there is no run to show."""
    if run_id is None or not log.entries:
        return "No messages in this log."
    known = sorted({printable(e["run_id"]) for e in log.entries})
    return f"No messages of run {printable(run_id)} (runs in this log: {', '.join(known)})."


def run_reports(
    entries: list[dict], run_id: str | None = None, budget: Budget | None = None
) -> list[RunReport]:
    """A report per run in the log (or of ``run_id`` only), in the order the runs appear."""
    runs: dict[str, list[dict]] = {}
    for entry in entries:
        runs.setdefault(str(entry["run_id"]), []).append(entry)
    if run_id is not None:
        runs = {run_id: runs[run_id]} if run_id in runs else {}
    return [run_report(rid, items, budget) for rid, items in runs.items()]

"""The audit report as one HTML page, for a data protection officer to open or print.

The same report as the text summary (``client.audit_report``), with no script and no external
resource: one static file. Every string that comes from the log (run ids, hospital names, the
coordinator's request values, refusal reasons) is passed through ``html.escape``, because the
log records what a possibly hostile coordinator sent. The file is written with mode 0600, like
the log it summarizes (it names runs, and reasons may name local files).
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

from client.audit_report import LEGEND, AuditLog, RunReport, no_runs

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.refused td, tr.error td { background: #fde8e8; }
.clear { color: #a00; font-weight: bold; }
dt { font-weight: bold; } dd { margin: 0 0 0.4em 1.5em; }
"""
COLUMNS = ("time (UTC)", "step", "request", "outcome", "received (bytes)", "sent (bytes)", "what left")


def _cell(text: str, numeric: bool = False) -> str:
    attribute = ' class="n"' if numeric else ""
    return f"<td{attribute}>{escape(text)}</td>"


def _run(run: RunReport) -> list[str]:
    out = [
        f"<section><h2>Run {escape(run.run_id)} at {escape(run.hospital)}</h2>",
        f"<p>{len(run.rows)} message(s), {escape(run.first)} to {escape(run.last)} UTC.<br>"
        f"Settings the server sent: {escape(run.settings)}</p>",
        "<table><thead><tr>" + "".join(f"<th>{escape(c)}</th>" for c in COLUMNS) + "</tr></thead><tbody>",
    ]
    for r in run.rows:
        cells = [r.time, r.step, r.request, r.outcome]
        row = "".join(_cell(c) for c in cells) + _cell(f"{r.received:,}", True) + _cell(f"{r.sent:,}", True)
        out.append(f'<tr class="{escape(r.outcome)}">{row}{_cell(r.what_left)}</tr>')
    out.append("</tbody></table>")
    out.append(f"<p>{escape(run.totals)} {escape(run.outcome_words())}</p>")
    failed = [r for r in run.rows if r.reason is not None]
    if failed:
        out.append("<h3>Refused or failed</h3><ul>")
        out += [
            f"<li>{escape(r.time)} {escape(r.step)}: {escape(r.outcome)}: {escape(r.reason)}</li>"
            for r in failed
        ]
        out.append("</ul>")
    out.append("<h3>Bottom line</h3><ul>")
    for line in run.bottom_line:
        marked = ' class="clear"' if line.startswith(("IN THE CLEAR", "NOT RECOGNISED")) else ""
        out.append(f"<li{marked}>{escape(line)}</li>")
    out.append("</ul></section>")
    return out


def html_report(
    log: AuditLog, runs: list[RunReport], source: str, budget_text: str, run_id: str | None = None
) -> str:
    """The page: title, legend, unreadable lines, each run, the privacy budget."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Audit summary ({escape(source)})</title><style>{STYLE}</style></head><body>",
        f"<h1>Audit summary: what this hospital received and sent, per run</h1><p>{escape(source)}</p>",
        "<h2>Legend</h2><dl>",
    ]
    out += [f"<dt>{escape(term)}</dt><dd>{escape(meaning)}</dd>" for term, meaning in LEGEND]
    out.append("</dl>")
    if log.problems:
        out.append(
            f'<p class="clear">{len(log.problems)} line(s) of the log could not be read; left out:</p><ul>'
        )
        out += [f"<li>{escape(problem)}</li>" for problem in log.problems]
        out.append("</ul>")
    for run in runs:
        out += _run(run)
    if not runs:
        out.append(f"<p>{escape(no_runs(log, run_id))}</p>")
    out.append(f"<h2>Privacy budget</h2><pre>{escape(budget_text)}</pre></body></html>")
    return "\n".join(out) + "\n"


def write_html(
    path: Path, log: AuditLog, runs: list[RunReport], source: str, budget_text: str, run_id: str | None = None
) -> None:
    """Write the page to ``path`` (mode 0600, replaced whole: a reader never sees half a page)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(html_report(log, runs, source, budget_text, run_id))
    os.chmod(tmp, 0o600)
    tmp.replace(path)

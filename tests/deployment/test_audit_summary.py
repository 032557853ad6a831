"""The data protection officer's audit summary (``python -m client.daemon audit``): plain-word
labels for every step of a run, a bottom line that says exactly what left in the clear, the ε a
DP run spent, an HTML page that escapes what the log holds, and unreadable lines reported."""

from __future__ import annotations

import json
import stat
from html.parser import HTMLParser
from pathlib import Path

from client.audit_file import AUDIT_FILE
from client.audit_summary import main as summary_main
from client.audit_summary import summarize
from client.daemon import main as daemon_main
from client.ledger import DP, ReleaseLedger
from client.policy import POLICY_FILE
from common import protocol as p

RUN = "14599796495909030517"
CIPHERTEXT = 860_945  # one compact-preset update, as a 10-round run's log shows
SHARE = 860_247
STATEMENT = 310


def blob(name: str, size: int) -> dict:
    return {
        "record": p.BLOBS,
        "name": name,
        "dtype": "uint8",
        "shape": [size],
        "bytes": size,
        "sha256": "0" * 64,
    }


def line(
    message_type: str,
    group_id: str,
    config: dict | None = None,
    arrays: list[dict] | None = None,
    metrics: dict | None = None,
    run: str = RUN,
    hospital: str = "charite",
    outcome: str = "replied",
    reason: str | None = None,
) -> dict:
    """One audit line as ``client.audit`` writes it."""
    entry = {
        "ts": "2026-11-27T21:50:00.000+00:00",
        "hospital": hospital,
        "node_id": "7",
        "run_id": run,
        "message_id": "m-0",
        "group_id": group_id,
        "message_type": message_type,
        "seconds": 0.5,
        "received": {"array_bytes": 4744, "config": {"config": config or {}}},
        "outcome": outcome,
        "sent": {"arrays": arrays or [], "metrics": {"metrics": metrics} if metrics else {}, "config": {}}
        if outcome == "replied"
        else {},
    }
    return entry | ({"reason": reason} if reason else {})


def encrypted_run(
    rounds: int = 10, settings: dict | None = None, own: dict | None = None, **kw
) -> list[dict]:
    """The lines of an encrypted run of ``rounds`` rounds at one keyholder, in the order the
    coordinator sends them, with a second decryption attempt in round 3; ``own``: the metrics the
    hospital sent with its updates (per-hospital plaintext)."""
    task = {p.ENCRYPTED: True, p.PER_HOSPITAL_PLAINTEXT: False, "dp": "off"} | (settings or {})
    sent = {"encrypt_seconds": 0.09} | (own or {})
    update = [blob(p.UPDATE, CIPHERTEXT), blob(p.CONTRIBUTION, STATEMENT)]
    share = [blob(p.DECRYPTION_SHARE, SHARE)]
    out = [
        line(p.HELLO, "setup", task, [blob(p.HELLO_BLOB, 550), blob(p.SOFTWARE, 40)], **kw),
        line(p.DEAL, "setup", task, [blob(p.DEALING, 300), blob("sealed-share-2", 430_000)], **kw),
        line(p.DEALINGS, "setup", task, [blob(p.COMPLAINTS, 2)], {"ready": 1}, **kw),
    ]
    for pass_name, round_id in p.STATISTICS_PASSES.items():
        config = task | {p.STATISTICS_PASS: pass_name, p.ROUND: round_id}
        out.append(line(p.STATISTICS, "setup", config, update, {"tabular": 1}, **kw))
        decrypt = {p.KIND: "statistics", p.ROUND: round_id, p.ATTEMPT: 1}
        out.append(
            line(p.DECRYPT, f"statistics-{round_id}-1", decrypt, share, {"decrypt_seconds": 0.2}, **kw)
        )
    for round_id in range(1, rounds + 1):
        out.append(line(p.TRAIN, str(round_id), task | {p.ROUND: round_id}, update, sent, **kw))
        for attempt in (1, 2) if round_id == 3 else (1,):
            decrypt = {p.KIND: "train", p.ROUND: round_id, p.ATTEMPT: attempt}
            group = f"train-{round_id}-{attempt}"
            out.append(line(p.DECRYPT, group, decrypt, share, {"decrypt_seconds": 0.2}, **kw))
    final = rounds + 1  # the final evaluation is encrypted under the round after the last
    out.append(line(p.EVALUATE, "final", task | {p.ROUND: final}, update, own, **kw))
    decrypt = {p.KIND: "train", p.ROUND: final, p.ATTEMPT: 1}
    out.append(line(p.DECRYPT, f"train-{final}-1", decrypt, share, {"decrypt_seconds": 0.2}, **kw))
    return [
        e | {"ts": f"2026-11-27T21:5{i // 60}:{i % 60:02d}.000+00:00", "message_id": f"m-{i}"}
        for i, e in enumerate(out)
    ]


def table_rows(report: str) -> list[str]:
    return [row for row in report.splitlines() if row.startswith("  2026-")]


def steps(report: str) -> list[str]:
    """The step column of every row (it starts after the time stamp, two spaces apart)."""
    header = next(row for row in report.splitlines() if row.startswith("  time (UTC)"))
    start, end = header.index("step"), header.index("request")
    return [row[start:end].strip() for row in table_rows(report)]


def test_a_ten_round_run_is_labelled_in_words_with_the_final_evaluation_and_statistics() -> None:
    report = summarize(encrypted_run())
    expected = ["set-up"] * 3
    expected += ["feature statistics: means"] * 2 + ["feature statistics: spread"] * 2
    for round_id in range(1, 11):
        expected.append(f"training round {round_id}")
        expected.append(f"training round {round_id}")
        if round_id == 3:
            expected.append("training round 3, attempt 2")
    expected += ["final evaluation", "final evaluation"]
    assert steps(report) == expected
    assert "training round 11" not in report and "train-11-1" not in report and "statistics--2" not in report
    assert "Settings the server sent: encrypted run; per-hospital plaintext metrics off; " in report
    assert "differential privacy off; 10 training round(s)" in report


def test_columns_line_up_whatever_the_labels() -> None:
    rows = table_rows(summarize(encrypted_run()))
    header = next(r for r in summarize(encrypted_run()).splitlines() if r.startswith("  time (UTC)"))
    end_of_sent = header.index("sent B") + len("sent B")
    assert len(rows) == 3 + 4 + 2 * 10 + 1 + 2  # set-up, statistics, rounds, a retry, final
    for row in rows:  # every byte count ends under its header, followed by the gap to the next column
        assert row[end_of_sent - 1].isdigit() and row[end_of_sent : end_of_sent + 2] == "  ", row
    # training round 1: the update, its statement and its timing (8 bytes), with thousands separators
    assert f"  {CIPHERTEXT + STATEMENT + 8:,}  " in rows[7]


def test_bottom_line_of_an_encrypted_run_names_the_timings_it_sent_in_the_clear() -> None:
    report = summarize(encrypted_run())
    # one number each: the dealings' ready flag, 2 statistics passes' tabular flags, 10 updates'
    # encrypt_seconds, 14 decryptions' decrypt_seconds (2 statistics, 10 rounds, a retry, the final)
    assert (
        "IN THE CLEAR: timings and status flags (decrypt_seconds, encrypt_seconds, ready, tabular), "
        "in 27 message(s), 216 B." in report
    )
    assert "No model update, feature statistic or test result of this hospital left in the clear" in report
    assert "own results" not in report
    assert "Differential privacy: off in this run; no ε spent." in report


def test_bottom_line_says_when_the_hospitals_own_test_metrics_left_in_the_clear() -> None:
    own = {"train_loss": 0.25, "eval_accuracy": 0.875, "eval_auc": 0.9, "eval_examples": 38}
    report = summarize(encrypted_run(settings={p.PER_HOSPITAL_PLAINTEXT: True}, own=own))
    assert "per-hospital plaintext metrics ON" in report
    # 10 updates carry 4 values; the final evaluation carries them too: 11 messages, 44 numbers
    assert (
        "IN THE CLEAR: this hospital's own results (eval_accuracy, eval_auc, eval_examples, train_loss), "
        "in 11 message(s), 352 B, because the run enabled per-hospital plaintext metrics." in report
    )
    assert "No model update, feature statistic or test result" not in report


def test_bottom_line_of_a_plaintext_run_names_the_model_values_and_their_size() -> None:
    update = [{"record": p.ARRAYS, "name": str(i), "bytes": 800, "sha256": "0" * 64} for i in range(2)]
    entries = [line(p.TRAIN, "1", {p.ENCRYPTED: False, p.ROUND: 1}, update, {p.NUM_EXAMPLES: 120})]
    report = summarize(entries)
    assert "PLAINTEXT run (model updates in the clear)" in report
    assert "IN THE CLEAR: model values, in 1 message(s), 1,600 B." in report
    assert "IN THE CLEAR: this hospital's training-set size (num-examples), in 1 message(s), 8 B." in report
    assert "No model update" not in report


def test_epsilon_spent_this_run_and_over_the_lifetime(tmp_path: Path, capsys) -> None:
    dp = {"dp": "distributed"}
    lines = encrypted_run(3, settings=dp) + encrypted_run(2, run="99", hospital="charite")
    (tmp_path / AUDIT_FILE).write_text("".join(json.dumps(e) + "\n" for e in lines))
    (tmp_path / POLICY_FILE).write_text("lifetime_epsilon = 8.0\n")
    ledger = ReleaseLedger.in_state_dir(tmp_path)
    for run, round_id, epsilon in ((RUN, 1, 1.25), (RUN, 3, 2.5), ("41", 2, 1.5)):
        record = {"type": DP, "run": run, "round": round_id, "mechanism": "distributed-discrete-gaussian"}
        ledger.append(record | {"epsilon": epsilon, "delta": 1e-5})
    assert summary_main(["--state-dir", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    assert (
        "Differential privacy (distributed): ε 2.5 spent in this run (δ 1e-05, by training round 3, "
        "distributed-discrete-gaussian); all runs at this hospital: ε 4 of the lifetime budget 8, 4 left."
        in report
    )
    assert "Differential privacy: off in this run; no ε spent." in report  # run 99
    assert "run 41: epsilon 1.5 (delta 1e-05) after round 2" in report  # the ledger's other run
    assert summary_main(["--log", str(tmp_path / AUDIT_FILE), "--run", RUN]) == 0
    assert "the ε spent is not shown (give --state-dir" in capsys.readouterr().out


class Tags(HTMLParser):
    """Every start tag and attribute name of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.add(tag)
        self.attributes |= {name for name, _ in attrs}


def test_html_report_escapes_what_the_log_holds(tmp_path: Path, capsys) -> None:
    hostile = "<script>alert(1)</script>"
    entries = encrypted_run(1, run=f"{hostile}", hospital=f'"><img src=x onerror=alert(2)>{hostile}')
    entries.append(
        line(
            p.DECRYPT,
            "train-1-2",
            {p.KIND: "train", p.ROUND: 1},
            outcome="refused",
            reason=hostile,
            run=hostile,
        )
    )
    log = tmp_path / AUDIT_FILE
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    page = tmp_path / "report.html"
    assert daemon_main(["audit", "--log", str(log), "--html", str(page)]) == 0
    assert f"HTML report written to {page}" in capsys.readouterr().out
    assert stat.S_IMODE(page.stat().st_mode) == 0o600
    html = page.read_text()
    tags = Tags()
    tags.feed(html)
    assert "script" not in tags.tags and "img" not in tags.tags
    assert not any(name.startswith("on") for name in tags.attributes)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "training round 1" in html and "IN THE CLEAR: timings and status flags" in html


def test_a_corrupt_line_is_reported_and_the_rest_summarized(tmp_path: Path, capsys) -> None:
    good = encrypted_run(1)
    broken = good[0] | {"sent": {"arrays": "not a list"}}
    text = "".join(json.dumps(e) + "\n" for e in good[:4])
    text += '{"ts": "2026-11-27T21:5\n'  # a line cut short (a full disk)
    text += "[1, 2]\n" + json.dumps(broken) + "\n"
    text += "".join(json.dumps(e) + "\n" for e in good[4:])
    log = tmp_path / AUDIT_FILE
    log.write_text(text)
    assert summary_main(["--log", str(log)]) == 1  # printed, but not everything could be read
    report = capsys.readouterr().out
    assert "WARNING: 3 line(s) of the log could not be read; left out below:" in report
    assert "line 5: not JSON (Unterminated string" in report
    assert "line 6: expected a JSON object, got list" in report
    assert "line 7: expected 'sent.arrays' as a list of objects with 'bytes'" in report
    assert len(table_rows(report)) == len(good)
    assert "final evaluation" in report


def test_control_characters_from_the_log_do_not_reach_the_terminal() -> None:
    report = summarize(encrypted_run(1, hospital="charite\x1b[2J"))
    assert "\x1b" not in report and "at charite\\x1b[2J:" in report


def test_a_run_not_in_the_log_is_named_with_the_runs_that_are() -> None:
    entries = encrypted_run(1) + encrypted_run(1, run="99")
    assert f"No messages of run 42 (runs in this log: {RUN}, 99)." in summarize(entries, "42")
    assert summarize(entries, "99").count("Run 99 at charite") == 1 and f"Run {RUN}" not in summarize(
        entries, "99"
    )

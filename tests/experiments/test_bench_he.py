"""``experiments.bench_he`` times the code hospitals run (``he.party``, which ``client.keyholder``
calls), not a copy of it, and its round still decrypts exactly (no timings asserted)."""

from __future__ import annotations

import argparse
from collections import Counter

import pytest

from experiments import bench_he
from experiments.bench_he_setup import Config
from he import party

STEPS = ("deal", "open_dealt_share", "decryption_share")


def table_rows(output: str) -> dict[str, str]:
    """Each markdown table row's metric (first cell, unescaped) -> its first value."""
    rows = {}
    for line in output.splitlines():
        cells = line.removeprefix("| ").split(" | ")  # an escaped "\\|" has no space after it
        if line.startswith("| ") and len(cells) > 2 and cells[0] != "metric":
            rows[cells[0].replace("\\|", "|")] = cells[1]
    return rows


def counting(calls: Counter[str], name: str):
    """``he.party.<name>``, counting its calls in ``calls``."""
    real = getattr(party, name)

    def counted(*args, **kwargs):
        calls[name] += 1
        return real(*args, **kwargs)

    return counted


def test_bench_times_the_production_steps_and_decrypts_exactly(monkeypatch, capsys):
    calls: Counter[str] = Counter()
    for name in STEPS:
        monkeypatch.setattr(party, name, counting(calls, name))
    bench_he.main(["--config", "4:4:2:compact", "--values", "3000", "--distinct", "2", "--repeats", "1"])
    rows = table_rows(capsys.readouterr().out)

    # dealers 1 and 4 deal; keyholders 1 and 4 open each other's share, 2 and 3 open both; the
    # minimum decryption set ceil((4 + 2) / 2) = 3 makes one share and one check share per member
    assert calls == {"deal": 2, "open_dealt_share": 6, "decryption_share": 6}  # 3 shares, 3 check shares
    assert rows["decrypted field sums = plaintext sums of the encoded fields"] == "exact"
    decoded, true = rows["total examples, decoded / true"].split(" / ")
    assert decoded == true
    bound, measured = rows["decryption noise bits (bound / measured max)"].split(" / ")
    assert float(measured) <= float(bound)
    assert rows["decryption set |T|"] == "3"
    assert int(rows["share check: gain bits a (a cheater passes with 1/(2^a - 1))"]) >= 17
    timings = ("dealing per hospital [s]", "partial decrypt per keyholder [s]", "combine + decode [s]")
    for timed in (*timings, "share check: check share per keyholder [s]", "share check: verify (server) [s]"):
        assert float(rows[timed].split()[0]) > 0, timed


@pytest.mark.parametrize(
    ("text", "match"),
    [("4:4:2", "expected N:K:T:PRESET"), ("4:5:2:compact", "need 2 <= T <= K <= N")],
)
def test_invalid_config_is_refused_naming_the_expected_form(text, match):
    with pytest.raises(argparse.ArgumentTypeError, match=match):
        Config.parse(text)


def test_invalid_distinct_is_refused():
    with pytest.raises(SystemExit):
        bench_he.parse_args(["--distinct", "1"])

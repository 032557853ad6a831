"""The release ledger: persistent, append-only, 0600, and a hand edit is detected."""

import json
import stat

import pytest

from client.ledger import LedgerError, ReleaseLedger


def test_records_survive_reopening_and_the_file_is_private(tmp_path):
    ledger = ReleaseLedger.in_state_dir(tmp_path)
    ledger.append({"type": "release", "release_key": "k1", "contributors": ["a", "b"]})
    ledger.append({"type": "dp", "run": "r1", "epsilon": 0.5})
    ledger.append({"type": "dp", "run": "r1", "epsilon": 1.0})
    ledger.append({"type": "dp", "run": "r2", "epsilon": 2.0})
    again = ReleaseLedger.in_state_dir(tmp_path)
    assert again.contributors_of("k1") == ["a", "b"]
    assert again.contributors_of("k2") is None
    assert again.epsilon_spent() == pytest.approx(3.0)
    assert stat.S_IMODE(ledger.path.stat().st_mode) == 0o600


@pytest.mark.parametrize("edit", ["remove", "alter", "swap"])
def test_a_hand_edited_ledger_is_refused(tmp_path, edit):
    ledger = ReleaseLedger.in_state_dir(tmp_path)
    for key in ("k1", "k2", "k3"):
        ledger.append({"type": "release", "release_key": key, "contributors": ["a", "b"]})
    lines = ledger.path.read_text().splitlines()
    if edit == "remove":
        del lines[1]
    elif edit == "alter":
        record = json.loads(lines[1])
        record["contributors"] = ["a"]
        lines[1] = json.dumps(record, sort_keys=True)
    else:
        lines[0], lines[1] = lines[1], lines[0]
    ledger.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LedgerError, match="does not chain"):
        ledger.records()
    with pytest.raises(LedgerError):
        ledger.append({"type": "release", "release_key": "k4", "contributors": ["a", "b"]})


def test_unknown_record_type_refused(tmp_path):
    with pytest.raises(ValueError, match="record type"):
        ReleaseLedger.in_state_dir(tmp_path).append({"type": "other"})

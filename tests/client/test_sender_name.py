"""A hospital names itself in every error text it sends (common.sender_name, client.identity.own_name)."""

from __future__ import annotations

from client.identity import own_name
from common.sender_name import split_sender, with_sender
from he.roster import NODE_HOSPITAL


def test_a_daemon_goes_by_its_hospital_name_and_a_simulated_one_by_its_roster_name() -> None:
    assert own_name({NODE_HOSPITAL: "st-mary", "partition-id": 4}) == "st-mary"
    assert own_name({"partition-id": 1}) == "hospital-2"
    assert own_name({}) is None


def test_the_name_is_written_once_and_read_back_apart_from_the_text() -> None:
    text = with_sender("st-mary", "policy require_encrypted=true: refused")
    assert text == "[st-mary] policy require_encrypted=true: refused"
    assert with_sender("st-mary", text) == text  # a refusal passing two boundaries is named once
    assert with_sender(None, "refused") == "refused"
    assert split_sender(text) == ("st-mary", "policy require_encrypted=true: refused")
    assert split_sender("[not closed refused") == (None, "[not closed refused")

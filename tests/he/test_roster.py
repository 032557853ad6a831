"""The pinned roster (``he.roster``): round trip, fingerprint, every refusal, and the quorum rule."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat

import pytest

from common.simulated_federation import simulated_hospital_name, write_simulated_federation
from he.errors import InsecureParametersError, RosterError
from he.identity import SigningKey
from he.params import preset
from he.roster import FORMAT, MAX_ROSTER_BYTES, Hospital, Quorum, Roster

NAMES = ["alpha", "beta", "gamma", "delta", "epsilon"]


@pytest.fixture(scope="module")
def keys() -> dict[str, bytes]:
    return {name: SigningKey.generate().public_bytes() for name in NAMES}


@pytest.fixture(scope="module")
def roster(keys) -> Roster:
    """Five hospitals, a 2-of-3 committee (alpha, beta, gamma), at least 3 contributors."""
    return Roster.create("fed-1", keys, threshold=2, min_contributors=3, committee_size=3)


def raw(roster: Roster, **changes) -> bytes:
    return json.dumps({**roster.to_json(), **changes}).encode()


# -- round trip and fingerprint ----------------------------------------------------------------


def test_create_names_the_committee_and_its_threshold(roster, keys):
    assert roster.committee == ("alpha", "beta", "gamma")
    assert roster.quorum == Quorum((1, 2, 3), 2)
    assert [roster.party_of(n) for n in NAMES] == [1, 2, 3, 4, 5]
    assert roster.hospital(4) == Hospital("delta", keys["delta"])
    assert roster.num_hospitals == 5
    whole = Roster.create("fed-1", keys)  # threshold 0: the whole committee, every hospital
    assert whole.committee == tuple(NAMES) and whole.threshold == 5


def test_round_trip_through_bytes_and_file(roster, tmp_path):
    assert Roster.from_bytes(roster.to_bytes()) == roster
    path = tmp_path / "roster.json"
    roster.save(path)
    loaded = Roster.load(path)
    assert loaded == roster
    assert loaded.fingerprint == roster.fingerprint
    assert json.loads(path.read_text())["format"] == FORMAT


def test_fingerprint_is_stable_and_canonical(roster, keys):
    again = Roster.create("fed-1", dict(keys), threshold=2, min_contributors=3, committee_size=3)
    assert again.fingerprint == roster.fingerprint
    assert len(roster.fingerprint) == 64 and int(roster.fingerprint, 16) >= 0
    # whitespace and key order of the file do not matter, only the content
    pretty = json.dumps(dict(reversed(list(roster.to_json().items()))), indent=4).encode()
    assert Roster.from_bytes(pretty).fingerprint == roster.fingerprint
    # the short form is the first 128 bits in eight groups of four hex digits
    short = roster.short_fingerprint
    assert short.replace("-", "") == roster.fingerprint[:32]
    assert [len(g) for g in short.split("-")] == [4] * 8


@pytest.mark.parametrize(
    "change",
    [
        {"federation_id": "fed-2"},
        {"threshold": 3},
        {"min_contributors": 4},
        {"preset": "precise"},
        {"max_attempts": 4},
        {"committee": ["alpha", "beta", "delta"]},
        {"min_setup_keyholders": 3},
    ],
    ids=lambda c: next(iter(c)),
)
def test_fingerprint_changes_with_every_field(roster, change):
    other = Roster.from_bytes(raw(roster, **change))
    assert other.fingerprint != roster.fingerprint
    assert other.short_fingerprint != roster.short_fingerprint


def test_fingerprint_changes_with_a_key_or_the_hospital_order(roster):
    hospitals = list(roster.hospitals)
    swapped_key = dataclasses.replace(roster, hospitals=(
        Hospital(hospitals[0].name, SigningKey.generate().public_bytes()), *hospitals[1:]))  # fmt: skip
    reordered = dataclasses.replace(roster, hospitals=(hospitals[1], hospitals[0], *hospitals[2:]))
    assert swapped_key.fingerprint != roster.fingerprint
    assert reordered.fingerprint != roster.fingerprint
    assert reordered.party_of("alpha") == 2  # the party index is the position in the roster


def test_simulated_federation_writes_a_roster_and_private_keys(tmp_path):
    roster = write_simulated_federation(tmp_path, 4, threshold=2, committee_size=3)
    assert Roster.load(tmp_path / "roster.json") == roster
    assert [h.name for h in roster.hospitals] == [simulated_hospital_name(i) for i in range(4)]
    for hospital in roster.hospitals:
        path = tmp_path / f"{hospital.name}.key"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert SigningKey.load(path).public_bytes() == hospital.signing_key


# -- refusals -------------------------------------------------------------------------------------


def build(keys, **changes) -> Roster:
    fields = {
        "federation_id": "fed-1",
        "hospitals": tuple(Hospital(n, k) for n, k in keys.items()),
        "committee": ("alpha", "beta", "gamma"),
        "threshold": 2,
        "min_contributors": 3,
        "preset": "compact",
    } | changes
    return Roster(**fields)


def test_valid_fields_build(keys):
    build(keys)


def test_duplicate_hospital_names_refused(keys):
    hospitals = (Hospital("alpha", keys["alpha"]), Hospital("alpha", keys["beta"]))
    with pytest.raises(RosterError, match="hospital names must be distinct non-empty strings"):
        build(keys, hospitals=hospitals, committee=("alpha",), min_contributors=2)


def test_empty_hospital_name_refused(keys):
    hospitals = (*build(keys).hospitals, Hospital("", SigningKey.generate().public_bytes()))
    with pytest.raises(RosterError, match="hospital names must be distinct non-empty strings"):
        build(keys, hospitals=hospitals)


def test_duplicate_signing_keys_refused(keys):
    hospitals = (*build(keys).hospitals, Hospital("zeta", keys["alpha"]))
    with pytest.raises(RosterError, match="two hospitals share a signing key"):
        build(keys, hospitals=hospitals)


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_signing_key_of_wrong_size_refused(keys, length):
    hospitals = (*build(keys).hospitals, Hospital("zeta", os.urandom(length)))
    with pytest.raises(RosterError, match="every signing key must be 32 raw Ed25519 bytes"):
        build(keys, hospitals=hospitals)


def test_committee_member_not_in_roster_refused(keys):
    with pytest.raises(RosterError, match=r"committee members \['omega'\] are not hospitals of the roster"):
        build(keys, committee=("alpha", "omega", "gamma"))


def test_duplicate_committee_member_refused(keys):
    with pytest.raises(RosterError, match=r"committee must be distinct party indices >= 1, got \[1, 1, 2\]"):
        build(keys, committee=("alpha", "alpha", "beta"))


def test_threshold_one_refused(keys):
    with pytest.raises(
        RosterError,
        match=r"threshold must be in \[2, 3\] .*t = 1 would let one keyholder decrypt alone\), got 1",
    ):
        build(keys, threshold=1)


def test_threshold_above_committee_refused(keys):
    with pytest.raises(RosterError, match=r"threshold must be in \[2, 3\] for a committee of 3 .* got 4"):
        build(keys, threshold=4)
    build(keys, threshold=3)  # n-of-n is fine


@pytest.mark.parametrize("minimum", [0, 1, 6])
def test_min_contributors_out_of_range_refused(keys, minimum):
    with pytest.raises(RosterError, match=rf"min_contributors must be in \[2, 5\] .* got {minimum}"):
        build(keys, min_contributors=minimum)


@pytest.mark.parametrize("attempts", [0, 17])
def test_max_attempts_out_of_range_refused(keys, attempts):
    with pytest.raises(RosterError, match=rf"max_attempts must be in \[1, 16\], got {attempts}"):
        build(keys, max_attempts=attempts)


def test_the_set_up_minimum_defaults_to_the_quorum_bound_and_keeps_old_fingerprints(roster, keys):
    """2-of-3: a set-up needs ceil((3 + 2)/2) = 3 keyholders; a roster that does not set the
    field serializes without it, so a roster pinned before it existed keeps its fingerprint."""
    assert roster.min_setup_keyholders == 0 and roster.setup_minimum == 3
    assert "min_setup_keyholders" not in roster.to_json()
    larger = build(keys, committee=tuple(NAMES), threshold=2, min_setup_keyholders=5)
    assert larger.quorum.min_decryption_set == 4 and larger.setup_minimum == 5
    assert Roster.from_bytes(larger.to_bytes()) == larger


def test_require_refuses_settings_the_roster_contradicts(roster):
    """The one check the server, the runner and every keyholder make (``Roster.require``)."""
    roster.require()  # compact holds a committee of 3 with 3 attempts
    roster.require("compact", threshold=2, num_rounds=preset("compact").max_rounds)
    roster.require("compact", threshold=0)  # 0: the roster's threshold
    with pytest.raises(RosterError, match=r"he\.preset='precise' but roster 'fed-1' pins preset 'compact'"):
        roster.require("precise")
    with pytest.raises(RosterError, match=r"he\.threshold=3 but roster 'fed-1' pins threshold 2"):
        roster.require("compact", threshold=3)
    rounds = preset("compact").max_rounds + 1
    with pytest.raises(RosterError, match=f"num_rounds={rounds} exceeds the {rounds - 1} rounds"):
        roster.require("compact", num_rounds=rounds)
    unknown = dataclasses.replace(roster, preset="tiny")  # its noise flooding cannot be checked
    with pytest.raises(InsecureParametersError, match="unknown HE preset 'tiny'"):
        unknown.require()


@pytest.mark.parametrize("minimum", [-1, 1, 3, 6])
def test_min_setup_keyholders_out_of_range_refused(keys, minimum):
    """A 2-of-5 committee: a decryption set needs 4, so a set-up minimum below 4 (or above the
    committee) is refused; 0 means the default."""
    with pytest.raises(
        RosterError, match=rf"min_setup_keyholders must be 0 .* = 4\) or in \[4, 5\] .* got {minimum}"
    ):
        build(keys, committee=tuple(NAMES), threshold=2, min_setup_keyholders=minimum)


@pytest.mark.parametrize("federation", ["", "x" * 201])
def test_bad_federation_id_refused(keys, federation):
    with pytest.raises(RosterError, match="federation_id must be a non-empty string of at most 200"):
        build(keys, federation_id=federation)


def test_unknown_hospital_or_party_refused(roster):
    with pytest.raises(RosterError, match="'omega' is not a hospital of federation 'fed-1'"):
        roster.party_of("omega")
    for party in (0, 6, -1):
        with pytest.raises(RosterError, match=rf"party {party} is not in \[1, 5\]"):
            roster.hospital(party)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not a valid roster"),
        (b"[1, 2]", "not a valid roster"),
        (b"", "not a valid roster"),
        (
            b'{"format": "fedquorum-roster-v0"}',
            "expected format 'fedquorum-roster-v1', got 'fedquorum-roster-v0'",
        ),
        (b"{}", "expected format 'fedquorum-roster-v1', got None"),
        (b"\xff\xfe", "not a valid roster"),
        (b"[" * 100_000 + b"]" * 100_000, "not a valid roster"),
    ],
    ids=["bad-json", "list", "empty", "old-format", "no-format", "not-utf8", "deep"],
)
def test_unreadable_roster_refused(data, message):
    with pytest.raises(RosterError, match=message):
        Roster.from_bytes(data, "roster under test")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("threshold", "2"),
        ("threshold", 2.0),
        ("threshold", True),
        ("threshold", None),
        ("min_contributors", "3"),
        ("max_attempts", 3.5),
        ("min_setup_keyholders", "3"),
    ],
)
def test_non_integer_numbers_refused(roster, field, value):
    with pytest.raises(RosterError, match=rf"roster under test: {field} must be an integer, got"):
        Roster.from_bytes(raw(roster, **{field: value}), "roster under test")


@pytest.mark.parametrize(
    "change",
    [
        {"hospitals": [{"name": "alpha"}]},
        {"hospitals": [{"name": "alpha", "signing_key": "zz"}]},
        {"hospitals": "alpha"},
        {"committee": None},
    ],
    ids=["no-key", "bad-hex", "not-a-list", "no-committee"],
)
def test_malformed_fields_refused(roster, change):
    with pytest.raises(RosterError, match="roster under test: not a valid roster"):
        Roster.from_bytes(raw(roster, **change), "roster under test")


def test_missing_field_refused(roster):
    for field in ("federation_id", "hospitals", "committee", "threshold", "min_contributors", "preset"):
        data = roster.to_json()
        del data[field]
        with pytest.raises(RosterError, match="not a valid roster"):
            Roster.from_bytes(json.dumps(data).encode())
    data = roster.to_json()
    del data["max_attempts"]  # optional, with a default
    assert Roster.from_bytes(json.dumps(data).encode()).max_attempts == 3


def test_oversized_roster_refused_unread():
    with pytest.raises(RosterError, match=f"exceeds {MAX_ROSTER_BYTES}"):
        Roster.from_bytes(b" " * (MAX_ROSTER_BYTES + 1))


def test_missing_roster_file_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected the federation's roster\.json"):
        Roster.load(tmp_path / "absent.json")


# -- the quorum rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("committee", "threshold", "minimum"),
    [(5, 3, 4), (3, 2, 3), (16, 11, 14), (5, 5, 5), (16, 16, 16), (10, 6, 8), (2, 2, 2), (4, 2, 3)],
    ids=lambda v: str(v),
)
def test_min_decryption_set(committee, threshold, minimum):
    assert Quorum(tuple(range(1, committee + 1)), threshold).min_decryption_set == minimum


def test_any_two_minimal_decryption_sets_share_t_keyholders():
    """|T1 ∩ T2| >= 2m - |K| >= t_K, and m is the smallest size with that property."""
    for size in range(2, 33):
        for threshold in range(2, size + 1):
            m = Quorum(tuple(range(1, size + 1)), threshold).min_decryption_set
            assert m <= size
            assert 2 * m - size >= threshold
            assert 2 * (m - 1) - size < threshold
            assert m == math.ceil((size + threshold) / 2)


def test_check_decryption_set_accepts_and_sorts():
    quorum = Quorum((2, 4, 6, 8, 10), 3)
    assert quorum.check_decryption_set([10, 2, 6, 4]) == (2, 4, 6, 10)
    assert quorum.check_decryption_set((2, 4, 6, 8, 10)) == (2, 4, 6, 8, 10)


@pytest.mark.parametrize(
    ("chosen", "message"),
    [
        ([2, 4, 6], r"3 keyholders is below the quorum-intersection minimum .* = 4 \(\|K\| = 5, t_K = 3\)"),
        ([2, 4, 6, 7], r"\[2, 4, 6, 7\] is not a set of committee members"),
        ([2, 4, 6, 6], r"is not a set of committee members"),
        ([2, 4, 6, 8, 10, 12], "is not a set of committee members"),
        ([], "0 keyholders is below"),
    ],
    ids=["too-small", "outsider", "duplicate", "superset", "empty"],
)
def test_check_decryption_set_refusals(chosen, message):
    with pytest.raises(RosterError, match=message):
        Quorum((2, 4, 6, 8, 10), 3).check_decryption_set(chosen)


def test_a_decryption_set_lies_within_the_runs_committee_and_is_sized_by_the_rosters():
    """K = {2, 4, 6, 8, 10}, t = 3: sets need 4 members whatever the run's committee K' is."""
    quorum = Quorum((2, 4, 6, 8, 10), 3)
    assert quorum.check_decryption_set([8, 2, 4, 6], run_committee=(2, 4, 6, 8)) == (2, 4, 6, 8)
    with pytest.raises(
        RosterError, match=r"includes keyholders \[10\] that took no part in this run's set-up"
    ):
        quorum.check_decryption_set([2, 4, 6, 10], run_committee=(2, 4, 6, 8))
    with pytest.raises(RosterError, match=r"3 keyholders is below the quorum-intersection minimum"):
        quorum.check_decryption_set([2, 4, 6], run_committee=(2, 4, 6))


@pytest.mark.parametrize(
    ("committee", "threshold", "message"),
    [
        ((1, 2, 3), 1, r"threshold must be in \[2, 3\]"),
        ((1, 2, 3), 4, r"threshold must be in \[2, 3\]"),
        ((1, 2, 2), 2, "distinct party indices"),
        ((0, 1, 2), 2, "distinct party indices >= 1"),
        ((), 2, r"threshold must be in \[2, 0\]"),
    ],
)
def test_invalid_quorum_refused(committee, threshold, message):
    with pytest.raises(RosterError, match=message):
        Quorum(committee, threshold)

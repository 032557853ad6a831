"""Signed statements of protocol v2 (``he.transcript``): hellos and the run id, dealings and
contributions, each checked against the pinned roster."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from he import transcript
from he.channel import ChannelKeyPair
from he.errors import RosterError, SignatureError
from he.identity import SigningKey
from he.keygen import fresh_contribution
from he.roster import Roster

NAMES = ["alpha", "beta", "gamma", "delta", "epsilon"]
FLOWER_RUN = 4711


@pytest.fixture(scope="module")
def signers() -> dict[str, SigningKey]:
    return {name: SigningKey.generate() for name in NAMES}


@pytest.fixture(scope="module")
def roster(signers) -> Roster:
    """Five hospitals; committee alpha, beta, gamma (parties 1-3) with t = 2; min 3 contributors."""
    keys = {name: key.public_bytes() for name, key in signers.items()}
    return Roster.create("fed-1", keys, threshold=2, min_contributors=3, committee_size=3)


def hello(signers, roster, party: int, flower_run: int = FLOWER_RUN, **overrides) -> bytes:
    name = NAMES[party - 1]
    arguments = {
        "signer": signers[name],
        "roster": roster,
        "name": name,
        "flower_run": flower_run,
        "contribution": fresh_contribution(),
        "channel_key": ChannelKeyPair.generate().public_bytes(),
    } | overrides
    return transcript.sign_hello(**arguments)


@pytest.fixture(scope="module")
def hellos(signers, roster) -> dict[int, bytes]:
    return {party: hello(signers, roster, party) for party in range(1, 6)}


def resign(signer: SigningKey, signed: bytes, **changes) -> bytes:
    """The same statement with some fields changed, validly signed by ``signer``."""
    message = json.loads(signed)
    return signer.sign(message["label"], message["fields"] | changes)


# -- hellos and the run id ----------------------------------------------------------------------


def test_valid_hellos_give_the_parties_channel_keys_and_run_id(roster, hellos):
    setup = transcript.verify_hellos(roster, FLOWER_RUN, hellos)
    assert setup.parties == (1, 2, 3, 4, 5)
    for party, signed in hellos.items():
        assert setup.channel_keys[party].hex() == json.loads(signed)["fields"]["channel_key"]
        assert transcript.hello_sender(roster, signed) == party
    assert len(setup.run_id) == 32
    # deterministic, and independent of the order the hellos arrive in
    reordered = dict(reversed(list(hellos.items())))
    assert transcript.verify_hellos(roster, FLOWER_RUN, reordered).run_id == setup.run_id


def test_hellos_of_committee_and_minimum_are_enough(roster, hellos):
    """Keyholders 1-3 form the minimum of three: hospitals 4 and 5 may stay away."""
    setup = transcript.verify_hellos(roster, FLOWER_RUN, {k: hellos[k] for k in (1, 2, 3)})
    assert setup.parties == (1, 2, 3)


def test_run_id_changes_when_any_hello_changes(signers, roster, hellos):
    base = transcript.verify_hellos(roster, FLOWER_RUN, hellos).run_id
    seen = {base}
    for party in hellos:
        changed = dict(hellos) | {party: hello(signers, roster, party)}  # a fresh contribution and key
        run_id = transcript.verify_hellos(roster, FLOWER_RUN, changed).run_id
        assert run_id not in seen
        seen.add(run_id)
    # the same contribution and key, signed again: Ed25519 is deterministic, so the same run
    first = json.loads(hellos[1])["fields"]
    same = hello(signers, roster, 1, contribution=bytes.fromhex(first["contribution"]),
                 channel_key=bytes.fromhex(first["channel_key"]))  # fmt: skip
    assert transcript.verify_hellos(roster, FLOWER_RUN, dict(hellos) | {1: same}).run_id == base
    # leaving out a hospital that need not take part also changes it
    fewer = {k: v for k, v in hellos.items() if k != 5}
    assert transcript.verify_hellos(roster, FLOWER_RUN, fewer).run_id not in seen


def test_hello_by_an_unknown_signer_refused(roster, hellos):
    stranger = SigningKey.generate()
    forged = hello({"beta": stranger}, roster, 2, signer=stranger)
    with pytest.raises(SignatureError, match="hello of beta: the signature does not verify"):
        transcript.verify_hellos(roster, FLOWER_RUN, dict(hellos) | {2: forged})
    with pytest.raises(SignatureError, match="does not verify"):
        transcript.hello_sender(roster, forged)


def test_hello_of_one_hospital_presented_as_another_refused(signers, roster, hellos):
    # gamma's genuine hello relayed as party 2's: opened with beta's key, it does not verify
    with pytest.raises(SignatureError, match="hello of beta: the signature does not verify"):
        transcript.verify_hellos(roster, FLOWER_RUN, dict(hellos) | {2: hellos[3]})
    # beta signing a hello that names gamma, relayed as beta's
    claims_gamma = hello(signers, roster, 2, name="gamma")
    with pytest.raises(SignatureError, match="hello of beta: signed for hospital 'gamma'"):
        transcript.verify_hellos(roster, FLOWER_RUN, dict(hellos) | {2: claims_gamma})


def test_hello_for_a_party_outside_the_roster_refused(roster, hellos):
    with pytest.raises(RosterError, match=r"party 6 is not in \[1, 5\]"):
        transcript.verify_hellos(roster, FLOWER_RUN, dict(hellos) | {6: hellos[1]})
    unknown = SigningKey.generate().sign("hello", json.loads(hellos[1])["fields"] | {"hospital": "omega"})
    with pytest.raises(RosterError, match="'omega' is not a hospital"):
        transcript.hello_sender(roster, unknown)
    with pytest.raises(SignatureError, match="not a readable signed hello"):
        transcript.hello_sender(roster, b"{}")


def test_hello_for_another_flower_run_refused(signers, roster, hellos):
    replayed = hello(signers, roster, 4, flower_run=FLOWER_RUN - 1)
    with pytest.raises(
        RosterError, match=f"hello of delta: made for Flower run {FLOWER_RUN - 1}, not {FLOWER_RUN}"
    ):
        transcript.verify_hellos(roster, FLOWER_RUN, dict(hellos) | {4: replayed})


def test_hello_for_another_roster_or_federation_refused(signers, roster, hellos):
    other_roster = dataclasses.replace(roster, min_contributors=2)
    assert other_roster.fingerprint != roster.fingerprint
    with pytest.raises(RosterError, match="hello of alpha: made for another federation or roster"):
        transcript.verify_hellos(roster, FLOWER_RUN, dict(hellos) | {1: hello(signers, other_roster, 1)})
    other_federation = resign(signers["alpha"], hellos[1], federation="fed-2")
    with pytest.raises(RosterError, match="made for another federation or roster"):
        transcript.verify_hellos(roster, FLOWER_RUN, dict(hellos) | {1: other_federation})


def test_missing_keyholder_refused(roster, hellos):
    """2-of-3: a decryption set needs all three keyholders, so the set-up does too."""
    without_gamma = {k: v for k, v in hellos.items() if k != 3}
    with pytest.raises(
        RosterError,
        match="set-up has 2 of the 3 keyholders, fewer than the roster's minimum 3; "
        "missing keyholders: gamma",
    ):
        transcript.verify_hellos(roster, FLOWER_RUN, without_gamma)


@pytest.fixture(scope="module")
def two_of_four(signers) -> tuple[Roster, dict[int, bytes]]:
    """Committee alpha..delta (parties 1-4), t = 2: a decryption set, and a set-up, needs 3."""
    keys = {name: key.public_bytes() for name, key in signers.items()}
    roster = Roster.create("fed-1", keys, threshold=2, min_contributors=2, committee_size=4)
    return roster, {party: hello(signers, roster, party) for party in range(1, 6)}


def test_set_up_proceeds_with_the_keyholders_online_and_names_the_absent(two_of_four):
    roster, hellos = two_of_four
    full = transcript.verify_hellos(roster, FLOWER_RUN, hellos)
    assert full.committee == (1, 2, 3, 4) and full.absent == ()
    without_beta = transcript.verify_hellos(roster, FLOWER_RUN, {k: hellos[k] for k in (1, 3, 4, 5)})
    assert without_beta.committee == (1, 3, 4)  # K' from the roster: epsilon is no keyholder
    assert without_beta.absent == ("beta",)
    assert without_beta.parties == (1, 3, 4, 5)
    assert without_beta.run_id != full.run_id


def test_set_up_below_the_minimum_names_who_is_missing_and_the_minimum(two_of_four):
    roster, hellos = two_of_four
    with pytest.raises(
        RosterError,
        match="set-up has 2 of the 4 keyholders, fewer than the roster's minimum 3; "
        "missing keyholders: beta, delta",
    ):
        transcript.verify_hellos(roster, FLOWER_RUN, {k: hellos[k] for k in (1, 3, 5)})


def test_a_larger_roster_minimum_is_kept(signers):
    keys = {name: key.public_bytes() for name, key in signers.items()}
    roster = Roster.create(
        "fed-1", keys, threshold=2, min_contributors=2, committee_size=4, min_setup_keyholders=4
    )
    hellos = {party: hello(signers, roster, party) for party in range(1, 6)}
    assert transcript.verify_hellos(roster, FLOWER_RUN, hellos).committee == (1, 2, 3, 4)
    with pytest.raises(RosterError, match="3 of the 4 keyholders, fewer than the roster's minimum 4"):
        transcript.verify_hellos(roster, FLOWER_RUN, {k: hellos[k] for k in (1, 2, 3, 5)})


def test_fewer_hospitals_than_min_contributors_refused(signers, hellos):
    keys = {name: key.public_bytes() for name, key in signers.items()}
    roster = Roster.create("fed-1", keys, threshold=2, min_contributors=4, committee_size=3)
    fresh = {party: hello(signers, roster, party) for party in (1, 2, 3, 5)}
    transcript.verify_hellos(roster, FLOWER_RUN, fresh)
    with pytest.raises(
        RosterError, match="set-up has 3 hospitals, fewer than the roster's min_contributors 4"
    ):
        transcript.verify_hellos(roster, FLOWER_RUN, {k: fresh[k] for k in (1, 2, 3)})


def test_two_hellos_with_the_same_channel_key_refused(signers, roster, hellos):
    shared = bytes.fromhex(json.loads(hellos[1])["fields"]["channel_key"])
    copycat = hello(signers, roster, 4, channel_key=shared)
    with pytest.raises(SignatureError, match="two hellos carry the same channel key"):
        transcript.verify_hellos(roster, FLOWER_RUN, dict(hellos) | {4: copycat})


@pytest.mark.parametrize(
    "changes",
    [
        {"contribution": "00" * 31},
        {"channel_key": "00" * 33},
        {"contribution": "zz"},
        {"channel_key": None},
    ],
    ids=["short-contribution", "long-key", "bad-hex", "no-key"],
)
def test_hello_with_malformed_contribution_or_key_refused(signers, roster, hellos, changes):
    bad = resign(signers["epsilon"], hellos[5], **changes)
    with pytest.raises(
        SignatureError, match=r"hello of epsilon: (lacks a contribution|contribution or channel key)"
    ):
        transcript.verify_hellos(roster, FLOWER_RUN, dict(hellos) | {5: bad})


# -- dealings --------------------------------------------------------------------------------------

RUN_ID = bytes(range(32))


@pytest.fixture(scope="module")
def sealed() -> dict[int, bytes]:
    """What dealer 4 (delta) relays to keyholders 1-3 (stand-ins for sealed shares)."""
    return {k: f"sealed share for keyholder {k}".encode() for k in (1, 2, 3)}


@pytest.fixture(scope="module")
def dealing(signers, sealed) -> bytes:
    return transcript.sign_dealing(signers["delta"], RUN_ID, 4, sealed, PUBLIC_KEY)


PUBLIC_KEY = b"delta's public-key share"


def test_valid_dealing_verifies_for_every_recipient(roster, dealing, sealed):
    for recipient, blob in sealed.items():
        transcript.verify_dealing(roster, RUN_ID, 4, recipient, dealing, blob)
    transcript.verify_public_key(roster, RUN_ID, 4, dealing, PUBLIC_KEY)


def test_a_public_key_share_not_the_one_signed_is_refused(roster, dealing):
    """The server checks each dealer's public-key share against its dealing statement: a share
    swapped on the way (or another hospital's) is refused, naming the dealer."""
    for relayed in (PUBLIC_KEY + b"\0", b"", b"another hospital's public-key share"):
        with pytest.raises(
            SignatureError, match="dealing of delta: its public-key share is not the one signed"
        ):
            transcript.verify_public_key(roster, RUN_ID, 4, dealing, relayed)
    with pytest.raises(SignatureError, match="signed for another run or dealer"):
        transcript.verify_public_key(roster, bytes(32), 4, dealing, PUBLIC_KEY)


def test_relayed_share_not_matching_the_signed_digest_refused(roster, dealing, sealed):
    for relayed in (sealed[1] + b"\0", sealed[2], b""):
        with pytest.raises(
            SignatureError, match="dealing of delta: the share relayed to party 1 is not the one signed"
        ):
            transcript.verify_dealing(roster, RUN_ID, 4, 1, dealing, relayed)
    with pytest.raises(SignatureError, match="relayed to party 5 is not the one signed"):
        transcript.verify_dealing(roster, RUN_ID, 4, 5, dealing, sealed[1])  # no share for party 5


def test_dealing_for_another_run_or_dealer_refused(signers, roster, dealing, sealed):
    with pytest.raises(SignatureError, match="dealing of delta: signed for another run or dealer"):
        transcript.verify_dealing(roster, bytes(32), 4, 1, dealing, sealed[1])
    # delta signs as if it were dealer 5; checked as dealer 4's dealing
    as_five = transcript.sign_dealing(signers["delta"], RUN_ID, 5, sealed, PUBLIC_KEY)
    with pytest.raises(SignatureError, match="signed for another run or dealer"):
        transcript.verify_dealing(roster, RUN_ID, 4, 1, as_five, sealed[1])
    # delta's genuine dealing presented as epsilon's: epsilon's key does not verify it
    with pytest.raises(SignatureError, match="dealing of epsilon: the signature does not verify"):
        transcript.verify_dealing(roster, RUN_ID, 5, 1, dealing, sealed[1])


def test_dealing_with_altered_digests_refused(signers, roster, dealing, sealed):
    message = json.loads(dealing)
    message["fields"]["shares"]["1"] = transcript.digest(b"another share")
    with pytest.raises(SignatureError, match="does not verify"):
        transcript.verify_dealing(roster, RUN_ID, 4, 1, json.dumps(message).encode(), b"another share")
    not_a_map = resign(signers["delta"], dealing, shares=["x"])
    with pytest.raises(SignatureError, match="is not the one signed"):
        transcript.verify_dealing(roster, RUN_ID, 4, 1, not_a_map, sealed[1])


def test_a_hello_is_not_a_dealing(roster, hellos, sealed):
    with pytest.raises(SignatureError, match="expected a 'dealing' statement, got 'hello'"):
        transcript.verify_dealing(roster, RUN_ID, 4, 1, hellos[4], sealed[1])


# -- contributions ---------------------------------------------------------------------------------

FRAME = b"an encrypted update frame"
LAYOUT = {"shapes": [[30], [2, 2]], "clip": 1.0, "weight_scale": 512}
RELEASE = transcript.model_release([np.zeros(30), np.ones((2, 2))])


@pytest.fixture(scope="module")
def contribution(signers, roster) -> bytes:
    return transcript.sign_contribution(
        signers["beta"], roster, RUN_ID, "train", 7, 2, FRAME, 3, 40, LAYOUT, RELEASE
    )


def test_valid_contribution_gives_count_and_layout(roster, contribution):
    for frame in (FRAME, None):  # the server checks the bytes, a keyholder only the statement
        verified = transcript.verify_contribution(roster, RUN_ID, "train", 7, 2, contribution, frame)
        assert verified == transcript.Contribution(3, 40, transcript.layout_digest(LAYOUT), RELEASE)
    # the layout digest is canonical: key order does not matter, content does
    assert transcript.layout_digest(dict(reversed(list(LAYOUT.items())))) == transcript.layout_digest(LAYOUT)
    assert transcript.layout_digest(LAYOUT | {"weight_scale": 513}) != transcript.layout_digest(LAYOUT)


@pytest.mark.parametrize(
    ("run_id", "kind", "round_id", "party"),
    [
        (bytes(32), "train", 7, 2),
        (RUN_ID, "statistics", 7, 2),
        (RUN_ID, "train", 8, 2),
        (RUN_ID, "train", 6, 2),
    ],
    ids=["run", "kind", "next-round", "previous-round"],
)
def test_contribution_for_another_run_kind_or_round_refused(
    roster, contribution, run_id, kind, round_id, party
):
    with pytest.raises(
        SignatureError, match="contribution of beta: signed for another run, kind, round or party"
    ):
        transcript.verify_contribution(roster, run_id, kind, round_id, party, contribution)


def test_contribution_for_another_party_refused(signers, roster, contribution):
    # beta's genuine statement presented as gamma's: gamma's key does not verify it
    with pytest.raises(SignatureError, match="contribution of gamma: the signature does not verify"):
        transcript.verify_contribution(roster, RUN_ID, "train", 7, 3, contribution)
    # beta signing "party 3" and relaying it as its own
    as_three = transcript.sign_contribution(
        signers["beta"], roster, RUN_ID, "train", 7, 3, FRAME, 3, 40, LAYOUT, RELEASE
    )
    with pytest.raises(SignatureError, match="signed for another run, kind, round or party"):
        transcript.verify_contribution(roster, RUN_ID, "train", 7, 2, as_three)


def test_contribution_for_another_federation_refused(signers, roster, contribution):
    other = resign(signers["beta"], contribution, federation="fed-2")
    with pytest.raises(SignatureError, match="signed for another run, kind, round or party"):
        transcript.verify_contribution(roster, RUN_ID, "train", 7, 2, other)


def test_frame_differing_from_the_signed_digest_refused(roster, contribution):
    for frame in (FRAME + b"\0", FRAME[:-1], b""):
        with pytest.raises(SignatureError, match="contribution of beta: the update is not the one signed"):
            transcript.verify_contribution(roster, RUN_ID, "train", 7, 2, contribution, frame)


@pytest.mark.parametrize(
    "changes",
    [{"ciphertexts": 0}, {"ciphertexts": True}, {"ciphertexts": "3"}, {"ciphertexts": 2.0}, {"layout": None},
     {"layout": 5}, {"coefficients": 0}, {"coefficients": None}],
    ids=["zero", "bool", "string", "float", "no-layout", "int-layout", "no-coefficient", "coefficients-none"],
)  # fmt: skip
def test_contribution_without_a_valid_count_or_layout_refused(signers, roster, contribution, changes):
    bad = resign(signers["beta"], contribution, **changes)
    with pytest.raises(SignatureError, match="no valid ciphertext or coefficient count or layout"):
        transcript.verify_contribution(roster, RUN_ID, "train", 7, 2, bad)


def test_contribution_altered_in_transit_refused(roster, contribution):
    message = json.loads(contribution)
    message["fields"]["ciphertexts"] = 4
    with pytest.raises(SignatureError, match="does not verify"):
        transcript.verify_contribution(roster, RUN_ID, "train", 7, 2, json.dumps(message).encode())


@pytest.mark.parametrize(
    "release", [None, "", 7, "m" * 101], ids=["missing", "empty", "not-text", "too-long"]
)
def test_contribution_without_a_valid_release_key_refused(signers, roster, contribution, release):
    bad = resign(signers["beta"], contribution, release=release)
    with pytest.raises(SignatureError, match="no valid release key"):
        transcript.verify_contribution(roster, RUN_ID, "train", 7, 2, bad)


def test_a_contribution_statement_of_the_previous_version_is_refused(signers, roster, contribution):
    """Version 2 had no release key: a keyholder could not tell which model it discloses. Version
    3 had no coefficient count: the server would choose how much of the plaintext is decrypted."""
    fields = json.loads(contribution)["fields"]
    del fields["release"]
    old = signers["beta"].sign("contribution", fields)
    with pytest.raises(SignatureError, match="expected a 'contribution-v4' statement"):
        transcript.verify_contribution(roster, RUN_ID, "train", 7, 2, old)


def test_the_model_release_key_is_the_models_hash():
    """Any change of a weight, a shape or a dtype is another model, hence another release."""
    model = [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros(2, dtype=np.float32)]
    key = transcript.model_release(model)
    assert key.startswith("model:") and transcript.model_release([a.copy() for a in model]) == key
    nudged = [model[0] + np.float32(1e-6), model[1]]
    others = (nudged, [model[0].reshape(3, 2), model[1]], [a.astype(np.float64) for a in model], model[:1])
    assert len({key, *(transcript.model_release(m) for m in others)}) == 5
    assert transcript.statistics_release("moments") == "statistics:moments"

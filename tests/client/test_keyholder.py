"""A hospital's side of protocol v2 (``client.keyholder``): real set-ups, real decryptions, and
every request a lying coordinator could make, refused.

The KeyHolders run the real ``precise`` preset (N=16384). One module-scoped federation of six
hospitals (committee of the first five, 3-of-5, so a decryption set needs 4; min_contributors
3; hospital 6 contributes but holds no key) is set up once; its hospitals' states are saved
after each stage, and every test rebuilds fresh KeyHolders from them (``KeyHolder.from_state``),
so no test sees another's requests.
"""

from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import he_federation
import numpy as np
import pytest
from check_polynomials import answer

from client.keyholder import KeyHolder
from client.refusals import RefusedRequest
from common.simulated_federation import simulated_hospital_name, write_simulated_federation
from he import transcript
from he.ciphertext import CiphertextLabel, CiphertextSum, EncryptedUpdate
from he.decrypt import DecryptionRequest, DecryptionShare, combine, decrypt_update
from he.encoding import UpdateEncoder
from he.errors import RosterError
from he.identity import SigningKey
from he.modarith import addmod
from he.roster import Quorum, Roster
from he.transcript import model_release, sign_hello

HOSPITALS, COMMITTEE, THRESHOLD, MIN_CONTRIBUTORS = 6, 5, 3, 3
SIZES = (40, 7)
MODEL = model_release([np.zeros(SIZES[0])])  # the starting model every test round releases


# -- set-up ----------------------------------------------------------------------------------------
def key_path(directory: Path, party: int) -> str:
    return str(directory / f"{simulated_hospital_name(party - 1)}.key")


def holders_for(roster: Roster, directory: Path, flower_run: int) -> dict[int, KeyHolder]:
    return {
        p: KeyHolder(roster, simulated_hospital_name(p - 1), flower_run, key_path(directory, p))
        for p in range(1, roster.num_hospitals + 1)
    }


def receive_all(holders: dict[int, KeyHolder], roster: Roster, dealings) -> None:
    """Each keyholder present (in ``holders``) receives what each dealer sealed for it."""
    statements = {d: statement for d, (_, statement, _) in dealings.items()}
    for k in [k for k in roster.quorum.committee if k in holders]:
        sealed = {d: blobs[k] for d, (blobs, _, _) in dealings.items() if k in blobs}
        assert holders[k].receive_dealings(sealed, statements) == []


def states(holders: dict[int, KeyHolder]) -> dict[int, dict[str, bytes]]:
    return {p: h.to_state() for p, h in holders.items()}


def updates_for(parties, seed: int) -> dict[int, tuple[list[np.ndarray], int]]:
    rng = np.random.default_rng(seed)
    return {p: ([rng.uniform(-1, 1, s) for s in SIZES], int(rng.integers(100, 1000))) for p in parties}


@dataclass
class Federation:
    """The module's federation, saved after each stage of the set-up and after round 1."""

    directory: Path
    roster: Roster
    hellos: dict[int, bytes]
    dealings: dict[int, tuple[dict[int, bytes], bytes]]
    after_hello: dict[int, dict[str, bytes]]
    after_deal: dict[int, dict[str, bytes]]
    ready: dict[int, dict[str, bytes]]  # after receive_dealings and the round-1 encryption
    updates: dict[int, tuple[list[np.ndarray], int]]  # round 1
    frames: dict[int, bytes]  # round 1 encrypted updates
    contributions: dict[int, bytes]  # round 1 signed contributions

    def holder(self, party: int, stage: str = "ready") -> KeyHolder:
        return KeyHolder.from_state(dict(getattr(self, stage)[party]))

    def holders(self, stage: str = "ready") -> dict[int, KeyHolder]:
        return {p: self.holder(p, stage) for p in getattr(self, stage)}

    def contributors(self, *parties: int) -> dict[int, bytes]:
        return {p: self.contributions[p] for p in parties}


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> Federation:
    directory = tmp_path_factory.mktemp("federation")
    roster = write_simulated_federation(
        directory,
        HOSPITALS,
        threshold=THRESHOLD,
        min_contributors=MIN_CONTRIBUTORS,
        preset="precise",
        committee_size=COMMITTEE,
    )
    return set_up(directory, roster, flower_run=1)


def set_up(directory: Path, roster: Roster, flower_run: int, offline: tuple[int, ...] = ()) -> Federation:
    """An honest set-up and round-1 encryption of the roster's hospitals but ``offline``."""
    holders = {p: h for p, h in holders_for(roster, directory, flower_run).items() if p not in offline}
    hellos = {p: h.hello() for p, h in holders.items()}
    after_hello = states(holders)
    dealings = {p: h.deal(hellos) for p, h in holders.items()}
    after_deal = states(holders)
    receive_all(holders, roster, dealings)
    updates = updates_for(holders, seed=1)
    encrypted = {p: h.encrypt("train", 1, *updates[p], release=MODEL) for p, h in holders.items()}
    return Federation(
        directory,
        roster,
        hellos,
        dealings,
        after_hello,
        after_deal,
        states(holders),
        updates,
        {p: frame for p, (frame, _, _) in encrypted.items()},
        {p: statement for p, (_, statement, _) in encrypted.items()},
    )


def decrypt(federation: Federation, holders, round_id: int, attempt: int, keyholders, contributors):
    """The coordinator's side: sum the frames, ask T, combine. Returns the exact field sums and
    the decoded (average, total examples)."""
    ctx, roster = holders[1].frame_context(), federation.roster  # frames bound to this run
    first = EncryptedUpdate.from_bytes(ctx, federation.frames[contributors[0]], "hospital")
    total = CiphertextSum(ctx, first.layout)
    for p in contributors:
        total.add(p, federation.frames[p])
    label = CiphertextLabel(roster.federation_id, holders[1].run_id, "train", round_id)
    request = DecryptionRequest(
        label,
        attempt,
        tuple(contributors),
        tuple(keyholders),
        total.result.num_ciphertexts,
        total.result.coefficients,
    )
    contributions = federation.contributors(*contributors)
    shares = [
        DecryptionShare.from_bytes(
            ctx,
            answer(holders[k], "train", round_id, attempt, list(keyholders), contributions),
            str(k),
        )
        for k in keyholders
    ]
    noise_bits = ctx.params.decryption_noise_bits(len(roster.committee), roster.max_attempts)
    fields = combine(ctx, total.result, shares, request, noise_bits)
    return fields, decrypt_update(ctx, total.result, fields)


def expected_fields(ctx, updates, contributors) -> np.ndarray:
    """The exact sum of the contributors' packed fields (``precise`` rounds to nearest)."""
    encoder = UpdateEncoder(ctx.params, ctx.num_payload)
    total = None
    for p in contributors:
        fields = encoder.encode(*updates[p], np.random.default_rng(0)).fields
        total = fields if total is None else addmod(total, fields, ctx.payload_moduli)
    return total


# -- the real protocol end to end ------------------------------------------------------------------
def test_set_up_encrypt_and_decrypt_end_to_end(federation):
    """Six hospitals encrypt; two attempts with different decryption sets both give the exact
    field sums and the weighted average."""
    holders = federation.holders()
    contributors = list(range(1, HOSPITALS + 1))
    want_fields = expected_fields(holders[1].ctx, federation.updates, contributors)
    updates = [federation.updates[p][0] for p in contributors]
    counts = [federation.updates[p][1] for p in contributors]
    average = [sum(c * u[i] for c, u in zip(counts, updates, strict=True)) / sum(counts) for i in range(2)]
    for attempt, keyholders in ((1, [1, 2, 3, 4]), (2, [1, 2, 3, 4, 5]), (3, [2, 3, 4, 5])):
        fields, (arrays, examples) = decrypt(federation, holders, 1, attempt, keyholders, contributors)
        assert np.array_equal(fields, want_fields)
        # 54-bit fields: the quantization error of the average is ~1e-11 here.
        assert max(float(np.max(np.abs(a - w))) for a, w in zip(arrays, average, strict=True)) < 1e-9
        assert examples == pytest.approx(sum(counts), rel=1e-12)


def test_a_hospital_outside_the_committee_holds_no_key(federation):
    holder = federation.holder(6)
    assert not holder.is_keyholder
    with pytest.raises(RefusedRequest, match="not a keyholder"):
        answer(holder, "train", 1, 1, [1, 2, 3, 4], federation.contributors(1, 2, 3))
    with pytest.raises(RefusedRequest, match="not a keyholder"):
        holder.receive_dealings({}, {})


def test_secrets_never_show_in_repr_or_public_state(federation):
    holder = federation.holder(1)
    secret = holder.secrets["secret-key"]
    text = repr(holder)
    assert "secret-key" not in text and secret.hex()[:32] not in text
    assert holder.secrets["channel"].hex() not in holder.to_state()["public"].decode()


# -- restart ---------------------------------------------------------------------------------------
def test_restart_resends_the_stored_share_and_keeps_every_refusal(federation):
    contributions = federation.contributors(1, 2, 3, 4)
    holder = federation.holder(1)
    share = answer(holder, "train", 1, 1, [1, 2, 3, 4], contributions)
    restarted = KeyHolder.from_state(holder.to_state())
    assert answer(restarted, "train", 1, 1, [4, 3, 2, 1], contributions) == share
    # The resend is the stored share, not a recomputation: a fresh answer has fresh flooding.
    assert answer(federation.holder(1), "train", 1, 1, [1, 2, 3, 4], contributions) != share
    with pytest.raises(RefusedRequest, match="another contributor set"):
        answer(restarted, "train", 1, 2, [1, 2, 3, 4], federation.contributors(1, 2, 3))
    with pytest.raises(RefusedRequest, match="already answered"):
        answer(restarted, "train", 1, 1, [1, 2, 3, 5], contributions)
    max_attempts = federation.roster.max_attempts
    answer(restarted, "train", 1, max_attempts, [1, 2, 3, 5], contributions)
    again = KeyHolder.from_state(restarted.to_state())
    for attempt in (0, max_attempts + 1):
        with pytest.raises(RefusedRequest, match=f"attempt {attempt} is outside"):
            answer(again, "train", 1, attempt, [1, 2, 3, 4], contributions)
    with pytest.raises(RefusedRequest, match="already answered"):
        answer(again, "train", 1, 1, [1, 2, 3, 5], contributions)


def test_restart_resends_the_same_encryption(federation):
    holder = KeyHolder.from_state(federation.holder(2).to_state())
    other_update = updates_for([2], seed=99)[2]
    frame, statement, _ = holder.encrypt("train", 1, *other_update, release=MODEL)
    assert (frame, statement) == (federation.frames[2], federation.contributions[2])


# -- set-up attacks --------------------------------------------------------------------------------
def rewritten(hello: bytes, **fields) -> bytes:
    """``hello`` with some signed fields replaced and the original signature kept."""
    message = json.loads(hello)
    message["fields"] |= fields
    return json.dumps(message).encode()


def forged_hellos(federation: Federation) -> dict[str, tuple[dict[int, bytes], str]]:
    """Set-ups a coordinator could relay to hospital 1, and what hospital 1 must say."""
    roster, hellos = federation.roster, federation.hellos
    server_key = SigningKey.generate()
    server_channel = bytes(range(32))
    other_run = KeyHolder(roster, "hospital-2", 2, key_path(federation.directory, 2)).hello()
    without = {p: h for p, h in hellos.items() if p != 3}
    return {
        "forged by the server": (
            hellos | {2: sign_hello(server_key, roster, "hospital-2", 1, b"\0" * 32, server_channel)},
            "does not verify",
        ),
        "channel key swapped": (
            hellos | {2: rewritten(hellos[2], channel_key=server_channel.hex())},
            "does not verify",
        ),
        "another hospital's hello relayed": (hellos | {2: hellos[3]}, "does not verify"),
        "from another Flower run": (hellos | {2: other_run}, "Flower run 2"),
        "own hello omitted": ({p: h for p, h in hellos.items() if p != 1}, "omits or alters"),
        "own hello altered": (hellos | {1: rewritten(hellos[1], contribution="00" * 32)}, "omits or alters"),
        "too few keyholders": (
            {p: h for p, h in without.items() if p != 4},
            "set-up has 3 of the 5 keyholders, fewer than the roster's minimum 4; "
            "missing keyholders: hospital-3, hospital-4",
        ),
        "a hospital outside the roster": (hellos | {7: hellos[6]}, r"party 7 is not in \[1, 6\]"),
    }


@pytest.mark.parametrize(
    "attack",
    [
        "forged by the server",
        "channel key swapped",
        "another hospital's hello relayed",
        "from another Flower run",
        "own hello omitted",
        "own hello altered",
        "too few keyholders",
        "a hospital outside the roster",
    ],
)
def test_forged_set_up_refused(federation, attack):
    hellos, message = forged_hellos(federation)[attack]
    holder = federation.holder(1, "after_hello")
    with pytest.raises(RefusedRequest, match=message):
        holder.deal(hellos)
    assert "secret-key" not in holder.secrets  # refused before drawing a secret


def test_a_hospital_outside_the_committee_may_be_absent(federation):
    hellos = {p: h for p, h in federation.hellos.items() if p != 6}
    sealed, _, _ = federation.holder(1, "after_hello").deal(hellos)
    assert sorted(sealed) == [2, 3, 4, 5]


def test_a_keyholder_offline_at_set_up_is_left_out_and_the_others_decrypt(federation):
    """Keyholder 5 is offline at set-up: K' = {1, 2, 3, 4} meets the minimum ceil((5 + 3)/2) = 4.
    Every dealer deals to K' only, with the roster's threshold; T = K' decrypts the exact sum;
    a set naming keyholder 5, or one of three (sized against K, not K'), is refused."""
    run = set_up(federation.directory, federation.roster, flower_run=7, offline=(5,))
    for dealer, (sealed, _, _) in run.dealings.items():
        assert sorted(sealed) == [k for k in (1, 2, 3, 4) if k != dealer]
    holders = run.holders()
    assert {(h.setup.committee, h.setup.absent) for h in holders.values()} == {
        ((1, 2, 3, 4), ("hospital-5",))
    }
    contributors = [1, 2, 3, 4, 6]
    fields, (_, examples) = decrypt(run, holders, 1, 1, [1, 2, 3, 4], contributors)
    assert np.array_equal(fields, expected_fields(holders[1].ctx, run.updates, contributors))
    assert examples == pytest.approx(sum(run.updates[p][1] for p in contributors), rel=1e-12)
    for keyholders, refusal in (
        ([1, 2, 3, 5], r"includes keyholders \[5\] that took no part"),
        ([1, 2, 3], "below"),
    ):
        with pytest.raises(RefusedRequest, match=refusal):
            answer(run.holder(1), "train", 1, 2, keyholders, run.contributors(*contributors))


def tampered(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 1])


def relayed_dealings(federation: Federation) -> dict[str, tuple[dict[int, bytes], dict[int, bytes]]]:
    """What the coordinator relays to keyholder 1 (sealed shares, statements by dealer); in each,
    dealer 2's entry is not what dealer 2 sealed for keyholder 1 and signed."""
    sealed = {d: blobs[1] for d, (blobs, _, _) in federation.dealings.items() if 1 in blobs}
    signed = {d: statement for d, (_, statement, _) in federation.dealings.items()}
    dealings = federation.dealings
    return {
        "tampered sealed share": (sealed | {2: tampered(sealed[2])}, signed),
        "share sealed for keyholder 4": (sealed | {2: dealings[2][0][4]}, signed),
        "dealer 3's share and statement": (sealed | {2: sealed[3]}, signed | {2: signed[3]}),
        "dealer 3's share, dealer 2's statement": (sealed | {2: sealed[3]}, signed),
        "missing share": ({d: b for d, b in sealed.items() if d != 2}, signed),
        "missing statement": (sealed, {d: s for d, s in signed.items() if d != 2}),
    }


@pytest.mark.parametrize(
    "attack",
    [
        "tampered sealed share",
        "share sealed for keyholder 4",
        "dealer 3's share and statement",
        "dealer 3's share, dealer 2's statement",
        "missing share",
        "missing statement",
    ],
)
def test_bad_dealing_names_the_dealer(federation, attack):
    sealed, statements = relayed_dealings(federation)[attack]
    holder = federation.holder(1, "after_deal")
    assert holder.receive_dealings(sealed, statements) == [2]
    assert "dealt:2" not in holder.secrets
    assert sorted(holder.dealers) == [1, 3, 4, 5, 6]


def test_contributor_whose_dealing_failed_refused(federation):
    sealed, statements = relayed_dealings(federation)["tampered sealed share"]
    holder = federation.holder(1, "after_deal")
    assert holder.receive_dealings(sealed, statements) == [2]
    with pytest.raises(RefusedRequest, match=r"contributors \[2\] dealt no valid share"):
        answer(holder, "train", 1, 1, [1, 2, 3, 4], federation.contributors(1, 2, 3, 4))
    answer(holder, "train", 1, 1, [1, 2, 3, 4], federation.contributors(1, 3, 4))  # without 2


# -- decryption-request checks ---------------------------------------------------------------------
def forged_contribution(federation: Federation, party: int) -> bytes:
    """``party``'s round-1 contribution, re-signed with the coordinator's own key."""
    fields = json.loads(federation.contributions[party])["fields"]
    assert fields["party"] == party and fields["round"] == 1
    return SigningKey.generate().sign("contribution", fields)


def bad_requests(federation: Federation) -> dict[str, tuple[int, list[int], dict[int, bytes], str]]:
    """(keyholder asked, T, contributions, refusal) for round 1, attempt 1."""
    u = federation.contributors(1, 2, 3, 4)
    round_two = federation.holder(2)
    round_two.encrypt("train", 2, *updates_for([2], seed=5)[2], release=MODEL)
    later = round_two.secrets["sent-statement:train"]
    return {
        "T below the quorum minimum": (1, [1, 2, 3], u, "quorum-intersection minimum"),
        "T not within the committee": (1, [1, 2, 3, 6], u, "not a set of committee members"),
        "T with a repeated member": (1, [1, 2, 3, 3], u, "not a set of committee members"),
        "self not in T": (5, [1, 2, 3, 4], u, "not in the decryption set"),
        "U below min_contributors": (1, [1, 2, 3, 4], federation.contributors(1, 2), "fewer than the roster"),
        "forged contribution": (
            1,
            [1, 2, 3, 4],
            u | {2: forged_contribution(federation, 2)},
            "not validly signed",
        ),
        "unsigned contribution": (1, [1, 2, 3, 4], u | {2: b"{}"}, "not validly signed"),
        "contribution of another party": (1, [1, 2, 3, 4], u | {2: u[3]}, "not validly signed"),
        "contribution for another round": (1, [1, 2, 3, 4], u | {2: later}, "not validly signed"),
    }


@pytest.mark.parametrize(
    "attack",
    [
        "T below the quorum minimum",
        "T not within the committee",
        "T with a repeated member",
        "self not in T",
        "U below min_contributors",
        "forged contribution",
        "unsigned contribution",
        "contribution of another party",
        "contribution for another round",
    ],
)
def test_bad_decryption_request_refused(federation, attack):
    keyholder, keyholders, contributions, message = bad_requests(federation)[attack]
    holder = federation.holder(keyholder)
    with pytest.raises(RefusedRequest, match=message):
        answer(holder, "train", 1, 1, keyholders, contributions)
    assert holder.decryptions == {}  # nothing recorded: the valid request still gets an answer
    answer(holder, "train", 1, 1, [1, 2, 3, 4, 5], federation.contributors(1, 2, 3, 4))


def test_rounds_outside_the_flooding_budget_refused(federation):
    """The flooding is sized for training rounds 1..max_rounds and three statistics passes; a
    round outside them is neither encrypted nor decrypted."""
    holder = federation.holder(1)
    max_rounds = holder.ctx.params.max_rounds
    update = updates_for([1], seed=4)[1]
    budget = r"is outside \[1, |is not one of"  # not the other refusals, which also name the round
    for kind, round_id in (("train", 0), ("train", max_rounds + 1), ("statistics", 1)):
        with pytest.raises(RefusedRequest, match=budget):
            holder.encrypt(kind, round_id, *update, release=MODEL)
        with pytest.raises(RefusedRequest, match=budget):
            answer(holder, kind, round_id, 1, [1, 2, 3, 4], federation.contributors(1, 2, 3))
    assert holder.encrypted == {"train": 1} and holder.decryptions == {}


# -- K = 32 at the he level ------------------------------------------------------------------------
def test_random_decryption_sets_of_a_32_member_committee_decrypt_exactly():
    """K = 32 (the most a committee may have), t_K = 16, so T needs 24: four random decryption
    sets of random sizes give the exact sum of the contributors' fields. Only the five
    contributors deal (to all 32 keyholders), which keeps the test fast."""
    ctx = he_federation.context(he_federation.TEST_PARAMS.name)
    fed = he_federation.build_federation(ctx, 5, threshold=16, committee_size=32)
    assert fed.quorum.committee == tuple(range(1, 33)) and fed.quorum.min_decryption_set == 24
    rng = random.Random(32)
    contributors = fed.parties
    updates, counts = he_federation.random_updates(ctx.params, 5, (500, 3), seed=32)
    aggregate = fed.encrypt_all(updates, counts, contributors)
    encoder = UpdateEncoder(ctx.params, ctx.num_payload)
    want = None
    for update, count in zip(updates, counts, strict=True):
        fields = encoder.encode(update, count, np.random.default_rng(0)).fields
        want = fields if want is None else addmod(want, fields, ctx.payload_moduli)
    for _ in range(4):
        size = rng.randint(fed.quorum.min_decryption_set, 32)
        keyholders = fed.quorum.check_decryption_set(rng.sample(fed.quorum.committee, size))
        request = fed.request(aggregate, contributors, keyholders)
        assert np.array_equal(combine(ctx, aggregate, fed.shares(request), request, fed.noise_bits), want)


def test_threshold_one_refused(tmp_path):
    with pytest.raises(RosterError, match="t = 1"):
        Quorum(tuple(range(1, 33)), 1)
    with pytest.raises(RosterError, match="t = 1"):
        write_simulated_federation(tmp_path, 3, threshold=1, preset="precise")


# -- fresh keys every run --------------------------------------------------------------------------
def test_keys_and_run_ids_are_fresh_for_every_set_up(tmp_path):
    """Two set-ups of one roster (Flower runs 1 and 2): every hospital's s_i, channel key and the
    run id differ, and no two hospitals share a secret."""
    roster = write_simulated_federation(tmp_path, 3, threshold=2, preset="precise")
    runs = []
    for flower_run in (1, 2):
        holders = holders_for(roster, tmp_path, flower_run)
        hellos = {p: h.hello() for p, h in holders.items()}
        receive_all(holders, roster, {p: h.deal(hellos) for p, h in holders.items()})
        runs.append(holders)
    secrets = [h.secrets["secret-key"] for run in runs for h in run.values()]
    channels = [h.secrets["channel"] for run in runs for h in run.values()]
    assert len(set(secrets)) == len(set(channels)) == 6
    assert len({run[1].run_id for run in runs}) == 2
    assert all(h.run_id == run[1].run_id for run in runs for h in run.values())


def test_a_second_dealing_is_refused_so_the_secret_is_never_replaced(federation):
    """A retried ``deal`` would draw a new s_i, leaving keyholders with shares of the old one."""
    holder = federation.holder(1, "after_deal")
    with pytest.raises(RefusedRequest, match="already dealt"):
        holder.deal(federation.hellos)


@pytest.mark.parametrize("attempt", [1.5, True, "1"], ids=repr)
def test_an_attempt_that_is_not_an_integer_is_refused(federation, attempt):
    holder = federation.holder(1)
    with pytest.raises(RefusedRequest, match="attempt"):
        answer(holder, "train", 1, attempt, [1, 2, 3, 4, 5], federation.contributors(1, 2, 3, 4))
    assert holder.decryptions == {}


def test_contributions_weighted_apart_are_refused(federation):
    """The isolation attack: the coordinator sends hospital 1 a tiny weight scale and the others a
    huge one, so the aggregate would be almost hospital 1's update alone. Each contribution signs
    its layout (shapes, clip, weight scale); a keyholder refuses a set with more than one."""
    updates = updates_for([1, 2, 3, 4], seed=7)
    signed = {}
    for party, scale in ((1, 50), (2, 1000), (3, 1000), (4, 1000)):
        holder = federation.holder(party)
        _, signed[party], _ = holder.encrypt("train", 2, *updates[party], weight_scale=scale, release=MODEL)
    keyholder = federation.holder(5)
    with pytest.raises(RefusedRequest, match="different layouts"):
        answer(keyholder, "train", 2, 1, [1, 2, 3, 4, 5], signed)
    same = {}
    for party in (1, 2, 3, 4):
        _, same[party], _ = federation.holder(party).encrypt(
            "train", 2, *updates[party], weight_scale=1000, release=MODEL
        )
    answer(keyholder, "train", 2, 1, [1, 2, 3, 4, 5], same)  # one layout: answered


def test_a_contributor_signing_another_coefficient_count_is_refused(federation):
    """A keyholder decrypts as many leading coefficients as the contributors signed, all alike,
    never a count the server names. A colluding contributor that signs every coefficient (to have
    the whole aggregate decrypted, padding and noise) while the others sign their few is refused."""
    updates = updates_for([1, 2, 3, 4], seed=8)
    signed = {}
    for party in (1, 2, 3, 4):
        frame, signed[party], _ = federation.holder(party).encrypt("train", 3, *updates[party], release=MODEL)
    colluder = federation.holder(4)
    update = EncryptedUpdate.from_bytes(colluder.frame_context(), frame, "hospital 4")
    assert update.coefficients < colluder.ctx.n
    signed[4] = transcript.sign_contribution(
        colluder._signer(), colluder.roster, colluder.run_id, "train", 3, 4, frame,
        update.num_ciphertexts, colluder.ctx.n, update.layout.to_json(), MODEL,
    )  # fmt: skip
    with pytest.raises(RefusedRequest, match="different layouts or ciphertext or coefficient counts"):
        answer(federation.holder(5), "train", 3, 1, [1, 2, 3, 4, 5], signed)


WRITES: list[str] = []  # paths opened for writing while RECORDING (sys.audit "open" events)
RECORDING: list[bool] = []


def _record_writes(event: str, args: tuple) -> None:
    if RECORDING and event == "open":
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR)
        )
        if writes:
            WRITES.append(str(path))


def test_no_secret_passes_through_the_filesystem(federation, tmp_path):
    """A leftover ``/dev/shm`` scratch file once gave away a hospital's update and key share.
    Now set-up, encryption and decryption open no file for writing at all: SEAL's samplers and
    NTTs run in memory (the signing key is only read)."""
    sys.addaudithook(_record_writes)  # audit hooks cannot be removed; it records only when asked
    holders = federation.holders("after_hello")
    RECORDING.append(True)
    try:
        (tmp_path / "control").write_bytes(b"x")  # the hook sees a write (control)
        assert [str(tmp_path / "control")] == WRITES
        WRITES.clear()
        dealings = {p: h.deal(federation.hellos) for p, h in holders.items()}
        receive_all(holders, federation.roster, dealings)
        signed = {
            p: holders[p].encrypt("train", 1, *federation.updates[p], release=MODEL)[1] for p in (1, 2, 3, 4)
        }
        answer(holders[1], "train", 1, 1, [1, 2, 3, 4, 5], signed)
    finally:
        RECORDING.clear()
    assert WRITES == []


def test_dealings_are_received_once(federation):
    """A second delivery (say, another statement a colluding dealer signed) never replaces a share."""
    holder = federation.holder(1)
    statements = {d: statement for d, (_, statement, _) in federation.dealings.items()}
    sealed = {d: blobs[1] for d, (blobs, _, _) in federation.dealings.items() if 1 in blobs}
    with pytest.raises(RefusedRequest, match="already received"):
        holder.receive_dealings(sealed, statements)

"""A lying coordinator drives the hospitals' real Flower ClientApp handlers (``client.app``).

The coordinator (``lying_coordinator``) builds each message as the strategy would and calls
the handlers directly with the hospital's Flower ``Context``, so what is tested is what a
SuperNode runs. It sets up a federation of four simulated hospitals (3-of-4: a decryption set needs all
four; min_contributors 3) honestly, trains and decrypts round 1, then tries every lie: each is
refused with a typed error that says why, the hospital's stored state is unchanged, and where
the lie is a computation (two encryptions under one seeded ``c1``), that computation yields
nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from lying_coordinator import (
    HOSPITALS,
    PARTIES,
    REFUSALS,
    Coordinator,
    contributions,
    decrypt_config,
    federation_of,
)

from client import app as hospital
from client.refusals import RefusedRequest
from common import protocol as p
from common.records import blobs_of
from he.ciphertext import CiphertextLabel, CiphertextSum, EncryptedUpdate
from he.decrypt import DecryptionRequest, DecryptionShare, combine, decrypt_update
from he.encoding import UpdateLayout
from he.identity import SigningKey
from he.transcript import sign_hello
from models.pooled_metrics import EvaluationLayout
from server.app import initial_weights

FLOWER_RUN = 77


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """Set-up and round 1, honestly; returns what the coordinator saw, and the hospitals' states."""
    directory = tmp_path_factory.mktemp("federation")
    settings, roster = federation_of(directory)
    server = Coordinator(directory, settings, roster, FLOWER_RUN)
    hellos = server.set_up()
    weights = initial_weights(settings)
    train_config = server.train_config(1)
    return server, hellos, train_config, weights, server.train(1, weights)


def test_the_honest_coordinator_decrypts_round_one(federation):
    server, _, train_config, weights, replies = federation
    holder = hospital.load_keyholder(server.contexts[1])
    ctx = holder.frame_context()
    sums = EvaluationLayout(server.settings.num_classes, server.settings.eval_bins).size  # pooled evaluation
    layout = UpdateLayout.of(weights, train_config[p.CLIP], train_config[p.WEIGHT_SCALE], sums)
    label = CiphertextLabel(server.roster.federation_id, holder.run_id, "train", 1)
    total = CiphertextSum(ctx, layout)
    for q in PARTIES:
        total.add(q, replies[q][p.UPDATE])
    shares = [
        DecryptionShare.from_bytes(
            ctx,
            blobs_of(server.send(k, p.DECRYPT, decrypt_config(), blobs=contributions(replies)))[
                p.DECRYPTION_SHARE
            ],
            f"party {k}",
        )
        for k in PARTIES
    ]
    request = DecryptionRequest(
        label, 1, PARTIES, PARTIES, total.result.num_ciphertexts, total.result.coefficients
    )
    noise_bits = ctx.params.decryption_noise_bits(HOSPITALS, server.roster.max_attempts)
    average, examples = decrypt_update(
        ctx, total.result, combine(ctx, total.result, shares, request, noise_bits)
    )
    assert [a.shape for a in average] == [w.shape for w in weights]
    assert examples > 0 and all(np.all(np.isfinite(a)) for a in average)


def lies(federation) -> dict[str, tuple[int, str, dict, dict, str]]:
    """name -> (hospital, message type, config, blobs, what the refusal says)."""
    server, hellos, train_config, _, replies = federation
    forged_hello = sign_hello(
        SigningKey.generate(), server.roster, "hospital-2", FLOWER_RUN, bytes(32), bytes(32)
    )
    relayed = {f"{p.HELLO_BLOB}-{q}": h for q, h in hellos.items()}
    two = contributions(replies, (1, 2))
    three = contributions(replies, (1, 2, 3))
    return {
        "another roster": (1, p.HELLO, {p.ROSTER_FINGERPRINT: "0" * 64}, {}, "refusing to take part"),
        "a hello the server signed itself": (
            1,
            p.DEAL,
            {},
            relayed | {f"{p.HELLO_BLOB}-2": forged_hello},
            "does not verify",
        ),
        "one hospital's update presented as a sum": (
            1,
            p.DECRYPT,
            decrypt_config(),
            contributions(replies, (3,)),
            "contributors",
        ),
        "fewer contributors than the roster's minimum": (1, p.DECRYPT, decrypt_config(), two, "contributors"),
        "a contribution signed by nobody": (
            1,
            p.DECRYPT,
            decrypt_config(),
            three | {f"{p.CONTRIBUTION}-4": b'{"not": "signed"}'},
            "sign",
        ),
        "a decryption set below the quorum": (
            1,
            p.DECRYPT,
            decrypt_config((1, 2, 3)),
            three,
            "decryption set",
        ),
        "a keyholder list that is not numbers": (
            1,
            p.DECRYPT,
            decrypt_config(("1", "2", "x", "4")),
            three,
            "keyholders",
        ),
        "a blob name that is not a party": (
            1,
            p.DECRYPT,
            decrypt_config(),
            three | {f"{p.CONTRIBUTION}-four": b"x"},
            "blob",
        ),
        "an attempt beyond the roster's budget": (1, p.DECRYPT, decrypt_config(attempt=99), three, "attempt"),
        "a round beyond the flooding budget": (1, p.DECRYPT, decrypt_config(round_id=10**6), three, "round"),
        "training at round 0": (1, p.TRAIN, {**train_config, p.ROUND: 0}, {}, "round"),
        "training with a NaN clip": (
            1,
            p.TRAIN,
            {**train_config, p.ROUND: 2, p.CLIP: float("nan")},
            {},
            "clip",
        ),
        "training with weight scale 0": (
            1,
            p.TRAIN,
            {**train_config, p.ROUND: 2, p.WEIGHT_SCALE: 0},
            {},
            "weight_scale",
        ),
        "training at a round that is not a number": (1, p.TRAIN, {**train_config, p.ROUND: "2"}, {}, "round"),
    }


LIES = (
    "another roster",
    "a hello the server signed itself",
    "one hospital's update presented as a sum",
    "fewer contributors than the roster's minimum",
    "a contribution signed by nobody",
    "a decryption set below the quorum",
    "a keyholder list that is not numbers",
    "a blob name that is not a party",
    "an attempt beyond the roster's budget",
    "a round beyond the flooding budget",
    "training at round 0",
    "training with a NaN clip",
    "training with weight scale 0",
    "training at a round that is not a number",
)


@pytest.mark.parametrize("lie", LIES)
def test_every_lie_is_refused_by_name_and_changes_nothing(federation, lie):
    server, _, _, weights, _ = federation
    party, message_type, config, blobs, reason = lies(federation)[lie]
    before = server.state(party)
    stage = server.after_hello[party] if message_type == p.DEAL else None  # a deal comes right after hello
    with pytest.raises(REFUSALS, match=f"(?i){reason}"):
        server.send(party, message_type, config, blobs, weights if message_type == p.TRAIN else None, stage)
    assert server.state(party) == before


def test_a_second_encryption_of_a_round_reuses_nothing_it_could_leak(federation):
    """The seeded c1 of a round is fixed, so two different updates under it would give away
    their difference: c0 - c0' = (m - m') + (e - e'). Asked to train round 1 again on another
    model, the hospital resends its first ciphertext: the attack's difference is zero."""
    server, _, train_config, weights, replies = federation
    other_model = [w + 0.5 for w in weights]
    again = blobs_of(server.send(1, p.TRAIN, {**train_config, p.PARTY: 1}, arrays=other_model))
    ctx = hospital.load_keyholder(server.contexts[1]).frame_context()
    first = EncryptedUpdate.from_bytes(ctx, replies[1][p.UPDATE], "first").c0
    second = EncryptedUpdate.from_bytes(ctx, again[p.UPDATE], "second").c0
    assert np.array_equal(first, second)


def test_a_decryption_request_is_answered_once_and_a_changed_one_refused(federation):
    server, _, _, _, replies = federation
    request = (decrypt_config(attempt=2), contributions(replies))
    first = blobs_of(server.send(2, p.DECRYPT, *request))[p.DECRYPTION_SHARE]
    assert blobs_of(server.send(2, p.DECRYPT, *request))[p.DECRYPTION_SHARE] == first  # a resend
    with pytest.raises(RefusedRequest):  # the same attempt with another contributor set
        server.send(2, p.DECRYPT, decrypt_config(attempt=2), contributions(replies, (1, 2, 3)))


def test_a_smaller_committee_shown_to_one_hospital_splits_it_from_the_run(tmp_path):
    """2-of-4: a set-up may proceed with 3 keyholders. The coordinator shows hospital 1 the
    set-up without hospital 4's hello (committee {1, 2, 3}) and the others all four hellos
    (committee {1, 2, 3, 4}). The committee and the hellos make the run id, so the two views are
    two runs: hospital 1 deals to 2 and 3 only, every keyholder names the dealers of the other view,
    and none decrypts an aggregate that mixes the views."""
    settings, roster = federation_of(tmp_path, threshold=2)
    server = Coordinator(tmp_path, settings, roster, FLOWER_RUN)
    server.set_up(withheld={1: (4,)})
    holders = {q: hospital.load_keyholder(server.contexts[q]) for q in PARTIES}
    assert holders[1].setup.committee == (1, 2, 3) and holders[2].setup.committee == (1, 2, 3, 4)
    assert holders[1].run_id != holders[2].run_id
    assert server.complaints == {1: [2, 3], 2: [1], 3: [1], 4: [1]}
    replies = server.train(1, initial_weights(settings))
    with pytest.raises(RefusedRequest, match=r"contributors \[1\] dealt no valid share"):
        server.send(2, p.DECRYPT, decrypt_config((1, 2, 3)), contributions(replies, (1, 2, 3)))
    with pytest.raises(RefusedRequest, match=r"contributors \[2, 3\] dealt no valid share"):
        server.send(1, p.DECRYPT, decrypt_config((1, 2, 3)), contributions(replies, (1, 2, 3)))


def test_dealings_inside_a_statistics_message_are_verified_and_a_bad_share_complained_about(tmp_path):
    """The strategy relays the dealings inside the first ``query.statistics`` message: each is
    checked against its dealer's signed DEALING statement as ``query.dealings`` checks it. A share
    altered on the way is named in the reply's complaints (beside the encrypted statistics), that
    dealer is refused as a contributor, and the dealings are not accepted a second time."""
    settings, roster = federation_of(tmp_path)
    server = Coordinator(tmp_path, settings, roster, FLOWER_RUN)
    server.set_up(relay=p.STATISTICS, tamper=(2, 1))
    assert server.complaints == {1: [2], 2: [], 3: [], 4: []}
    assert all(p.UPDATE in blobs and p.CONTRIBUTION in blobs for blobs in server.statistics_replies.values())
    holders = {q: hospital.load_keyholder(server.contexts[q]) for q in PARTIES}
    assert sorted(holders[1].dealers) == [1, 3, 4] and sorted(holders[2].dealers) == list(PARTIES)
    replies = server.train(1, initial_weights(settings))
    with pytest.raises(RefusedRequest, match=r"contributors \[2\] dealt no valid share"):
        server.send(1, p.DECRYPT, decrypt_config(), contributions(replies))
    again = {**server.statistics_config("moments"), p.WITH_DEALINGS: True}
    with pytest.raises(RefusedRequest, match="already received the dealings"):
        server.send(3, p.STATISTICS, again)


def test_a_keyholder_asked_to_decrypt_before_any_dealings_refuses_by_name(tmp_path):
    """Dealings relayed to no keyholder (neither a ``query.dealings`` message nor a statistics
    message with them): every decryption request is refused, naming the contributors it holds no
    share from (its own too: it is kept when the dealings arrive)."""
    settings, roster = federation_of(tmp_path)
    server = Coordinator(tmp_path, settings, roster, FLOWER_RUN)
    hellos = {q: blobs_of(server.send(q, p.HELLO))[p.HELLO_BLOB] for q in PARTIES}
    shown = {f"{p.HELLO_BLOB}-{h}": hello for h, hello in hellos.items()}
    for q in PARTIES:
        server.send(q, p.DEAL, blobs=shown)
    replies = server.train(1, initial_weights(settings))
    with pytest.raises(RefusedRequest, match=r"contributors \[1, 2, 3, 4\] dealt no valid share"):
        server.send(1, p.DECRYPT, decrypt_config(), contributions(replies))

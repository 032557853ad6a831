"""A lying coordinator drives the hospitals' real Flower ClientApp handlers (``client.app``).

The coordinator here builds each message as the strategy would (``strategies.messaging``) and
calls the handlers directly with the hospital's Flower ``Context``, so what is tested is what
a SuperNode runs: the handlers' own parsing of configs and blob names, then the key holder's
checks. It sets up a federation of four simulated hospitals (3-of-4: a decryption set needs all
four; min_contributors 3) honestly, trains and decrypts round 1, then tries every lie: each is
refused with a typed error that says why, the hospital's stored state is unchanged, and where
the lie is a computation (two encryptions under one seeded ``c1``), that computation yields
nothing.
"""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from client import app as hospital
from client.identity import IdentityError
from client.keyholder import RefusedRequest
from he import protocol as p
from he.ciphertext import CiphertextLabel, CiphertextSum, EncryptedUpdate
from he.decrypt import DecryptionRequest, DecryptionShare, combine, decrypt_update
from he.encoding import UpdateLayout
from he.errors import HEError
from he.identity import SigningKey
from he.roster import write_simulated_federation
from he.transcript import sign_hello
from models.pooled_metrics import EvaluationLayout
from server.app import initial_weights
from server.settings import RunSettings
from strategies.messaging import blobs_of, make_content

HOSPITALS, THRESHOLD, MIN_CONTRIBUTORS, FLOWER_RUN = 4, 3, 3, 77
PARTIES = tuple(range(1, HOSPITALS + 1))
REFUSALS = (RefusedRequest, IdentityError, HEError)  # a hospital's typed refusals
HANDLERS = {
    p.HELLO: hospital.hello,
    p.DEAL: hospital.deal,
    p.DEALINGS: hospital.dealings,
    p.TRAIN: hospital.train,
    p.DECRYPT: hospital.decrypt,
}


class Coordinator:
    """Sends messages to the hospitals' handlers; honest unless a test makes it lie."""

    def __init__(self, directory, settings: RunSettings, roster) -> None:
        self.roster = roster
        self.settings = settings
        self.after_hello: dict[int, dict] = {}  # each hospital's stored state right after its hello
        self.config = {
            **settings.task_config(),
            p.PRESET: settings.he_preset,
            p.ROSTER_FINGERPRINT: roster.fingerprint,
            p.SIMULATED_FEDERATION: str(directory),
            p.FEATURE_MEAN: [0.0] * settings.num_features,  # the statistics passes' result, skipped here
            p.FEATURE_STD: [1000.0] * settings.num_features,
        }
        self.contexts = {
            party: Context(
                run_id=FLOWER_RUN,
                node_id=party,
                node_config={"partition-id": party - 1, "num-partitions": HOSPITALS},
                state=RecordDict(),
                run_config={},
            )
            for party in PARTIES
        }

    def send(
        self, party: int, message_type: str, config=None, blobs=None, arrays=None, state=None
    ) -> Message:
        """Deliver one message; ``state``: the hospital's stored state to start from instead."""
        metadata = Metadata(
            run_id=FLOWER_RUN,
            message_id=f"m-{time.monotonic_ns()}",
            src_node_id=0,
            dst_node_id=party,
            reply_to_message_id="",
            group_id="",
            created_at=time.time(),
            ttl=600.0,
            message_type=message_type,
        )
        content = make_content({**self.config, **(config or {})}, blobs, arrays)
        context = self.contexts[party]
        if state is not None:
            context = Context(context.run_id, context.node_id, context.node_config, RecordDict(), {})
            context.state[hospital.STATE] = ConfigRecord(copy.deepcopy(state))
        return HANDLERS[message_type](Message(metadata=metadata, content=content), context)

    def state(self, party: int) -> dict:
        return copy.deepcopy(dict(self.contexts[party].state[hospital.STATE]))


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """Set-up and round 1, honestly; returns what the coordinator saw, and the hospitals' states."""
    directory = tmp_path_factory.mktemp("federation")
    settings = RunSettings(
        strategy="encrypted_fedavg",
        he_preset="precise",
        threshold=THRESHOLD,
        min_train_nodes=MIN_CONTRIBUTORS,
    )
    roster = write_simulated_federation(
        directory, HOSPITALS, threshold=THRESHOLD, min_contributors=MIN_CONTRIBUTORS, preset="precise"
    )
    server = Coordinator(directory, settings, roster)
    hellos = {q: blobs_of(server.send(q, p.HELLO))[p.HELLO_BLOB] for q in PARTIES}
    server.after_hello = {q: server.state(q) for q in PARTIES}
    relayed_hellos = {f"{p.HELLO_BLOB}-{q}": hello for q, hello in hellos.items()}
    deals = {q: blobs_of(server.send(q, p.DEAL, blobs=relayed_hellos)) for q in PARTIES}
    for k in PARTIES:
        dealers = [d for d in PARTIES if f"{p.SEALED_SHARE_PREFIX}{k}" in deals[d]]  # all but k itself
        dealt = {f"{p.SEALED_SHARE_PREFIX}{d}": deals[d][f"{p.SEALED_SHARE_PREFIX}{k}"] for d in dealers}
        statements = {f"{p.DEALING}-{d}": deals[d][p.DEALING] for d in dealers}
        complaints = blobs_of(server.send(k, p.DEALINGS, blobs=dealt | statements))[p.COMPLAINTS]
        assert json.loads(complaints) == []
    weights = initial_weights(settings)
    params = hospital.load_keyholder(server.contexts[1]).ctx.params
    train_config = {
        p.ROUND: 1,
        p.ENCRYPTED: True,
        p.CLIP: params.clip,
        p.WEIGHT_SCALE: params.default_weight_scale,
    }
    replies = {q: server.send(q, p.TRAIN, {**train_config, p.PARTY: q}, arrays=weights) for q in PARTIES}
    return server, hellos, train_config, weights, {q: blobs_of(r) for q, r in replies.items()}


def decrypt_config(keyholders=PARTIES, attempt: int = 1, round_id: int = 1) -> dict:
    return {
        p.KIND: "train",
        p.ROUND: round_id,
        p.ATTEMPT: attempt,
        p.KEYHOLDERS: ",".join(map(str, keyholders)),
    }


def contributions(replies, parties=PARTIES) -> dict[str, bytes]:
    return {f"{p.CONTRIBUTION}-{q}": replies[q][p.CONTRIBUTION] for q in parties}


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
    request = DecryptionRequest(label, 1, PARTIES, PARTIES, len(total.result.c0))
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

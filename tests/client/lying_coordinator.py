"""A coordinator that drives the hospitals' real Flower ClientApp handlers (``client.app``).

It builds each message as the strategy would (``strategies.messaging``) and calls the handlers
directly with each hospital's Flower ``Context``, so what is tested is what a SuperNode runs:
the handlers' own parsing of configs and blob names, then the key holder's checks. Honest
unless a test makes it lie. Shared by ``test_malicious_coordinator`` (lies inside one run) and
``test_release_ledger`` (lies across runs).
"""

from __future__ import annotations

import copy
import json
import time

from check_polynomials import check_polynomial
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from client import app as hospital
from client.identity import IdentityError
from client.refusals import RefusedRequest
from common import protocol as p
from common.records import blobs_of
from common.settings import RunSettings
from common.simulated_federation import write_simulated_federation
from he.errors import HEError
from he.roster import Roster
from strategies.messaging import make_content

HOSPITALS, THRESHOLD, MIN_CONTRIBUTORS = 4, 3, 3  # 3-of-4: a decryption set needs all four
PARTIES = tuple(range(1, HOSPITALS + 1))
REFUSALS = (RefusedRequest, IdentityError, HEError)  # a hospital's typed refusals
HANDLERS = {
    p.HELLO: hospital.hello,
    p.DEAL: hospital.deal,
    p.DEALINGS: hospital.dealings,
    p.STATISTICS: hospital.statistics,
    p.TRAIN: hospital.train,
    p.DECRYPT: hospital.decrypt,
    p.EVALUATE: hospital.evaluate,
}


def federation_of(directory, threshold: int = THRESHOLD, **roster) -> tuple[RunSettings, Roster]:
    """The run settings and the roster (written to ``directory``) of four simulated hospitals;
    ``roster``: more of the roster's settings (``write_simulated_federation``)."""
    settings = RunSettings(
        strategy="encrypted_fedavg",
        he_preset="precise",
        threshold=threshold,
        min_train_nodes=MIN_CONTRIBUTORS,
    )
    roster = write_simulated_federation(
        directory,
        HOSPITALS,
        threshold=threshold,
        min_contributors=MIN_CONTRIBUTORS,
        preset="precise",
        **roster,
    )
    return settings, roster


class Coordinator:
    """Sends the messages of one Flower run to the hospitals' handlers.

    ``node_configs``: each hospital's own node config (e.g. its ``state-dir``), by party; a new
    Coordinator with the same node configs is the same hospitals in a new Flower run.
    """

    def __init__(
        self, directory, settings: RunSettings, roster: Roster, flower_run: int, node_configs=None
    ) -> None:
        self.roster = roster
        self.settings = settings
        self.flower_run = flower_run
        self.after_hello: dict[int, dict] = {}  # each hospital's stored state right after its hello
        self.complaints: dict[int, list[int]] = {}  # each keyholder's failed dealers, from set_up
        self.statistics_replies: dict[int, dict[str, bytes]] = {}  # set_up's, when it relays in them
        self.deals: dict[int, dict[str, bytes]] = {}  # set_up's deal replies (sealed shares, pk_i)
        self.config = {
            **settings.task_config(),
            p.PRESET: settings.he_preset,
            p.ROSTER_FINGERPRINT: roster.fingerprint,
            p.SIMULATED_FEDERATION: str(directory),
            p.FEATURE_MEAN: [0.0] * settings.num_features,  # the statistics passes' result, skipped here
            p.FEATURE_STD: [1000.0] * settings.num_features,
        }
        simulated = {q: {"partition-id": q - 1, "num-partitions": HOSPITALS} for q in PARTIES}
        self.contexts = {
            q: Context(
                run_id=flower_run,
                node_id=q,
                node_config=simulated[q] | (node_configs or {}).get(q, {}),
                state=RecordDict(),
                run_config={},
            )
            for q in PARTIES
        }

    def send(
        self, party: int, message_type: str, config=None, blobs=None, arrays=None, state=None
    ) -> Message:
        """Deliver one message; ``state``: the hospital's stored state to start from instead."""
        metadata = Metadata(
            run_id=self.flower_run,
            message_id=f"m-{time.monotonic_ns()}",
            src_node_id=0,
            dst_node_id=party,
            reply_to_message_id="",
            group_id="",
            created_at=time.time(),
            ttl=600.0,
            message_type=message_type,
        )
        config = {**self.config, **(config or {})}
        context = self.contexts[party]
        if state is not None:
            context = Context(context.run_id, context.node_id, context.node_config, RecordDict(), {})
            context.state[hospital.STATE] = ConfigRecord(copy.deepcopy(state))
        if message_type == p.DECRYPT and not {p.CHECK_POLYNOMIAL, p.CHECK_SEED} & set(blobs or {}):
            blobs = {**(blobs or {}), **check_blob(context, config)}
        content = make_content(config, blobs, arrays)
        return HANDLERS[message_type](Message(metadata=metadata, content=content), context)

    def state(self, party: int) -> dict:
        return copy.deepcopy(dict(self.contexts[party].state[hospital.STATE]))

    def set_up(
        self,
        withheld: dict[int, tuple[int, ...]] | None = None,
        relay: str = p.DEALINGS,
        tamper: tuple[int, int] | None = None,
    ) -> dict[int, bytes]:
        """The key set-up (hello, deal, dealings); returns the signed hellos. Honest unless
        ``withheld`` names, by hospital, the hellos left out of the set-up shown to it (a lie
        about who takes part); each keyholder's failed dealers are then in ``complaints``.
        ``relay``: the dealings in a ``query.dealings`` message of their own, or inside the first
        ``query.statistics`` message (the strategy's way); ``tamper`` = (dealer, keyholder): one
        byte of the share that dealer sealed for that keyholder is flipped on the way."""
        hellos = {q: blobs_of(self.send(q, p.HELLO))[p.HELLO_BLOB] for q in PARTIES}
        self.after_hello = {q: self.state(q) for q in PARTIES}
        shown = {
            q: {
                f"{p.HELLO_BLOB}-{h}": hello
                for h, hello in hellos.items()
                if h not in (withheld or {}).get(q, ())
            }
            for q in PARTIES
        }
        deals = {q: blobs_of(self.send(q, p.DEAL, blobs=shown[q])) for q in PARTIES}
        self.deals = deals
        for k in PARTIES:
            dealers = [d for d in PARTIES if p.per_party(p.SEALED_SHARE, k) in deals[d]]  # all but k
            dealt = {
                p.per_party(p.SEALED_SHARE, d): deals[d][p.per_party(p.SEALED_SHARE, k)] for d in dealers
            }
            statements = {f"{p.DEALING}-{d}": deals[d][p.DEALING] for d in dealers}
            if tamper is not None and tamper[1] == k:
                share = bytearray(dealt[p.per_party(p.SEALED_SHARE, tamper[0])])
                share[-1] ^= 1
                dealt[p.per_party(p.SEALED_SHARE, tamper[0])] = bytes(share)
            if relay == p.STATISTICS:
                config = {**self.statistics_config("moments"), p.WITH_DEALINGS: True}
                self.statistics_replies[k] = blobs_of(self.send(k, p.STATISTICS, config, dealt | statements))
                complaints = self.statistics_replies[k][p.COMPLAINTS]
            else:
                complaints = blobs_of(self.send(k, p.DEALINGS, blobs=dealt | statements))[p.COMPLAINTS]
            self.complaints[k] = json.loads(complaints)
        assert withheld or tamper or not any(self.complaints.values())
        return hellos

    def statistics_config(self, pass_name: str) -> dict:
        params = hospital.load_keyholder(self.contexts[1]).frame_context(statistics=True).params
        return {
            p.STATISTICS_PASS: pass_name,
            p.ROUND: p.STATISTICS_PASSES[pass_name],
            p.WEIGHT_SCALE: params.default_weight_scale,
        }

    def train_config(self, round_id: int) -> dict:
        params = hospital.load_keyholder(self.contexts[1]).ctx.params
        return {
            p.ROUND: round_id,
            p.ENCRYPTED: True,
            p.CLIP: params.clip,
            p.WEIGHT_SCALE: params.default_weight_scale,
        }

    def train(self, round_id: int, model, parties=PARTIES) -> dict[int, dict[str, bytes]]:
        """Each of ``parties`` trains round ``round_id`` from ``model``; their reply blobs."""
        config = self.train_config(round_id)
        return {q: blobs_of(self.send(q, p.TRAIN, {**config, p.PARTY: q}, arrays=model)) for q in parties}


def check_blob(context: Context, config: dict) -> dict[str, bytes]:
    """The honest check polynomial of a decryption request (``tests/check_polynomials.py``), for a
    hospital whose set-up is done; none otherwise (its refusal is then about the set-up)."""
    try:
        holder = hospital.load_keyholder(context)
        attempt = (str(config[p.KIND]), int(config[p.ROUND]), int(config[p.ATTEMPT]))
        return {p.CHECK_POLYNOMIAL: check_polynomial(holder, *attempt)}
    except (*REFUSALS, KeyError, ValueError):
        return {}


def decrypt_config(keyholders=PARTIES, attempt: int = 1, round_id: int = 1, kind: str = "train") -> dict:
    return {
        p.KIND: kind,
        p.ROUND: round_id,
        p.ATTEMPT: attempt,
        p.KEYHOLDERS: ",".join(map(str, keyholders)),
    }


def contributions(replies, parties=PARTIES) -> dict[str, bytes]:
    return {f"{p.CONTRIBUTION}-{q}": replies[q][p.CONTRIBUTION] for q in parties}

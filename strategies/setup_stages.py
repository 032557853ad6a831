"""The encrypted run's key set-up, stage by stage (``KeySetup.run`` lists them, as Flower's
``SecAggPlusWorkflow`` lists its own): every message signed and checked against the roster.

1. roster: the pinned one, or in simulation a fresh one per run (``load_roster``), and the run's
   settings checked against it (``Roster.require``);
2. ``query.hello``: each hospital's signed hello; their check fixes the run id and the run's
   committee K' (the keyholders with a valid hello). Keyholders without one are named and left
   out while K' keeps the roster's minimum (``Roster.setup_minimum``); below it the run stops,
   naming them;
3. ``query.deal``: every hello relayed; each hospital deals its per-run secret to K' and sends
   its signed public-key share for the share checks (``public_key_shares``, ``he.share_check``);
4. the dealings relay: each keyholder receives the sealed shares dealt to it (with the dealers'
   signed DEALING statements) and names the dealers whose share failed (``complaints``); those
   are left out of every aggregate. A keyholder needs its shares only for its first decryption
   share, so the relay rides on the run's first ``query.statistics`` message
   (``dealings_content``, ``p.WITH_DEALINGS``; its reply carries the complaints, read before that
   pass is summed): the set-up costs two message phases (hello, deal) before the statistics.
   A run that sends no statistics message first relays them in a phase of their own,
   ``query.dealings`` (``dealings``), before its first round. A keyholder whose reply is an
   error names no dealer either way: its complaints are unknown, every dealer stays.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import numpy as np
from flwr.app import Message

from common import protocol as p
from common.records import blobs_of
from common.settings import RunSettings
from common.simulated_federation import write_simulated_federation
from he import share_check, transcript, wire
from he.context import HEContext
from he.errors import HEError, RosterError
from he.roster import Roster
from strategies.messaging import Exchange, Refusals, make_content
from strategies.reachability import party_of

log = logging.getLogger(__name__)


class SetupFailedError(RuntimeError):
    """Key set-up could not complete (too few keyholders online, or the roster is contradicted)."""


class KeySetup:
    """One run's key set-up; fills ``party_nodes`` (the strategy's) as hellos arrive."""

    def __init__(
        self,
        roster: Roster,
        flower_run_id: int,
        node_ids: list[int],
        config: dict,
        party_nodes: dict[int, int],
        exchange: Exchange,
        reply_name: Callable[[Message], str],
        report_phase: Callable[[str], None],
    ) -> None:
        self.roster, self.flower_run_id, self.node_ids, self.config = roster, flower_run_id, node_ids, config
        self.party_nodes, self.exchange = party_nodes, exchange
        self.reply_name, self.report_phase = reply_name, report_phase
        self.hellos: dict[int, bytes] = {}
        self.refusals = Refusals()  # hospitals whose hello was an error reply, with their reason
        self.software: dict[int, str] = {}  # party -> "fedquorum x, flwr y", from its hello reply
        self.transcript: transcript.SetupTranscript | None = None
        self.deals: dict[int, dict[str, bytes]] = {}
        self.dealers: set[int] = set()  # hospitals whose secret every keyholder accepted
        self.dealings_pending = False  # dealt, but not yet relayed to the keyholders
        self.tags: dict[str, str] = {}  # for the run's MLflow tags

    def run(self, dealings_ride_on_statistics: bool = False) -> transcript.SetupTranscript:
        """The stages after the roster, in order; with ``dealings_ride_on_statistics`` the
        dealings relay is left to the first statistics message (``dealings_pending``)."""
        self.hello()
        self.deal()
        self.dealers = set(self.deals)  # until complaints remove some
        self.dealings_pending = True
        if not dealings_ride_on_statistics:
            self.dealings()
        return self.transcript

    def hello(self) -> None:
        """``query.hello`` to every node, then the check of the hellos (run id, K')."""
        self.report_phase(f"key set-up: {p.HELLO}")
        messages = [
            Message(
                content=make_content(self.config), message_type=p.HELLO, dst_node_id=node, group_id="setup"
            )
            for node in self.node_ids
        ]
        for reply in self.exchange(messages, "hello", self.refusals):
            hello = blobs_of(reply).get(p.HELLO_BLOB, b"")
            try:
                party = transcript.hello_sender(self.roster, hello)
            except HEError as err:
                log.warning("hello of %s refused: %s", self.reply_name(reply), err)
                continue
            if party in self.hellos:
                log.warning("a second hello claims to be %s; refused", self.roster.hospital(party).name)
                continue
            self.hellos[party] = hello
            self.party_nodes[party] = reply.metadata.src_node_id
            self.software[party] = software_of(blobs_of(reply).get(p.SOFTWARE, b""))
        self._report_software()
        try:
            self.transcript = transcript.verify_hellos(self.roster, self.flower_run_id, self.hellos)
        except HEError as err:
            if self.refusals.reasons:  # the hospitals' own reasons first, then what is missing
                summary = self.refusals.summary("set-up", len(self.node_ids))
                raise SetupFailedError(f"{summary}; {err}") from None
            raise SetupFailedError(f"set-up: {err}") from None
        self._report_absent_keyholders()

    def deal(self) -> None:
        """``query.deal``: every hello relayed to every hospital that sent one."""
        relayed = {p.per_party(p.HELLO_BLOB, party): hello for party, hello in self.hellos.items()}
        self.deals = self._phase(p.DEAL, self.hellos, lambda party: make_content({}, relayed))

    def public_key_shares(self, ctx: HEContext) -> dict[int, np.ndarray]:
        """Each dealer's public-key share (``he.share_check``), parsed under the run's ``ctx`` and
        checked against its signed DEALING statement. A dealer without a valid one is named and
        left out of every aggregate, as a dealer a keyholder complained about is."""
        keys = {}
        for dealer in sorted(self.dealers):
            name, blob = self.roster.hospital(dealer).name, self.deals[dealer]
            try:
                frame = blob[p.PUBLIC_KEY_SHARE]
                transcript.verify_public_key(
                    self.roster, self.transcript.run_id, dealer, blob[p.DEALING], frame
                )
                kind, what = wire.Kind.PUBLIC_KEY_SHARE, f"public-key share of {name}"
                keys[dealer] = share_check.polynomial_from_bytes(ctx, kind, frame, what)
            except (KeyError, HEError) as err:
                reason = f"missing {err}" if isinstance(err, KeyError) else str(err)
                log.warning(
                    "public-key share of %s refused (%s); %s is left out of every aggregate",
                    name,
                    reason,
                    name,
                )
                self.dealers.discard(dealer)
        return keys

    def dealings(self) -> None:
        """``query.dealings``, the relay in a phase of its own (a run without statistics): each
        keyholder of K' gets the shares dealt to it; complaints remove a dealer."""

        def relayed(keyholder: int):
            return make_content({}, self.dealings_for(keyholder))

        self.complaints(self._phase(p.DEALINGS, self.transcript.committee, relayed))

    def dealings_for(self, keyholder: int) -> dict[str, bytes]:
        """The blobs relayed to ``keyholder``: each dealer's sealed share for it and its signed
        DEALING statement."""
        blobs = {}
        for dealer, blob in self.deals.items():
            share = blob.get(p.per_party(p.SEALED_SHARE, keyholder))
            if share is not None and p.DEALING in blob:
                blobs[p.per_party(p.SEALED_SHARE, dealer)] = share
                blobs[p.per_party(p.DEALING, dealer)] = blob[p.DEALING]
        return blobs

    def dealings_content(self, node_id: int) -> tuple[dict, dict[str, bytes]]:
        """For the first statistics message to ``node_id``: the config flag and the dealings of a
        keyholder of K' (nothing for any other hospital)."""
        party = next((k for k, n in self.party_nodes.items() if n == node_id), None)
        if party not in self.transcript.committee:
            return {}, {}
        return {p.WITH_DEALINGS: True}, self.dealings_for(party)

    def statistics_complaints(self, replies: list[Message]) -> None:
        """The complaints in the valid replies to the statistics message that relayed the
        dealings (``dealings_content``)."""
        self.complaints({party_of(self.party_nodes, reply): blobs_of(reply) for reply in replies})

    def complaints(self, acks: dict[int, dict[str, bytes]]) -> None:
        """Remove from ``dealers`` every dealer a keyholder of K' complained about (``acks``: the
        blobs of each keyholder's valid reply to the dealings relay, by party). Read once."""
        self.dealings_pending = False
        name = self.roster.hospital
        for keyholder, blob in sorted(acks.items()):
            if keyholder not in self.transcript.committee:
                continue  # sent no dealings: nothing to complain about
            complaints = set(json.loads(blob.get(p.COMPLAINTS, b"[]")))
            for dealer in complaints & self.dealers:
                log.warning(
                    "keyholder %s refused the share dealt by %s; %s is left out of every aggregate",
                    name(keyholder).name,
                    name(dealer).name,
                    name(dealer).name,
                )
            self.dealers -= complaints

    def _phase(self, message_type: str, parties, content_for) -> dict[int, dict[str, bytes]]:
        """Send one set-up message to each of ``parties``; the replies of those that succeeded."""
        self.report_phase(f"key set-up: {message_type}")
        messages = [
            Message(
                content=content_for(party),
                message_type=message_type,
                dst_node_id=self.party_nodes[party],
                group_id="setup",
            )
            for party in parties
        ]
        out = {
            party_of(self.party_nodes, reply): blobs_of(reply)
            for reply in self.exchange(messages, message_type)
        }
        return dict(sorted(out.items()))

    def _report_software(self) -> None:
        """Log each hospital's fedquorum and Flower versions; warn when they differ."""
        for party, software in sorted(self.software.items()):
            log.info("%s runs %s", self.roster.hospital(party).name, software)
        if len(set(self.software.values())) > 1:
            log.warning("hospitals run different software versions: %s", sorted(set(self.software.values())))

    def _report_absent_keyholders(self) -> None:
        """Name, in one log line and the run tag ``setup_missing_keyholders``, the roster's
        keyholders the set-up proceeds without (no valid hello: offline, or refused)."""
        setup = self.transcript
        if not setup.absent:
            return
        missing = ", ".join(setup.absent)
        log.warning(
            "set-up proceeds without keyholder(s) %s (no valid hello): %d of %d keyholders take part, "
            "the roster's minimum is %d",
            missing,
            len(setup.committee),
            len(self.roster.committee),
            self.roster.setup_minimum,
        )
        self.tags["setup_missing_keyholders"] = missing


def load_roster(settings: RunSettings, num_hospitals: int, simulation_dir: str | None) -> Roster:
    """The roster of ``settings.roster``; in simulation (none given), a fresh one written to
    ``simulation_dir``. Settings that contradict it stop the run (``Roster.require``)."""
    if settings.roster:
        roster = Roster.load(settings.roster)
    else:
        roster = write_simulated_federation(
            simulation_dir,
            num_hospitals,
            threshold=settings.threshold,
            min_contributors=settings.min_train_nodes,
            preset=settings.he_preset,
        )
    try:
        roster.require(settings.he_preset, settings.threshold, settings.num_rounds)
    except RosterError as err:
        raise SetupFailedError(str(err)) from None
    return roster


def software_of(blob: bytes) -> str:
    """A hospital's self-reported versions, for the log only (bounded, never trusted)."""
    try:
        versions = json.loads(blob[:200])
        return ", ".join(f"{k} {str(versions[k])[:20]}" for k in ("fedquorum", "flwr"))
    except (ValueError, KeyError, TypeError):
        return "unreported versions"

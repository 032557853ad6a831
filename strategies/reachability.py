"""Who is who (roster party, Flower node) and who of the run's keyholders a decryption can
count on now, and whether a quorum remains.

A keyholder is down when its node restarted after the set-up (its keys are gone for the run,
``p.KEYS_LOST``), when the SuperLink has lost it, or when it was silent in this round's train
phase. A round that the keyholders left cannot serve is skipped before any message is sent; a
run whose restarted keyholders alone leave too few stops, since their keys do not come back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from flwr.app import Message
from flwr.serverapp import Grid

from common import protocol as p
from he.roster import Roster

log = logging.getLogger(__name__)


def names(roster: Roster, parties: Iterable[int]) -> list[str]:
    """Parties as the roster names them, for logs and round lines."""
    return [roster.hospital(k).name for k in parties]


def party_of(party_nodes: dict[int, int], reply: Message) -> int:
    """The party whose node sent ``reply`` (set-up matched each node to the roster)."""
    node = reply.metadata.src_node_id
    return next(party for party, n in party_nodes.items() if n == node)


@dataclass
class Reachability:
    """The strategy's view of its keyholders; ``party_nodes`` and ``keys_lost`` are the
    strategy's own (filled by the set-up and by replies), shared, not copied."""

    roster: Roster
    party_nodes: dict[int, int]  # party -> Flower node id
    keys_lost: set[int]  # parties whose node restarted after the set-up
    grid: Grid | None = None  # asked which nodes are connected; None: every party's node is
    committee: tuple[int, ...] = ()  # K': the set-up's keyholders (only they hold dealt shares)

    def __post_init__(self) -> None:
        self.committee = self.committee or self.roster.quorum.committee  # before the set-up: K

    def lose_keys(self, party: int) -> None:
        """``party`` said its node restarted: it is out for the rest of the run."""
        if party in self.keys_lost:
            return
        self.keys_lost.add(party)
        quorum = self.roster.quorum
        left = len(set(quorum.committee) - self.keys_lost)
        log.warning(
            "%s %s: it is left out of the rest of this run (%d of %d keyholders keep their keys, a "
            "decryption set needs %d)",
            self.roster.hospital(party).name,
            p.KEYS_LOST,
            left,
            len(quorum.committee),
            quorum.min_decryption_set,
        )

    def keyholders_down(self, replied: set[int] | None = None) -> dict[int, str]:
        """Committee members no decryption can count on now, with why: restarted (their keys are
        gone for the run), offline at the SuperLink, or (``replied``: the nodes that answered this
        round's train phase at all) silent this round. A keyholder whose training failed or was
        refused replied with an error: it is online and may still decrypt."""
        online = set(self.grid.get_node_ids()) if self.grid is not None else set(self.party_nodes.values())
        down = {}
        for keyholder in self.committee:
            node = self.party_nodes.get(keyholder)
            if keyholder in self.keys_lost:
                down[keyholder] = p.KEYS_LOST
            elif node not in online:
                down[keyholder] = "offline"
            elif replied is not None and node not in replied:
                down[keyholder] = "silent this round"
        return down

    def quorum_shortfall(self, down: dict[int, str]) -> str | None:
        """One line naming the missing keyholders if those left cannot form a decryption set."""
        quorum = self.roster.quorum
        left = len([k for k in self.committee if k in self.party_nodes and k not in down])
        if left >= quorum.min_decryption_set:
            return None
        named = ", ".join(f"{self.roster.hospital(k).name} ({why})" for k, why in sorted(down.items()))
        return (
            f"keyholder(s) {named} missing: {left} of {len(quorum.committee)} keyholders left, a "
            f"decryption set needs {quorum.min_decryption_set}"
        )

    def quorum_gone(self) -> str | None:
        """Restarted keyholders alone leave too few for any decryption set: their keys do not come
        back within this run, so no later round can be decrypted (a resumed run sets up afresh)."""
        shortfall = self.quorum_shortfall(dict.fromkeys(self.keys_lost, p.KEYS_LOST))
        if shortfall is None:
            return None
        return (
            f"{shortfall}; no later round can be decrypted, stopping the run (resume it once the "
            "keyholders are back)"
        )

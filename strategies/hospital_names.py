"""How the server names a hospital in its log lines and MLflow tags.

A node id means nothing to the engineer or a hospital's IT team. Once a signed hello matched a
node to the roster, the roster's name is used; before that (a refused app or hello) or in a run
without a roster (plaintext FedAvg), the name a hospital gives itself in its error text
(``common.sender_name``), marked as its own claim; failing that, the node id.
"""

from __future__ import annotations

import logging

from flwr.app import Message

from strategies.messaging import claimed_sender, hospital_reason

log = logging.getLogger(__name__)


class HospitalNames:
    """Mixin of the strategies: ``node_ids`` is the run's nodes; ``known_name`` is overridden by
    a strategy with a roster."""

    node_ids: list[int]

    def known_name(self, node_id: int) -> str | None:
        """The roster name of the hospital on ``node_id`` once the run has matched it to the
        roster (plaintext FedAvg has no roster: None)."""
        return None

    def hospital_name(self, node_id: int) -> str:
        """A hospital as logs and MLflow name it: its roster name, else its node id."""
        return self.known_name(node_id) or f"node {node_id}"

    def reply_name(self, reply: Message) -> str:
        """The sender of ``reply``: its roster name, else the name its error text gives (its own
        claim, so marked as such), else its node id."""
        node = reply.metadata.src_node_id
        if (known := self.known_name(node)) is not None:
            return known
        claimed = claimed_sender(reply)
        return f"{claimed} (node {node}, by its own account)" if claimed else f"node {node}"

    def missing_name(self, node_id: int) -> str:
        """A hospital as the dropout warning and the ``missing_hospitals`` tag name it."""
        return self.hospital_name(node_id)

    def failure_reason(self, reply: Message) -> str | None:
        """``"<hospital> failed: <its reason>"`` for an error reply, else None."""
        if (reason := hospital_reason(reply)) is not None:
            return f"{self.reply_name(reply)} failed: {reason}"
        return None

    def report_missing(self, server_round: int, answered: set[int]) -> list[str]:
        """Warn, by name, about the hospitals that sent no valid reply this round (dropouts)."""
        missing = [self.missing_name(n) for n in self.node_ids if n not in answered]
        if missing:
            log.warning(
                "round %d: no update from %s (%d of %d hospitals answered)",
                server_round,
                ", ".join(missing),
                len(self.node_ids) - len(missing),
                len(self.node_ids),
            )
        return missing

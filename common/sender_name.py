"""A hospital's name in the text of its error replies, written by the hospital, read by the server.

The server learns which node is which hospital from a hello signed with the hospital's roster
key. A refusal can come before that (an app the hospital did not approve, a refused hello) or
in a run without a roster (plaintext FedAvg), and would then be known only by a node id that no
one at the coordinator can map to a hospital. So every error text a hospital sends starts with
``[<its name>] ``. It is the hospital's own, unsigned claim: the server shows it as such for a
node it has not matched to the roster, and uses the roster's name for one it has.
"""

from __future__ import annotations

import re

SENDER = re.compile(r"^\[(?P<name>[^\]\n]{1,64})\] ")


def with_sender(name: str | None, text: str) -> str:
    """``text`` as hospital ``name`` sends it (unchanged without a name or when already named)."""
    if not name or SENDER.match(text):
        return text
    return f"[{name}] {text}"


def split_sender(text: str) -> tuple[str | None, str]:
    """(the name the text starts with, or None; the text without it)."""
    match = SENDER.match(text)
    if match is None:
        return None, text
    return match["name"], text[match.end() :]

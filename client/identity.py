"""Where a hospital finds its pinned roster and its signing key: its own node config, never the server.

Deployment: the daemon (``client.daemon``) writes the node-config keys ``roster``,
``signing-key`` and ``hospital`` (paths on the hospital's machine). Simulation only (the node
config has Flower's ``partition-id`` and no roster): the run's simulated federation directory
(``common.simulated_federation.write_simulated_federation``), named in the task config, holds both.
"""

from __future__ import annotations

from pathlib import Path

from common.protocol import ROSTER_FINGERPRINT, SIMULATED_FEDERATION
from common.simulated_federation import simulated_hospital_name
from he.identity import SigningKey
from he.roster import NODE_HOSPITAL, NODE_ROSTER, NODE_SIGNING_KEY, Roster


class IdentityError(RuntimeError):
    """The hospital has no usable roster or signing key, or the server runs another roster."""


def own_name(node_config: dict) -> str | None:
    """The name this hospital goes by (a daemon's ``--hospital``, a simulated hospital's roster
    name), read from the node config alone, so that even a refusal before any check names it."""
    if NODE_HOSPITAL in node_config:
        return str(node_config[NODE_HOSPITAL])
    if "partition-id" in node_config:
        return simulated_hospital_name(int(node_config["partition-id"]))
    return None


def hospital_identity(node_config: dict, config: dict) -> tuple[Roster, str, Path]:
    """This hospital's roster, name and signing-key path; refuses a server running another roster
    and a key that is not the roster's key for this hospital."""
    if NODE_ROSTER in node_config:
        missing = [k for k in (NODE_SIGNING_KEY, NODE_HOSPITAL) if k not in node_config]
        if missing:
            raise IdentityError(f"node config has a roster but lacks {missing} (start with client.daemon)")
        roster_path, key_path = Path(str(node_config[NODE_ROSTER])), Path(str(node_config[NODE_SIGNING_KEY]))
        name = str(node_config[NODE_HOSPITAL])
    elif "partition-id" in node_config and SIMULATED_FEDERATION in config:
        directory = Path(str(config[SIMULATED_FEDERATION]))
        name = simulated_hospital_name(int(node_config["partition-id"]))
        roster_path, key_path = directory / "roster.json", directory / f"{name}.key"
    else:
        raise IdentityError(
            "this hospital has no roster: start it with `python -m client.daemon --roster ... "
            "--signing-key ... --hospital ...`"
        )
    roster = Roster.load(roster_path)
    claimed = config.get(ROSTER_FINGERPRINT)
    if claimed != roster.fingerprint:
        raise IdentityError(
            f"the coordinator runs roster {str(claimed)[:32]!r}, but this hospital pinned "
            f"{roster.short_fingerprint} ({roster_path}); refusing to take part"
        )
    signer = SigningKey.load(key_path)
    if signer.public_bytes() != roster.hospital(roster.party_of(name)).signing_key:
        raise IdentityError(f"signing key {key_path} is not the key the roster lists for {name}")
    return roster, name, key_path.resolve()

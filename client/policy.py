"""The hospital's own policy: what this site agrees to run, whatever the coordinator asks.

The roster (``he.roster``) describes the federation and is agreed by everyone; the policy is set
by this hospital's IT alone, in ``<state-dir>/policy.toml`` (or ``client.daemon --policy``), and
read by the hospital's vetted code: by the daemon at start (against the pinned roster), by the
app launcher before a run's code is installed (``client.launcher``), and by ``policy_mod`` for
every message the ClientApp handles. Every key is optional; a missing file means the defaults::

    require_encrypted = true          # refuse plaintext runs (strategy=fedavg sends updates in clear)
    min_threshold = 2                 # fewest keyholders the roster may let decrypt
    min_contributors = 2              # fewest hospitals an aggregate may have
    allowed_presets = ["compact", "precise"]   # HE presets; leave out for any
    require_dp = false                # refuse training without distributed DP (docs/privacy.md)
    accept_installed_app = true       # run a submitted app only if it is this site's installed code ...
    accept_any_app = false            # ... or any app at all (a trial, never with patient data)

Approved app hashes (``client.daemon approve``) live next to it in ``approved-apps.txt``.
A refusal names the policy key, so the hospital's operator knows which line decided.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

from client.keyholder import RefusedRequest
from he import protocol as p
from he.roster import NODE_ROSTER, Roster
from privacy.config import KEYS as DP_KEYS

POLICY_FILE = "policy.toml"
NODE_POLICY = "policy"  # node-config key: absolute path of the policy file (written by the daemon)


class PolicyError(ValueError):
    """The policy file is malformed, or the pinned roster breaks the policy (daemon start)."""


class PolicyRefusal(RefusedRequest):
    """A request this hospital's policy forbids; logged as ``refused`` in the audit log."""


@dataclass(frozen=True)
class Policy:
    require_encrypted: bool = True
    min_threshold: int = 2
    min_contributors: int = 2
    allowed_presets: tuple[str, ...] | None = None
    require_dp: bool = False
    accept_installed_app: bool = True
    accept_any_app: bool = False

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """The policy at ``path``; defaults when the file does not exist."""
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            values = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise PolicyError(f"policy {path} cannot be read as TOML: {err}") from None
        return cls.from_dict(values, str(path))

    @classmethod
    def from_dict(cls, values: dict, source: str = "policy") -> Policy:
        """Typed values; an unknown key or a wrong type is an error naming it."""
        types = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(types))
        if unknown:
            raise PolicyError(f"{source}: unknown key(s) {unknown}; expected some of {sorted(types)}")
        out = {}
        for key, value in values.items():
            if key == "allowed_presets":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise PolicyError(f"{source}: allowed_presets must be a list of names, got {value!r}")
                out[key] = tuple(value)
            elif key in ("min_threshold", "min_contributors"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                    raise PolicyError(f"{source}: {key} must be an integer >= 2, got {value!r}")
                out[key] = value
            elif not isinstance(value, bool):
                raise PolicyError(f"{source}: {key} must be true or false, got {value!r}")
            else:
                out[key] = value
        return cls(**out)

    # -- checks ------------------------------------------------------------------------------------
    def roster_violation(self, roster: Roster) -> str | None:
        """Why the federation's pinned roster breaks this policy, or None."""
        if roster.threshold < self.min_threshold:
            return (
                f"policy min_threshold={self.min_threshold}, but the roster lets {roster.threshold} "
                "keyholder(s) decrypt"
            )
        if roster.min_contributors < self.min_contributors:
            return (
                f"policy min_contributors={self.min_contributors}, but the roster allows aggregates "
                f"of {roster.min_contributors} hospitals"
            )
        return self.preset_violation(roster.preset)

    def preset_violation(self, preset: str) -> str | None:
        if self.allowed_presets is not None and preset not in self.allowed_presets:
            return f"policy allowed_presets={list(self.allowed_presets)} does not include preset {preset!r}"
        return None

    def request_violation(self, message_type: str, config: dict) -> str | None:
        """Why a message (its type and configuration) breaks this policy, or None."""
        if self.require_encrypted and not bool(config.get(p.ENCRYPTED, True)):
            return (
                "policy require_encrypted=true: this run would send the hospital's updates and "
                "feature statistics in the clear (strategy=fedavg); refused"
            )
        if self.require_dp and message_type == p.TRAIN and str(config.get(DP_KEYS["dp"], "off")) == "off":
            return "policy require_dp=true: this run trains without distributed DP (dp=off); refused"
        if p.PRESET in config:
            return self.preset_violation(str(config[p.PRESET]))
        return None


def policy_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower client mod: refuse any message the hospital's policy forbids, before its handler runs.

    Placed after ``audit_mod``, so each refusal is an audit line with the reason. Without a
    ``policy`` node-config key (simulation) every message passes.
    """
    node_config = dict(context.node_config)
    if NODE_POLICY not in node_config:
        return call_next(message, context)
    policy = Policy.load(str(node_config[NODE_POLICY]))
    record = message.content.config_records.get(p.CONFIG)
    reason = policy.request_violation(message.metadata.message_type, {} if record is None else dict(record))
    if reason is None and NODE_ROSTER in node_config:
        reason = policy.roster_violation(Roster.load(Path(str(node_config[NODE_ROSTER]))))
    if reason is not None:
        raise PolicyRefusal(reason)
    return call_next(message, context)

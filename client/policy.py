"""The hospital's own policy: what this site agrees to run, whatever the coordinator asks.

The roster (``he.roster``) describes the federation and is agreed by everyone; the policy is set
by this hospital's IT alone, in ``<state-dir>/policy.toml`` (or ``client.daemon --policy``), and
read by the hospital's vetted code: by the daemon at start (against the pinned roster), by the
app launcher before a run's code is installed (``client.launcher``), by ``policy_mod`` for
every message the ClientApp handles, and by ``client.privacy_budget`` for every DP training
round. Every key is optional; a key left out means its default (never "unlimited"), a missing
file means all the defaults::

    require_encrypted = true          # refuse plaintext runs (strategy=fedavg sends updates in clear)
    min_threshold = 2                 # fewest keyholders the roster may let decrypt
    min_contributors = 2              # fewest hospitals an aggregate may have
    allowed_presets = ["compact", "precise"]   # HE presets; leave out for any
    require_dp = false                # refuse training without distributed DP (docs/privacy.md)
    accept_installed_app = true       # run a submitted app only if it is this site's installed code ...
    accept_any_app = false            # ... or any app at all (a trial, never with patient data)
    allow_per_hospital_plaintext = false  # refuse runs that send this site's own metrics in clear
    # what a run may ask of this site (checked against the run's config and the model it sends)
    allowed_models = ["logreg", "mlp", "cnn", "resnet18"]  # the built-in presets (default), and
                                      # import paths of models shipped in the app bundle that this
                                      # site accepts, e.g. "examples.tabular_net.TabularNet"
    max_model_parameters = 100000     # model values (mlp 1 058, cnn on 28x28 images 22 347; a
                                      # resnet18 has 11 182 025: a site that runs it raises this)
    max_local_epochs = 100            # local epochs per round
    max_rounds = 1000                 # training rounds of a run (its server round and dp-rounds)
    max_eval_bins = 100               # score bins of the pooled evaluation histograms (run default)
    max_time_bins = 100               # survival: time bins of the pooled concordance histograms
    # differential privacy, when a run trains with it (the hospital computes the epsilon itself)
    min_dp_noise_multiplier = 0.5     # noise per round, in units of the clip norm
    max_dp_delta = 1e-5               # the delta every epsilon below is computed at
    max_epsilon_per_run = 10.0        # epsilon a run may reach over all the rounds it is accounted for
    lifetime_epsilon = 30.0           # this site's budget across all runs (release ledger)

Approved app hashes (``client.daemon approve``) live next to it in ``approved-apps.txt``.
A refusal names the policy key, so the hospital's operator knows which line decided.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

from client.refusals import PolicyRefusal
from common import protocol as p
from he.roster import NODE_ROSTER, Roster
from privacy.config import KEYS as DP_KEYS

POLICY_FILE = "policy.toml"
NODE_POLICY = "policy"  # node-config key: absolute path of the policy file (written by the daemon)
BUILT_IN_MODELS = ("logreg", "mlp", "cnn", "resnet18")  # models.registry.MODEL_NAMES (no torch here)
LOCAL_EPOCHS = "local-epochs"  # client.local_data.TaskConfig's config keys
TIME_BINS = "time-bins"
MODEL = "model"  # a preset name or an import path (models.registry); matched as a whole string
MODEL_MESSAGES = (p.TRAIN, p.EVALUATE)  # the messages that carry the global model

BOOL_KEYS = (
    "require_encrypted",
    "require_dp",
    "accept_installed_app",
    "accept_any_app",
    "allow_per_hospital_plaintext",
)
NAME_LIST_KEYS = ("allowed_presets", "allowed_models")
LIMIT_KEYS = ("max_model_parameters", "max_local_epochs", "max_rounds", "max_eval_bins", "max_time_bins")
EPSILON_KEYS = ("max_epsilon_per_run", "lifetime_epsilon")


class PolicyError(ValueError):
    """The policy file is malformed, or the pinned roster breaks the policy (daemon start)."""


@dataclass(frozen=True)
class Policy:
    require_encrypted: bool = True
    min_threshold: int = 2
    min_contributors: int = 2
    allowed_presets: tuple[str, ...] | None = None
    require_dp: bool = False
    accept_installed_app: bool = True
    accept_any_app: bool = False
    allow_per_hospital_plaintext: bool = False
    allowed_models: tuple[str, ...] = BUILT_IN_MODELS
    max_model_parameters: int = 100_000
    max_local_epochs: int = 100
    max_rounds: int = 1000
    max_eval_bins: int = 100
    max_time_bins: int = 100
    min_dp_noise_multiplier: float = 0.5
    max_dp_delta: float = 1e-5
    max_epsilon_per_run: float = 10.0
    lifetime_epsilon: float = 30.0

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
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PolicyError(f"{source}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        return cls(**{key: _parse_value(key, value, source) for key, value in values.items()})

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

    def request_violation(self, message_type: str, config: dict, model_parameters: int = 0) -> str | None:
        """Why a message (its type, configuration and the size of the model it carries) breaks
        this policy, or None."""
        if self.require_encrypted and not bool(config.get(p.ENCRYPTED, True)):
            return (
                "policy require_encrypted=true: this run would send the hospital's updates and "
                "feature statistics in the clear (strategy=fedavg); refused"
            )
        if self.require_dp and message_type == p.TRAIN and str(config.get(DP_KEYS["dp"], "off")) == "off":
            return "policy require_dp=true: this run trains without distributed DP (dp=off); refused"
        if not self.allow_per_hospital_plaintext and bool(config.get(p.PER_HOSPITAL_PLAINTEXT, False)):
            return (
                "policy allow_per_hospital_plaintext=false: this run asks for the hospital's own loss, "
                "accuracy, AUC and test-set size in the clear (per-hospital-plaintext); refused"
            )
        if MODEL in config and str(config[MODEL]) not in self.allowed_models:
            allowed = list(self.allowed_models)
            return f"policy allowed_models={allowed} does not include model {config[MODEL]!r}; refused"
        if model_parameters > self.max_model_parameters:
            return (
                f"policy max_model_parameters={self.max_model_parameters}: the model this run sends "
                f"has {model_parameters} values; refused"
            )
        preset = self.preset_violation(str(config[p.PRESET])) if p.PRESET in config else None
        return preset or self.limit_violation(message_type, config)

    def limit_violation(self, message_type: str, config: dict) -> str | None:
        """Why the run's resource settings exceed this policy's limits, or None. The round number
        counts for training only: the final evaluation (and its decryption) is the round after
        the last."""
        for key, limit, what in (
            (LOCAL_EPOCHS, "max_local_epochs", "local epochs per round"),
            (p.EVAL_BINS, "max_eval_bins", "evaluation histogram bins"),
            (TIME_BINS, "max_time_bins", "survival time bins"),
            (p.ROUND, "max_rounds", "as its training round number"),
            (DP_KEYS["num_rounds"], "max_rounds", "DP-accounted rounds"),
        ):
            if key not in config or (key == p.ROUND and message_type != p.TRAIN):
                continue
            value = _config_integer(config[key])
            if value is None:
                return f"config {key!r}: expected an integer, got {str(config[key])[:40]!r}; refused"
            if value > getattr(self, limit):
                return f"policy {limit}={getattr(self, limit)}: this run asks for {value} {what}; refused"
        return None


def _config_integer(value) -> int | None:
    """A run-config value as ``client.local_data`` would read it (``int(value)``), or None."""
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _parse_value(key: str, value, source: str):
    """One policy value, typed; an error names the key and what it expects."""
    if key in BOOL_KEYS:
        if not isinstance(value, bool):
            raise PolicyError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if key in NAME_LIST_KEYS:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PolicyError(f"{source}: {key} must be a list of names, got {value!r}")
        return tuple(value)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if key in ("min_threshold", "min_contributors"):
        if not number or not isinstance(value, int) or value < 2:
            raise PolicyError(f"{source}: {key} must be an integer >= 2, got {value!r}")
        return value
    if key in LIMIT_KEYS:
        if not number or not isinstance(value, int) or value < 1:
            raise PolicyError(f"{source}: {key} must be a positive integer, got {value!r}")
        return value
    if key == "max_dp_delta":
        if not number or not 0 < value < 1:
            raise PolicyError(f"{source}: {key} must be a number in (0, 1), got {value!r}")
        return float(value)
    if not number or not math.isfinite(value) or value < 0 or (key in EPSILON_KEYS and value == 0):
        expected = "a positive finite number" if key in EPSILON_KEYS else "a finite number >= 0"
        raise PolicyError(f"{source}: {key} must be {expected}, got {value!r}")
    return float(value)


def node_policy(node_config: dict) -> Policy | None:
    """The policy the daemon pinned in the node config, or None (simulation: no policy)."""
    return Policy.load(str(node_config[NODE_POLICY])) if NODE_POLICY in node_config else None


def model_parameters(message: Message) -> int:
    """The number of values in the global model a message carries (0 if it carries none): counted
    from the arrays themselves, never from a number the coordinator states."""
    if message.metadata.message_type not in MODEL_MESSAGES:
        return 0
    record = message.content.array_records.get(p.ARRAYS)
    return 0 if record is None else sum(math.prod(array.shape) for array in record.values())


def policy_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower client mod: refuse any message the hospital's policy forbids, before its handler runs.

    Placed after ``audit_mod``, so each refusal is an audit line with the reason. Without a
    ``policy`` node-config key (simulation) every message passes.
    """
    node_config = dict(context.node_config)
    policy = node_policy(node_config)
    if policy is None:
        return call_next(message, context)
    record = message.content.config_records.get(p.CONFIG)
    config = {} if record is None else dict(record)
    reason = policy.request_violation(message.metadata.message_type, config, model_parameters(message))
    if reason is None and NODE_ROSTER in node_config:
        reason = policy.roster_violation(Roster.load(Path(str(node_config[NODE_ROSTER]))))
    if reason is not None:
        raise PolicyRefusal(reason)
    return call_next(message, context)

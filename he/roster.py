"""The federation's roster, pinned by every hospital out of band, and the decryption quorum.

The roster names the federation, its hospitals and their signing keys, the keyholder committee
K with its threshold t_K, the fewest contributors an aggregate may have, the HE preset and how
many decryption attempts a round may take. A hospital's party index is its position in the
roster (1-based), never a number the coordinator sends. Hospitals compare the short fingerprint
by phone or letter before joining; a daemon refuses a run whose roster differs from its own.

Quorum-intersection rule: a decryption set T must satisfy ``|T| >= ceil((|K| + t_K)/2)``, so any
two decryption sets share at least t_K keyholders, hence at least one honest one when at most
t_K - 1 collude. That honest keyholder answers for only one contributor set U per round, so a
coordinator cannot decrypt U and U minus v with two disjoint sets of honest keyholders and
subtract (which would reveal v's update).

A run's set-up may proceed with the keyholders that are online, K' (a subset of K), when there
are at least ``Roster.setup_minimum`` of them: by default ``ceil((|K| + t_K)/2)``, the fewest that
can form a decryption set at all. Decryption sets keep their size relative to the roster's K
whatever K' a run used, so any two of them, of any two runs, still share t_K keyholders.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from he.errors import RosterError
from he.identity import PUBLIC_KEY_BYTES
from he.params import preset as preset_params

DEFAULT_COMMITTEE_SIZE = 16
DEFAULT_MAX_ATTEMPTS = 3
MAX_ROSTER_BYTES = 1 << 20
FORMAT = "fedquorum-roster-v1"


@dataclass(frozen=True)
class Quorum:
    """Keyholder committee (roster party indices) and its decryption threshold, validated once."""

    committee: tuple[int, ...]
    threshold: int

    def __post_init__(self) -> None:
        committee = tuple(self.committee)
        object.__setattr__(self, "committee", committee)
        if len(set(committee)) != len(committee) or any(k < 1 for k in committee):
            raise RosterError(f"committee must be distinct party indices >= 1, got {list(committee)}")
        if not 2 <= self.threshold <= len(committee):
            raise RosterError(
                f"threshold must be in [2, {len(committee)}] for a committee of {len(committee)} "
                f"(t = 1 would let one keyholder decrypt alone), got {self.threshold}"
            )

    @property
    def min_decryption_set(self) -> int:
        """Fewest keyholders a decryption set may have: ``ceil((|K| + t_K) / 2)``."""
        return math.ceil((len(self.committee) + self.threshold) / 2)

    def check_decryption_set(
        self, keyholders: list[int] | tuple[int, ...], run_committee: tuple[int, ...] | None = None
    ) -> tuple[int, ...]:
        """``keyholders`` sorted, or ``RosterError`` if it is not a valid decryption set.

        ``run_committee``: the keyholders of this run's set-up (K'); only they hold dealt shares
        and channel keys, so a set must lie within it. Its size is still measured against K.
        """
        chosen = tuple(sorted(keyholders))
        if len(set(chosen)) != len(chosen) or not set(chosen) <= set(self.committee):
            raise RosterError(f"decryption set {list(chosen)} is not a set of committee members")
        absent = sorted(set(chosen) - set(chosen if run_committee is None else run_committee))
        if absent:
            raise RosterError(
                f"decryption set {list(chosen)} includes keyholders {absent} that took no part in "
                f"this run's set-up (its committee is {sorted(run_committee)})"
            )
        if len(chosen) < self.min_decryption_set:
            raise RosterError(
                f"decryption set of {len(chosen)} keyholders is below the quorum-intersection "
                f"minimum ceil((|K| + t_K)/2) = {self.min_decryption_set} (|K| = "
                f"{len(self.committee)}, t_K = {self.threshold})"
            )
        return chosen


@dataclass(frozen=True)
class Hospital:
    name: str
    signing_key: bytes


@dataclass(frozen=True)
class Roster:
    """One federation's pinned description (see module docstring)."""

    federation_id: str
    hospitals: tuple[Hospital, ...]
    committee: tuple[str, ...]
    threshold: int
    min_contributors: int
    preset: str
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    min_setup_keyholders: int = 0  # 0: the quorum's min_decryption_set (see setup_minimum)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hospitals", tuple(self.hospitals))
        object.__setattr__(self, "committee", tuple(self.committee))
        names = [h.name for h in self.hospitals]
        if not self.federation_id or len(self.federation_id) > 200:
            raise RosterError("roster: federation_id must be a non-empty string of at most 200 characters")
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise RosterError(f"roster: hospital names must be distinct non-empty strings, got {names}")
        if any(len(h.signing_key) != PUBLIC_KEY_BYTES for h in self.hospitals):
            raise RosterError(f"roster: every signing key must be {PUBLIC_KEY_BYTES} raw Ed25519 bytes")
        if len({h.signing_key for h in self.hospitals}) != len(self.hospitals):
            raise RosterError("roster: two hospitals share a signing key")
        unknown = [k for k in self.committee if k not in names]
        if unknown:
            raise RosterError(f"roster: committee members {unknown} are not hospitals of the roster")
        if not 2 <= self.min_contributors <= len(self.hospitals):
            raise RosterError(
                f"roster: min_contributors must be in [2, {len(self.hospitals)}] (one contributor "
                f"would be decrypted alone), got {self.min_contributors}"
            )
        if not 1 <= self.max_attempts <= 16:
            raise RosterError(f"roster: max_attempts must be in [1, 16], got {self.max_attempts}")
        minimum = self.quorum.min_decryption_set  # also validates committee and threshold
        if self.min_setup_keyholders and not minimum <= self.min_setup_keyholders <= len(self.committee):
            raise RosterError(
                f"roster: min_setup_keyholders must be 0 (the default, ceil((|K| + t_K)/2) = {minimum}) "
                f"or in [{minimum}, {len(self.committee)}] (fewer could not form a decryption set), "
                f"got {self.min_setup_keyholders}"
            )

    # -- lookups ---------------------------------------------------------------------------
    @property
    def num_hospitals(self) -> int:
        return len(self.hospitals)

    @property
    def quorum(self) -> Quorum:
        return Quorum(tuple(self.party_of(name) for name in self.committee), self.threshold)

    @property
    def setup_minimum(self) -> int:
        """Fewest keyholders a run's set-up may proceed with (``min_setup_keyholders``, by default
        ``ceil((|K| + t_K)/2)``: a set-up with fewer could never form a decryption set)."""
        return self.min_setup_keyholders or self.quorum.min_decryption_set

    def require(self, he_preset: str | None = None, threshold: int = 0, num_rounds: int = 0) -> None:
        """The one check that a run agrees with this roster, made by the server, the runner and
        every keyholder: ``he_preset`` (if given) is the roster's, a nonzero ``threshold`` is its
        threshold, the preset's noise flooding holds the committee and ``max_attempts``
        (``InsecureParametersError`` otherwise) and ``num_rounds`` (if given) the rounds."""
        if he_preset is not None and he_preset != self.preset:
            raise RosterError(
                f"he.preset={he_preset!r} but roster {self.federation_id!r} pins preset {self.preset!r}; "
                f"set he.preset={self.preset}"
            )
        if threshold and threshold != self.threshold:
            raise RosterError(
                f"he.threshold={threshold} but roster {self.federation_id!r} pins threshold "
                f"{self.threshold}; set he.threshold=0 (the roster's) or to match it"
            )
        params = preset_params(self.preset)
        params.check_federation(len(self.committee), self.max_attempts)
        if num_rounds > params.max_rounds:
            raise RosterError(
                f"num_rounds={num_rounds} exceeds the {params.max_rounds} rounds the {self.preset} "
                "preset's noise flooding is sized for"
            )

    def party_of(self, name: str) -> int:
        for index, hospital in enumerate(self.hospitals, start=1):
            if hospital.name == name:
                return index
        raise RosterError(f"{name!r} is not a hospital of federation {self.federation_id!r}")

    def hospital(self, party: int) -> Hospital:
        if not 1 <= party <= len(self.hospitals):
            raise RosterError(f"party {party} is not in [1, {len(self.hospitals)}]")
        return self.hospitals[party - 1]

    # -- serialization and fingerprint ----------------------------------------------------
    def to_json(self) -> dict:
        """The canonical fields; ``min_setup_keyholders`` only when set, so that rosters written
        before it existed keep their fingerprint."""
        optional = {"min_setup_keyholders": self.min_setup_keyholders} if self.min_setup_keyholders else {}
        return {
            "format": FORMAT,
            "federation_id": self.federation_id,
            "hospitals": [{"name": h.name, "signing_key": h.signing_key.hex()} for h in self.hospitals],
            "committee": list(self.committee),
            "threshold": self.threshold,
            "min_contributors": self.min_contributors,
            "preset": self.preset,
            "max_attempts": self.max_attempts,
        } | optional

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the canonical roster, hex."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @property
    def short_fingerprint(self) -> str:
        """The first 128 bits in groups of four, to read out by phone."""
        digest = self.fingerprint[:32]
        return "-".join(digest[i : i + 4] for i in range(0, 32, 4))

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "roster") -> Roster:
        if len(data) > MAX_ROSTER_BYTES:
            raise RosterError(f"{what}: {len(data)} bytes exceeds {MAX_ROSTER_BYTES}")
        try:
            raw = json.loads(data)
            if raw.get("format") != FORMAT:
                raise RosterError(f"{what}: expected format {FORMAT!r}, got {raw.get('format')!r}")
            hospitals = tuple(
                Hospital(str(h["name"]), bytes.fromhex(h["signing_key"])) for h in raw["hospitals"]
            )
            return cls(
                federation_id=str(raw["federation_id"]),
                hospitals=hospitals,
                committee=tuple(str(c) for c in raw["committee"]),
                threshold=_integer(raw["threshold"], "threshold", what),
                min_contributors=_integer(raw["min_contributors"], "min_contributors", what),
                preset=str(raw["preset"]),
                max_attempts=_integer(raw.get("max_attempts", DEFAULT_MAX_ATTEMPTS), "max_attempts", what),
                min_setup_keyholders=_integer(
                    raw.get("min_setup_keyholders", 0), "min_setup_keyholders", what
                ),
            )
        except RosterError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
            raise RosterError(f"{what}: not a valid roster ({type(err).__name__}: {err})") from None

    @classmethod
    def load(cls, path: str | Path) -> Roster:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"roster {path} does not exist (expected the federation's roster.json)")
        return cls.from_bytes(path.read_bytes(), f"roster {path}")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def create(
        cls,
        federation_id: str,
        signing_keys: dict[str, bytes],
        *,
        threshold: int = 0,
        min_contributors: int = 2,
        preset: str = "compact",
        committee_size: int = DEFAULT_COMMITTEE_SIZE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        min_setup_keyholders: int = 0,
    ) -> Roster:
        """A roster whose committee is every hospital up to ``committee_size``, else the first
        ``committee_size`` in roster order; ``threshold`` 0 means the whole committee;
        ``min_setup_keyholders`` 0 the default set-up minimum (``setup_minimum``)."""
        hospitals = tuple(Hospital(name, key) for name, key in signing_keys.items())
        committee = tuple(h.name for h in hospitals[:committee_size])
        return cls(
            federation_id,
            hospitals,
            committee,
            threshold or len(committee),
            min_contributors,
            preset,
            max_attempts,
            min_setup_keyholders,
        )


def _integer(value: object, key: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RosterError(f"{what}: {key} must be an integer, got {value!r}")
    return value


# -- where a hospital finds its roster and signing key ----------------------------------------------
# Deployment: the daemon writes these node-config keys (paths on the hospital's own machine).
NODE_ROSTER = "roster"
NODE_SIGNING_KEY = "signing-key"
NODE_HOSPITAL = "hospital"

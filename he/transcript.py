"""The signed statements of protocol v2, and the run id they define.

Every statement a hospital acts on is signed by the hospital that made it (``he.identity``)
and checked against the pinned roster (``he.roster``), by the hospitals and by the server:

* ``hello``: the hospital's fresh contribution and X25519 channel key for this Flower run;
* ``dealing``: the SHA-256 of each sealed Shamir share a dealer sends to each keyholder;
* ``contribution``: the SHA-256 of a hospital's encrypted update for (kind, round), its
  ciphertext count, how many leading coefficients of each ciphertext it sent (those that carry
  fields, the only ones keyholders decrypt: ``he.decrypt``), the hash of its layout (shapes,
  clip, weight scale) and its **release key**, all of which keyholders require to be the same
  across a contributor set. The release key names what the aggregate discloses, computed by the
  contributor itself: the SHA-256 of the global model it started from (``model_release``:
  training and final evaluation), or the statistics pass (``statistics_release``). Keyholders
  answer one contributor set per release key, across runs (``client.keyholder``,
  ``client.ledger``). Version 3 of the statement added the release key, version 4 (label
  ``contribution-v4``) the coefficient count: older statements are refused.

The **run id** is the SHA-256 of the roster fingerprint, the run's keyholder committee K' and
every signed hello, in party order: it is fixed once the hospitals have spoken, so the
coordinator can neither choose nor grind it, and every ``c1``, mask, dealing and contribution of
the run depends on it. K' is the roster's keyholders whose hello is in the set-up, computed by
each hospital from its pinned roster; a coordinator that shows two hospitals different hellos
(different committees) gives them different run ids, so their dealings and contributions are
refused by each other's keyholders.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from he.errors import RosterError, SignatureError
from he.identity import SigningKey, open_signed
from he.keygen import CONTRIBUTION_BYTES
from he.roster import Roster

HELLO = "hello"
DEALING = "dealing"
CONTRIBUTION = "contribution-v4"  # v3: with the release key; v4: with the coefficient count
CHANNEL_KEY_BYTES = 32
MAX_RELEASE_CHARS = 100


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- hello and the run transcript ------------------------------------------------------------------
def sign_hello(
    signer: SigningKey, roster: Roster, name: str, flower_run: int, contribution: bytes, channel_key: bytes
) -> bytes:
    fields = {
        "federation": roster.federation_id,
        "roster": roster.fingerprint,
        "flower_run": int(flower_run),
        "hospital": name,
        "contribution": contribution.hex(),
        "channel_key": channel_key.hex(),
    }
    return signer.sign(HELLO, fields)


def hello_sender(roster: Roster, hello: bytes) -> int:
    """The roster party a hello claims to come from, verified against that party's key."""
    try:
        name = str(json.loads(hello)["fields"]["hospital"])
    except (ValueError, KeyError, TypeError, RecursionError):
        raise SignatureError("hello: not a readable signed hello") from None
    party = roster.party_of(name)
    open_signed(hello, HELLO, roster.hospital(party).signing_key, f"hello of {name}")
    return party


@dataclass(frozen=True)
class SetupTranscript:
    """The verified hellos of one run: who takes part, their channel keys, the run id, the run's
    keyholder committee K' (the roster's keyholders that took part) and the roster names of the
    keyholders that did not."""

    run_id: bytes
    parties: tuple[int, ...]
    channel_keys: dict[int, bytes]
    committee: tuple[int, ...]
    absent: tuple[str, ...]


def verify_hellos(roster: Roster, flower_run: int, hellos: dict[int, bytes]) -> SetupTranscript:
    """Check every hello against the roster; refuse a set-up that contradicts it."""
    channel_keys = {}
    for party, hello in sorted(hellos.items()):
        name = roster.hospital(party).name
        fields = open_signed(hello, HELLO, roster.hospital(party).signing_key, f"hello of {name}")
        if fields.get("hospital") != name:
            raise SignatureError(f"hello of {name}: signed for hospital {fields.get('hospital')!r}")
        if fields.get("federation") != roster.federation_id or fields.get("roster") != roster.fingerprint:
            raise RosterError(f"hello of {name}: made for another federation or roster")
        if fields.get("flower_run") != int(flower_run):
            raise RosterError(
                f"hello of {name}: made for Flower run {fields.get('flower_run')}, not {flower_run}"
            )
        try:
            contribution = bytes.fromhex(fields["contribution"])
            channel_key = bytes.fromhex(fields["channel_key"])
        except (KeyError, TypeError, ValueError):
            raise SignatureError(f"hello of {name}: lacks a contribution or channel key") from None
        if len(contribution) != CONTRIBUTION_BYTES or len(channel_key) != CHANNEL_KEY_BYTES:
            raise SignatureError(f"hello of {name}: contribution or channel key of the wrong size")
        channel_keys[party] = channel_key
    if len(set(channel_keys.values())) != len(channel_keys):
        raise SignatureError("two hellos carry the same channel key")
    committee = setup_committee(roster, hellos)
    absent = tuple(roster.hospital(k).name for k in roster.quorum.committee if k not in committee)
    if len(hellos) < roster.min_contributors:
        raise RosterError(
            f"set-up has {len(hellos)} hospitals, fewer than the roster's min_contributors "
            f"{roster.min_contributors}"
        )
    run = hashlib.sha256(f"fedquorum-run-v3|{roster.fingerprint}|{list(committee)}|".encode())
    for party, hello in sorted(hellos.items()):
        run.update(f"{party}:{digest(hello)}|".encode())
    return SetupTranscript(run.digest(), tuple(sorted(hellos)), channel_keys, committee, absent)


def setup_committee(roster: Roster, hellos: dict[int, bytes]) -> tuple[int, ...]:
    """The run's keyholder committee K': the roster's keyholders with a hello in the set-up, or
    ``RosterError`` naming those missing when fewer than ``roster.setup_minimum`` took part.

    Computed from the pinned roster, never from a number the coordinator sends. The minimum is
    at least ``ceil((|K| + t_K)/2)``: decryption sets are sized against the roster's K, so a
    smaller K' could never decrypt, and sizing them against K' instead would let two runs'
    decryption sets miss each other's honest keyholders (``docs/security.md``, "Set-up with the
    keyholders that are online").
    """
    quorum = roster.quorum
    committee = tuple(k for k in quorum.committee if k in hellos)
    if len(committee) < roster.setup_minimum:
        missing = [roster.hospital(k).name for k in quorum.committee if k not in hellos]
        raise RosterError(
            f"set-up has {len(committee)} of the {len(quorum.committee)} keyholders, fewer than the "
            f"roster's minimum {roster.setup_minimum}; missing keyholders: {', '.join(missing)}"
        )
    return committee


# -- dealings --------------------------------------------------------------------------------------
def sign_dealing(
    signer: SigningKey, run_id: bytes, dealer: int, sealed: dict[int, bytes], public_key: bytes
) -> bytes:
    """The dealer's statement: the digest of each sealed share it dealt, and of its public-key
    share (``he.share_check``), for this run."""
    fields = {
        "run": run_id.hex(),
        "dealer": dealer,
        "shares": {str(k): digest(blob) for k, blob in sorted(sealed.items())},
        "public_key": digest(public_key),
    }
    return signer.sign(DEALING, fields)


def verify_dealing(
    roster: Roster, run_id: bytes, dealer: int, recipient: int, statement: bytes, sealed: bytes
) -> None:
    """The sealed share ``dealer`` sent ``recipient`` is the one it signed, for this run."""
    shares = _dealing_fields(roster, run_id, dealer, statement).get("shares")
    if not isinstance(shares, dict) or shares.get(str(recipient)) != digest(sealed):
        raise SignatureError(
            f"dealing of {roster.hospital(dealer).name}: the share relayed to party {recipient} is "
            "not the one signed"
        )


def verify_public_key(
    roster: Roster, run_id: bytes, dealer: int, statement: bytes, public_key: bytes
) -> None:
    """The public-key share relayed for ``dealer`` is the one it signed, for this run."""
    if _dealing_fields(roster, run_id, dealer, statement).get("public_key") != digest(public_key):
        raise SignatureError(
            f"dealing of {roster.hospital(dealer).name}: its public-key share is not the one signed"
        )


def _dealing_fields(roster: Roster, run_id: bytes, dealer: int, statement: bytes) -> dict:
    name = roster.hospital(dealer).name
    fields = open_signed(statement, DEALING, roster.hospital(dealer).signing_key, f"dealing of {name}")
    if fields.get("run") != run_id.hex() or fields.get("dealer") != dealer:
        raise SignatureError(f"dealing of {name}: signed for another run or dealer")
    return fields


# -- contributions ---------------------------------------------------------------------------------
def layout_digest(layout: dict) -> str:
    """Hash of an update layout (shapes, clip, weight scale) in canonical JSON."""
    return digest(json.dumps(layout, sort_keys=True, separators=(",", ":")).encode())


def model_release(arrays) -> str:
    """The release key of an aggregate computed from a global model: the SHA-256 of its arrays
    (dtype, shape and bytes, in order). A training round from model X and the final evaluation of
    X both release X's evaluation sums, so they share it."""
    model = hashlib.sha256(b"fedquorum-model-v1")
    for array in arrays:
        array = np.ascontiguousarray(array)
        model.update(f"|{array.dtype.str}|{array.shape}|".encode())
        model.update(array.tobytes())
    return "model:" + model.hexdigest()


def statistics_release(pass_name: str) -> str:
    """The release key of a statistics pass: the pass itself, whichever round id carries it."""
    return f"statistics:{pass_name}"


@dataclass(frozen=True)
class Contribution:
    """What a verified contribution statement says beyond who, when and for which run."""

    ciphertexts: int
    coefficients: int  # leading coefficients of each ciphertext that travel (he.encoding)
    layout: str  # layout_digest of the update's layout
    release: str  # what the aggregate discloses (model_release / statistics_release)


def sign_contribution(
    signer: SigningKey,
    roster: Roster,
    run_id: bytes,
    kind: str,
    round_id: int,
    party: int,
    frame: bytes,
    num_ciphertexts: int,
    coefficients: int,
    layout: dict,
    release: str,
) -> bytes:
    fields = {
        "federation": roster.federation_id,
        "run": run_id.hex(),
        "kind": kind,
        "round": int(round_id),
        "party": party,
        "update": digest(frame),
        "ciphertexts": int(num_ciphertexts),
        "coefficients": int(coefficients),
        "layout": layout_digest(layout),
        "release": str(release),
    }
    return signer.sign(CONTRIBUTION, fields)


def verify_contribution(
    roster: Roster,
    run_id: bytes,
    kind: str,
    round_id: int,
    party: int,
    statement: bytes,
    frame: bytes | None = None,
) -> Contribution:
    """What ``party`` signed for its contribution to (kind, round) of this run.

    With ``frame``, also checks that these are the bytes it signed (the server's check).
    """
    name = roster.hospital(party).name
    fields = open_signed(
        statement, CONTRIBUTION, roster.hospital(party).signing_key, f"contribution of {name}"
    )
    expected = {
        "federation": roster.federation_id,
        "run": run_id.hex(),
        "kind": kind,
        "round": int(round_id),
        "party": party,
    }
    if any(fields.get(k) != v for k, v in expected.items()):
        raise SignatureError(f"contribution of {name}: signed for another run, kind, round or party")
    if frame is not None and fields.get("update") != digest(frame):
        raise SignatureError(f"contribution of {name}: the update is not the one signed")
    count, coefficients = fields.get("ciphertexts"), fields.get("coefficients")
    layout, release = fields.get("layout"), fields.get("release")
    if not (_positive_int(count) and _positive_int(coefficients) and isinstance(layout, str)):
        raise SignatureError(f"contribution of {name}: no valid ciphertext or coefficient count or layout")
    if not isinstance(release, str) or not 0 < len(release) <= MAX_RELEASE_CHARS:
        raise SignatureError(f"contribution of {name}: no valid release key")
    return Contribution(count, coefficients, layout, release)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1

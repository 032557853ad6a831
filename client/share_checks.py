"""What a hospital checks before it encrypts for a round or answers a decryption request: the
rounds the flooding was sized for, the release key an aggregate may carry, and every condition
on a decryption request (the set T, the attempt, the contributors U and their signed
contributions). Pure functions of the request and the hospital's pinned roster and set-up, each
failing with a ``RefusedRequest`` that names what was wrong; ``client.keyholder`` calls them and
keeps the state (what was already answered, the ledger)."""

from __future__ import annotations

from dataclasses import dataclass

from client.refusals import RefusedRequest
from common.protocol import STATISTICS_PASS_ROUNDS, STATISTICS_ROUNDS
from he import transcript
from he.errors import HEError
from he.roster import Roster


def check_round(max_rounds: int, kind: str, round_id: int) -> None:
    """Only the rounds the flooding was sized for (``HEParams.smudging_bits``): training rounds
    1..max_rounds and the statistics passes' ids; more decryptions would exceed the budget."""
    if kind == "train" and not 1 <= round_id <= max_rounds:
        raise RefusedRequest(f"training round {round_id} is outside [1, {max_rounds}]")
    if kind == "statistics" and round_id not in STATISTICS_ROUNDS:
        raise RefusedRequest(f"statistics round {round_id} is not one of {list(STATISTICS_ROUNDS)}")


def check_release(kind: str, round_id: int, release: str) -> None:
    """A training aggregate releases a model's statistics; a statistics aggregate one pass,
    under its own round ids only (so no pass can be asked twice under two ids)."""
    if kind == "train" and not release.startswith("model:"):
        raise RefusedRequest(f"training round {round_id}: release key {release[:40]!r} names no model")
    if kind == "statistics":
        pass_name = release.removeprefix("statistics:")
        allowed = STATISTICS_PASS_ROUNDS.get(pass_name) if release.startswith("statistics:") else None
        if allowed is None or round_id not in allowed:
            raise RefusedRequest(
                f"statistics pass {release[:40]!r} may not be released under round id {round_id} "
                f"(passes and their round ids: {STATISTICS_PASS_ROUNDS})"
            )


@dataclass(frozen=True)
class CheckedRequest:
    """A decryption request that passed every check: T, the sorted U, the one release key all
    contributors signed, and the one ciphertext and coefficient count of their layout."""

    decryption_set: tuple[int, ...]
    contributors: list[int]
    release: str
    ciphertexts: int
    coefficients: int


def check_decryption_request(
    roster: Roster,
    setup: transcript.SetupTranscript,
    party: int,
    dealers: list[int],
    max_rounds: int,
    kind: str,
    round_id: int,
    attempt: int,
    keyholders: list[int],
    contributions: dict[int, bytes],
) -> CheckedRequest:
    """Check a request for this keyholder's (``party``) share of (kind, round), in this order: T
    is a quorum-intersecting subset of the run's committee holding this keyholder, the round and
    attempt are within their bounds, U is at least the roster's minimum and every contributor
    dealt to this keyholder (``dealers``), and all signed one release key and one layout."""
    try:
        decryption_set = roster.quorum.check_decryption_set(keyholders, setup.committee)
    except HEError as err:
        raise RefusedRequest(str(err)) from None
    if party not in decryption_set:
        raise RefusedRequest(f"this keyholder (party {party}) is not in the decryption set")
    check_round(max_rounds, kind, round_id)
    if isinstance(attempt, bool) or not isinstance(attempt, int) or not 1 <= attempt <= roster.max_attempts:
        raise RefusedRequest(f"attempt {attempt} is outside [1, {roster.max_attempts}] (roster)")
    contributors = sorted(contributions)
    if len(contributors) < roster.min_contributors:
        raise RefusedRequest(
            f"the aggregate has {len(contributors)} contributors, fewer than the roster's minimum "
            f"{roster.min_contributors}; refusing to reveal it"
        )
    unknown = [c for c in contributors if c not in dealers]
    if unknown:
        raise RefusedRequest(f"contributors {unknown} dealt no valid share to this keyholder")
    try:
        signed = {
            transcript.verify_contribution(roster, setup.run_id, kind, round_id, c, statement)
            for c, statement in contributions.items()
        }
    except HEError as err:
        raise RefusedRequest(f"a contribution is not validly signed: {err}") from None
    releases = {c.release for c in signed}
    if len(releases) != 1:  # one starting model (or statistics pass) for all
        raise RefusedRequest(f"contributors signed different release keys {sorted(releases)[:4]}")
    release = releases.pop()
    check_release(kind, round_id, release)
    if len(signed) != 1:  # one layout (clip, weight scale) for all: no hospital weighted apart
        raise RefusedRequest("contributors signed different layouts or ciphertext or coefficient counts")
    layout = signed.pop()
    return CheckedRequest(decryption_set, contributors, release, layout.ciphertexts, layout.coefficients)

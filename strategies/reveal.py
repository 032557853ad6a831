"""Reveal an encrypted aggregate: the decryption round trip, with its retries, as one object.

One call decrypts one aggregate (a training round, a statistics pass, the final evaluation):
skip at once if the keyholders left cannot form a decryption set (``strategies.reachability``);
else, up to the roster's ``max_attempts`` times, choose a decryption set T by elimination
(``strategies.decryption_sets``), send it ``query.decrypt`` with the signed contributions of U
and a fresh check polynomial (``he.share_check``), check each share's claims, reveal the seed of
the check polynomial to the keyholders that committed and collect their check shares (the same
message type, second phase), combine (the masks cancel only over T; the noise bound is checked),
verify the check (a share shifted on its payload rows fails it), decode with the plausibility
checks (``strategies.plausibility``). A silent keyholder is left out
of the next attempt; a failed set is remembered; the keyholders elimination cannot clear are
named as suspects. The result is a ``Decryption`` or a ``Skipped`` with its reason.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
from flwr.app import Message

from common import protocol as p
from common.records import blobs_of
from he import share_check, wire
from he.ciphertext import CiphertextLabel, EncryptedUpdate, seeded_c1
from he.context import HEContext
from he.decrypt import DecryptionRequest, DecryptionShare, combine
from he.encoding import WeightScaleError
from he.errors import HEError, InsecureParametersError
from he.roster import Roster
from he.threshold import sum_shares
from strategies.decryption_sets import DecryptionSets
from strategies.messaging import Exchange, make_content, metrics_of
from strategies.plausibility import AggregateChecks
from strategies.reachability import Reachability, names, party_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decryption:
    """A decrypted aggregate and what it took."""

    average: list[np.ndarray]
    total_examples: int
    seconds: float  # combining and decoding, on the server
    client_seconds: float  # mean partial-decryption time of a keyholder
    attempts: int
    suspects: list[str]  # keyholders named by elimination (see strategies.decryption_sets)
    keyholders: tuple[int, ...]  # the decryption set whose shares combined
    sums: list[int]  # the exact sums section: the pooled evaluation (models.pooled_metrics)


@dataclass(frozen=True)
class Skipped:
    """No decryption: why, as the round line says it after ``skipped:``."""

    reason: str


class Reveal:
    """The decryptions of one run, after its set-up (see module docstring)."""

    def __init__(
        self,
        roster: Roster,
        run_id: bytes,
        ctx: HEContext,
        reachability: Reachability,
        sets: DecryptionSets,
        checks: AggregateChecks,
        exchange: Exchange,
        public_keys: dict[int, np.ndarray],
    ) -> None:
        """``public_keys``: each dealer's verified ``pk_i`` (``KeySetup.public_key_shares``)."""
        self.roster, self.run_id, self.ctx = roster, run_id, ctx
        self.reachability, self.sets, self.checks, self.exchange = reachability, sets, checks, exchange
        self.noise_bits = ctx.params.decryption_noise_bits(len(roster.quorum.committee), roster.max_attempts)
        self.public_keys = public_keys
        self.a_pk = share_check.check_key_c1(ctx, roster.federation_id, run_id)

    def decrypt(
        self,
        kind: str,
        round_id: int,
        aggregate: EncryptedUpdate,
        statements: dict,
        encoding: HEContext,
        replied: set[int] | None = None,
    ) -> Decryption | Skipped:
        """Decrypt ``aggregate``, the sum of the contributions signed in ``statements``
        (party -> statement); ``encoding`` decodes it; ``replied``: the nodes that answered a
        training round at all (the others are not asked). A ``WeightScaleError`` with a
        plausible total is raised on: the caller rescales, no retry helps."""
        sets = self.sets
        sets.begin()
        label = CiphertextLabel(self.roster.federation_id, self.run_id, kind, round_id)
        down = self.reachability.keyholders_down(replied)
        available = set(self.reachability.committee) - set(down)  # K': only they hold dealt shares
        relayed = {p.per_party(p.CONTRIBUTION, party): s for party, s in statements.items()}
        what = f"{kind} round {round_id}" if kind == "train" else f"feature statistics {round_id}"
        public_key = self._public_key(statements)
        params, roster = self.ctx.params, self.roster
        try:
            budget = share_check.check_budget(
                params, len(roster.committee), roster.max_attempts, aggregate.num_ciphertexts
            )
        except InsecureParametersError as err:  # a model of too many ciphertexts for this committee
            log.error("%s: %s; the round keeps the previous model", what, err)
            return Skipped(f"no share check fits: {err}")
        if (shortfall := self.reachability.quorum_shortfall(down)) is not None:
            log.warning("%s: %s; no keyholder asked, the round keeps the previous model", what, shortfall)
            return Skipped(shortfall)
        for attempt in range(1, self.roster.max_attempts + 1):
            keyholders = sets.choose(available)
            if keyholders is None:
                log.warning(
                    "%s: %d keyholders left, the quorum needs %d; the round keeps the previous model",
                    what,
                    len(available),
                    sets.min_size,
                )
                self._name_suspects(what)
                return Skipped(f"{len(available)} keyholders left, a decryption set needs {sets.min_size}")
            request = DecryptionRequest(
                label,
                attempt,
                tuple(statements),
                keyholders,
                aggregate.num_ciphertexts,
                aggregate.coefficients,
            )
            check = Check(self, request, budget)
            shares, client_seconds = self._collect_shares(what, request, relayed, check)
            answered = {s.party for s in shares}
            if len(answered) == len(keyholders):  # all committed: reveal the seed, open the checks
                check.collect(what)
                answered = set(check.shares)
            if len(answered) < len(keyholders):
                silent = set(keyholders) - answered
                available -= silent
                sets.silent(silent)
                log.warning(
                    "%s attempt %d: no valid share from %s; trying again without them",
                    what,
                    attempt,
                    names(self.roster, sorted(silent)),
                )
                continue
            started = time.perf_counter()
            try:
                fields = combine(self.ctx, aggregate, shares, request, self.noise_bits)
                check.verify(shares, public_key)
                average, total_examples, sums = self.checks.decode(
                    kind, encoding, aggregate, fields, set(statements)
                )
            except WeightScaleError:
                sets.succeeded(keyholders)
                self._name_suspects(what)
                raise  # a plausible total beyond this scale: the caller rescales, no retry helps
            except HEError as err:
                # the noise bound, the share check, or an invalid aggregate
                sets.failed(keyholders)
                log.warning(
                    "%s attempt %d with %s failed: %s", what, attempt, names(self.roster, keyholders), err
                )
                continue
            sets.succeeded(keyholders)
            suspects = self._name_suspects(what)
            seconds = time.perf_counter() - started
            client = float(np.mean(client_seconds))
            return Decryption(average, total_examples, seconds, client, attempt, suspects, keyholders, sums)
        log.warning(
            "%s: all %d decryption attempts failed; the round keeps the previous model", what, attempt
        )
        self._name_suspects(what)
        return Skipped(f"all {attempt} decryption attempts failed")

    def _name_suspects(self, what: str) -> list[str]:
        """Name the keyholders elimination could not clear (one of them sent a bad share)."""
        suspects = names(self.roster, self.sets.finish())
        if suspects:
            log.warning(
                "%s: SUSPECT keyholder(s) %s: in a decryption set whose shares failed their check and "
                "in none that passed; one of them sent a tampered share (or was dealt an inconsistent one)",
                what,
                ", ".join(suspects),
            )
        return suspects

    def _public_key(self, statements: dict) -> np.ndarray:
        """``P_U``: the sum of the contributors' public-key shares (every dealer has one)."""
        return sum_shares([self.public_keys[party] for party in statements], self.ctx.data_moduli)

    def messages(self, request: DecryptionRequest, parties, config: dict, blobs: dict) -> list[Message]:
        """One ``query.decrypt`` message per party of ``parties`` for ``request``."""
        label = request.label
        config = {p.KIND: label.kind, p.ROUND: label.round_id, p.ATTEMPT: request.attempt} | config
        return [
            Message(
                content=make_content(config, blobs),
                message_type=p.DECRYPT,
                dst_node_id=self.reachability.party_nodes[k],
                group_id=f"{label.kind}-{label.round_id}-{request.attempt}",
            )
            for k in parties
        ]

    def _collect_shares(self, what: str, request: DecryptionRequest, relayed: dict, check: Check):
        """The valid shares of ``request``'s set and each keyholder's reported seconds; each
        keyholder's commitment goes to ``check``."""
        shares, client_seconds = [], []
        config = {p.KEYHOLDERS: ",".join(map(str, request.keyholders))}
        blobs = relayed | {p.CHECK_POLYNOMIAL: check.polynomial}
        messages = self.messages(request, request.keyholders, config, blobs)
        for reply in self.exchange(messages, f"{what} decryption"):
            party = party_of(self.reachability.party_nodes, reply)
            share = self.parse_share(what, request, party, blobs_of(reply).get(p.DECRYPTION_SHARE))
            if share is None:
                continue
            shares.append(share)
            check.commitments[party] = blobs_of(reply).get(p.CHECK_COMMITMENT, b"")
            client_seconds.append(float(metrics_of(reply).get("decrypt_seconds", 0.0)))
        return shares, client_seconds

    def parse_share(self, what: str, request: DecryptionRequest, party: int, blob, check: bool = False):
        """``party``'s share of ``request`` (its check share, with ``check``), or None with a
        warning naming the hospital: a share that does not parse, or claims another party, round,
        attempt or shape, is rejected and the next attempt goes without it."""
        name, kind = self.roster.hospital(party).name, "check share" if check else "decryption share"
        try:
            share = DecryptionShare.from_bytes(self.ctx, blob, f"party {party}")
        except HEError as err:
            log.warning("%s: %s of %s rejected: %s", what, kind, name, err)
            return None
        count = 1 if check else request.num_ciphertexts
        expected = (
            party,
            request.label.round_id,
            request.attempt,
            (count, len(self.ctx.data_moduli), request.coefficients),
        )
        claims = (share.party, share.round_id, share.attempt, share.polys.shape)
        if claims != expected:
            log.warning(
                "%s: %s of %s is for (party, round, attempt, shape) %s, expected %s; rejected, and the "
                "next attempt goes without it",
                what,
                kind,
                name,
                claims,
                expected,
            )
            return None
        return share


class Check:
    """The share check of one attempt (``he.share_check``): a fresh seed, its check polynomial,
    the keyholders' commitments, their opened check shares, and the verification."""

    def __init__(self, reveal: Reveal, request: DecryptionRequest, budget: share_check.CheckBudget) -> None:
        self.reveal, self.request, self.budget = reveal, request, budget
        ctx, count = reveal.ctx, request.num_ciphertexts
        self.seed = os.urandom(share_check.SEED_BYTES)
        self.challenge = share_check.derive_challenge(ctx, self.seed, count, self.budget.gain_bits)
        c1 = seeded_c1(ctx, request.label, count)
        poly = share_check.check_polynomial(ctx, c1, reveal.a_pk, self.challenge)
        self.polynomial = share_check.polynomial_to_bytes(ctx, wire.Kind.CHECK_POLYNOMIAL, poly)
        self.commitments: dict[int, bytes] = {}
        self.shares: dict[int, DecryptionShare] = {}

    def collect(self, what: str) -> None:
        """Reveal the seed to the keyholders that committed; keep each check share that opens its
        commitment (a keyholder that does not open, or opens another share, is left out)."""
        reveal, request = self.reveal, self.request
        messages = reveal.messages(request, sorted(self.commitments), {}, {p.CHECK_SEED: self.seed})
        for reply in reveal.exchange(messages, f"{what} check"):
            party = party_of(reveal.reachability.party_nodes, reply)
            opened = blobs_of(reply).get(p.CHECK_SHARE, b"")
            if share_check.commitment(request, party, opened) != self.commitments.get(party):
                name = reveal.roster.hospital(party).name
                log.warning("%s: the check share of %s does not open its commitment; rejected", what, name)
                continue
            share = reveal.parse_share(what, request, party, opened, check=True)
            if share is not None:
                self.shares[party] = share

    def verify(self, shares: list[DecryptionShare], public_key: np.ndarray) -> None:
        """``he.share_check.verify`` over T's shares and check shares (raises ``ShareMismatchError``)."""
        checks = [self.shares[s.party] for s in shares]
        share_check.verify(
            self.reveal.ctx, self.request, shares, checks, public_key, self.challenge, self.budget
        )

"""A keyholder's decryption: the checks before any share exists, the share and its check share,
and opening the check share (``he.share_check``). Part of ``client.keyholder.KeyHolder``, whose
state (roster, setup, secrets, decryptions, ledger) it uses; kept apart so each module has one job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from client import share_checks
from client.ledger import LedgerError
from client.refusals import RefusedRequest
from he import party, share_check, wire
from he.ciphertext import seeded_c1
from he.decrypt import DecryptionRequest, DecryptionShare
from he.errors import HEError


@dataclass
class DecryptionRecord:
    """What a keyholder answered for one (kind, round): U, and per attempt T and the share sent."""

    contributors: str  # hash of U
    attempts: dict[int, str] = field(default_factory=dict)  # attempt -> ",".join(T)


class Decrypting:
    """The decryption methods of ``KeyHolder`` (see ``client.keyholder``'s module docstring for
    what a keyholder refuses)."""

    def partial_decrypt(
        self,
        kind: str,
        round_id: int,
        attempt: int,
        keyholders: list[int],
        contributions: dict[int, bytes],
        check_polynomial: bytes,
    ) -> tuple[bytes, bytes]:
        """This keyholder's masked share for one attempt, after every check (module docstring;
        the request's own in ``client.share_checks``, the answers already given here), and the
        commitment to its share of the server's check polynomial (``he.share_check``): that share
        is opened by ``open_check`` once the server shows the seed the polynomial came from."""
        if not self.is_keyholder:
            raise RefusedRequest("this hospital is not a keyholder of the roster's committee")
        checked = share_checks.check_decryption_request(
            self.roster,
            self.setup,
            self.party,
            self.dealers,
            self.ctx.params.max_rounds,
            kind,
            round_id,
            attempt,
            keyholders,
            contributions,
        )
        decryption_set, contributors = checked.decryption_set, checked.contributors
        request = DecryptionRequest(
            self._label(kind, round_id),
            attempt,
            tuple(contributors),
            decryption_set,
            checked.ciphertexts,
            checked.coefficients,
        )
        key = f"{kind}:{round_id}"
        record = self.decryptions.get(key)
        members = ",".join(map(str, decryption_set))
        if record is not None and record.contributors != request.contributors_hash:
            raise RefusedRequest(
                f"{kind} round {round_id} was already decrypted for another contributor set; "
                "one set per round"
            )
        check_poly = share_check.polynomial_from_bytes(
            self.frame_context(), wire.Kind.CHECK_POLYNOMIAL, check_polynomial, "the check polynomial"
        )
        poly_digest = share_check.polynomial_digest(check_poly)
        if record is not None and attempt in record.attempts:
            stored = f"{key}:{attempt}"
            if record.attempts[attempt] != members or f"share:{stored}" not in self.secrets:
                raise RefusedRequest(f"attempt {attempt} of {kind} round {round_id} was already answered")
            if self.secrets[f"check-polynomial:{stored}"] != poly_digest:
                raise RefusedRequest(
                    f"attempt {attempt} of {kind} round {round_id} was already answered for another "
                    "check polynomial; one check per attempt"
                )
            return self.secrets[f"share:{stored}"], self._commitment(request, stored)
        self._claim_release(checked.release, contributors, kind, round_id)
        share, check = self._shares(request, check_poly)
        record = record or DecryptionRecord(request.contributors_hash)
        record.attempts[attempt] = members
        self.decryptions[key] = record
        for name in [n for n in self.secrets if n.startswith(("share:", "check:", "check-polynomial:"))]:
            del self.secrets[name]  # keep only the latest attempt for a resend
        stored = f"{key}:{attempt}"
        self.secrets |= {f"share:{stored}": share, f"check:{stored}": check}
        self.secrets[f"check-polynomial:{stored}"] = poly_digest
        return share, self._commitment(request, stored)

    def open_check(self, kind: str, round_id: int, attempt: int, seed: bytes) -> bytes:
        """This keyholder's check share of the last attempt it answered, if ``seed`` derives the
        check polynomial that attempt was asked with (``he.share_check.derives``); else refused:
        it never opens a share of a multiplier it has not checked."""
        stored = f"{kind}:{round_id}:{attempt}"
        if f"check:{stored}" not in self.secrets:
            raise RefusedRequest(
                f"no check share of attempt {attempt} of {kind} round {round_id} to open (only the "
                "last attempt answered is kept)"
            )
        ciphertexts = self._stored_ciphertexts(stored)
        c1 = seeded_c1(self.ctx, self._label(kind, round_id), ciphertexts)
        a_pk = share_check.check_key_c1(self.ctx, self.roster.federation_id, self.run_id)
        gain_bits = self._budget(ciphertexts).gain_bits
        answered = self.secrets[f"check-polynomial:{stored}"]
        try:
            derived = share_check.derives(self.ctx, answered, seed, c1, a_pk, gain_bits)
        except ValueError as err:
            raise RefusedRequest(f"check seed refused: {err}") from None
        if not derived:
            raise RefusedRequest(
                f"the seed revealed for attempt {attempt} of {kind} round {round_id} does not derive "
                "the check polynomial this keyholder answered; refusing to open its check share"
            )
        return self.secrets[f"check:{stored}"]

    def _claim_release(self, release: str, contributors: list[int], kind: str, round_id: int) -> None:
        """Record the release in the ledger (fsync'd) before any share exists, or refuse: one
        contributor set per release key, in this run and every later one."""
        if self.ledger is None:
            return
        names = [self.roster.hospital(c).name for c in contributors]
        try:
            self.ledger.claim_release(
                f"{self.roster.federation_id}/{release}",
                names,
                run=self.run_id.hex(),
                flower_run=self.flower_run,
                kind=kind,
                round=round_id,
            )
        except LedgerError as err:
            raise RefusedRequest(f"{err}; refusing to decrypt") from None

    def _shares(self, request: DecryptionRequest, check_poly: np.ndarray) -> tuple[bytes, bytes]:
        """The decryption share of ``request`` and the share of the check polynomial."""
        dealt = [self._polynomial(f"dealt:{dealer}") for dealer in request.contributors]
        bits = self.ctx.params.smudging_bits(len(self.roster.committee), self.roster.max_attempts)
        common = (self.ctx, self.frame_context(), request, self.party, self._channel(), self.channel_keys)
        share = party.decryption_share(*common, self.run_id, dealt, bits)
        check_bits = self._budget(request.num_ciphertexts).smudging_bits
        return share, party.decryption_share(*common, self.run_id, dealt, check_bits, check_poly=check_poly)

    def _budget(self, ciphertexts: int) -> share_check.CheckBudget:
        """The run's check sizes, computed here from the pinned roster (never the server's word)."""
        try:
            return share_check.check_budget(
                self.ctx.params, len(self.roster.committee), self.roster.max_attempts, ciphertexts
            )
        except HEError as err:
            raise RefusedRequest(f"no share check possible: {err}") from None

    def _commitment(self, request: DecryptionRequest, stored: str) -> bytes:
        return share_check.commitment(request, self.party, self.secrets[f"check:{stored}"])

    def _stored_ciphertexts(self, stored: str) -> int:
        """How many ciphertexts the stored attempt had: the rows of its stored decryption share."""
        share = DecryptionShare.from_bytes(self.frame_context(), self.secrets[f"share:{stored}"], "own share")
        return share.polys.shape[0]

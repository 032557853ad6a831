"""A hospital's side of protocol v2: its secrets for one run, and every check it makes itself.

No Flower here: ``client.app`` turns messages into calls, and ``to_state``/``from_state`` carry
the holder between messages in the node's run state (in deployment every message runs in a
fresh process). Everything a hospital acts on is checked against its own pinned roster; the
coordinator's word is taken for nothing but which request to answer next.

What a hospital refuses (``RefusedRequest``):
* a set-up whose hellos are not all signed by roster hospitals for this Flower run, omit its own
  hello, or hold fewer of the roster's keyholders than its set-up minimum
  (``he.transcript.verify_hellos``). The keyholders present are the run's committee K', computed
  here from the pinned roster: the secret is dealt to K' only, with the roster's threshold;
* a second, different encryption under a ``(kind, round)`` it already encrypted (the seeded
  ``c1`` is a nonce: a retry gets the same bytes), or one under a round older than its last;
* encryption or decryption for a round outside those the flooding was sized for (training
  rounds 1..max_rounds, the statistics passes' three ids): more decryptions than that would
  exceed the statistical-distance budget;
* as a keyholder, a decryption request whose decryption set T is not a quorum-intersecting
  subset of the run's committee K' (sized against the roster's committee K), whose
  contributors U are fewer than the roster's minimum, lack a valid signed contribution (all
  with one layout: shapes, clip and weight scale), or include a dealer it holds no share from;
  a second U for a round it already answered; an attempt beyond the roster's ``max_attempts``;
  and a second share for an attempt (a retry gets the stored share, byte for byte), also for
  another check polynomial (``he.share_check``). Each share is stored in the state before it is
  sent; the share of the check polynomial is only committed to, and opened only once the server's
  revealed seed derives that polynomial (``open_check``).
* across runs (with a ledger, ``client.ledger``): contributors that signed different release
  keys (what the aggregate discloses: the starting model's hash, or the statistics pass), a
  statistics pass under a round id that is not its own, and a release key this hospital's
  ledger already holds for another contributor set (an exact re-run, or a resume, without one
  hospital). The release is recorded, fsync'd, before the share is computed; a ledger that
  cannot be read or was edited by hand refuses everything.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

import numpy as np

from client import share_checks
from client.ledger import LedgerError, ReleaseLedger
from client.refusals import RefusedRequest
from he import channel, keygen, party, share_check, transcript, wire
from he.ciphertext import CiphertextLabel, SecretKeyEncryptor, seeded_c1
from he.context import HEContext
from he.decrypt import DecryptionRequest, DecryptionShare
from he.encoding import Quantizer
from he.errors import HEError
from he.identity import SigningKey
from he.keygen import SecretKeyShare
from he.params import preset
from he.roster import Roster

log = logging.getLogger(__name__)


@dataclass
class DecryptionRecord:
    """What a keyholder answered for one (kind, round): U, and per attempt T and the share sent."""

    contributors: str  # hash of U
    attempts: dict[int, str] = field(default_factory=dict)  # attempt -> ",".join(T)


@dataclass
class KeyHolder:
    """Protocol state of one hospital for one run (see module docstring)."""

    roster: Roster
    name: str
    flower_run: int
    signing_key_path: str
    secrets: dict[str, bytes] = field(default_factory=dict, repr=False)
    hellos: dict[int, bytes] = field(default_factory=dict, repr=False)
    dealers: list[int] = field(default_factory=list)
    encrypted: dict[str, int] = field(default_factory=dict)  # kind -> last round encrypted
    decryptions: dict[str, DecryptionRecord] = field(default_factory=dict)  # "kind:round"
    ledger: ReleaseLedger | None = field(default=None, repr=False)  # the hospital's, from its node config
    _setup: transcript.SetupTranscript | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.party = self.roster.party_of(self.name)
        self.ctx = _context(self.roster.preset)
        self.roster.require()

    @property
    def is_keyholder(self) -> bool:
        return self.party in self.roster.quorum.committee

    # -- set-up ------------------------------------------------------------------------------
    def hello(self) -> bytes:
        """A signed hello: fresh contribution and channel public key for this Flower run."""
        contribution = keygen.fresh_contribution()
        pair = channel.ChannelKeyPair.generate()
        self.secrets["channel"] = pair.private_bytes_for_node_state()
        hello = transcript.sign_hello(
            self._signer(), self.roster, self.name, self.flower_run, contribution, pair.public_bytes()
        )
        self.secrets["own-hello"] = hello
        return hello

    def deal(self, hellos: dict[int, bytes]) -> tuple[dict[int, bytes], bytes, bytes]:
        """Verify the set-up, draw this run's ``s_i`` and deal it to the run's committee K' (the
        roster's keyholders present, with the roster's threshold), sealed.

        Returns the sealed share per keyholder, the signed dealing statement, and the public-key
        share the server checks decryption shares with (``he.share_check``; signed in the statement).
        """
        if "secret-key" in self.secrets:
            raise RefusedRequest(
                "this hospital already dealt its secret for this run; dealing again would replace it"
            )
        if hellos.get(self.party) != self.secrets.get("own-hello"):
            raise RefusedRequest("the set-up omits or alters this hospital's own hello; refusing to deal")
        try:
            setup = transcript.verify_hellos(self.roster, self.flower_run, hellos)
        except HEError as err:
            raise RefusedRequest(f"set-up refused: {err}") from None
        self.hellos, self._setup = dict(hellos), setup
        secret = keygen.gen_secret(self.ctx)
        self.secrets["secret-key"] = secret.residues.tobytes()
        own, sealed = party.deal(
            self.ctx,
            self.frame_context(),
            secret,
            self.roster.threshold,
            list(setup.committee),
            self.party,
            self._channel(),
            setup.channel_keys,
            setup.run_id,
        )
        if own is not None:  # its own share stays here, unsealed
            self.secrets[f"dealt:{self.party}"] = own.tobytes()
        frame_ctx = self.frame_context()
        public_key = party.public_key_share(
            self.ctx, frame_ctx, secret, self.roster.federation_id, setup.run_id
        )
        statement = transcript.sign_dealing(self._signer(), setup.run_id, self.party, sealed, public_key)
        return sealed, statement, public_key

    def receive_dealings(self, sealed: dict[int, bytes], statements: dict[int, bytes]) -> list[int]:
        """Keep the share each dealer sent this keyholder; return the dealers whose share failed.

        A dealer whose share is missing, unsigned or does not open is named and left out: this
        keyholder will refuse any contributor set that includes it.
        """
        if not self.is_keyholder:
            raise RefusedRequest("this hospital is not a keyholder of the roster's committee")
        if self.dealers:
            raise RefusedRequest("this keyholder already received the dealings of this run")
        setup = self.setup
        me = self._channel()
        failed = []
        for dealer in setup.parties:
            if dealer == self.party and f"dealt:{dealer}" in self.secrets:
                self.dealers.append(dealer)
                continue
            try:
                blob, statement = sealed[dealer], statements[dealer]
                share = party.open_dealt_share(
                    self.ctx,
                    self.frame_context(),
                    self.roster,
                    setup.run_id,
                    dealer,
                    self.party,
                    me,
                    setup.channel_keys[dealer],
                    statement,
                    blob,
                ).expand(self.ctx)
            except (KeyError, HEError) as err:
                log.warning("dealing of %s refused: %s", self.roster.hospital(dealer).name, err)
                failed.append(dealer)
                continue
            self.secrets[f"dealt:{dealer}"] = share.tobytes()
            self.dealers.append(dealer)
        return failed

    # -- encryption ----------------------------------------------------------------------------
    def encrypt(
        self,
        kind: str,
        round_id: int,
        arrays: list[np.ndarray],
        num_examples: int,
        clip: float | None = None,
        weight_scale: int | None = None,
        quantizer: Quantizer | None = None,
        sums: list[int] | tuple[int, ...] = (),
        *,
        release: str,
    ) -> tuple[bytes, bytes, int]:
        """The encrypted update for (kind, round), its signed contribution, and the clipped count
        (``quantizer``: DP mode's; ``sums``: exact sums such as evaluation statistics; see
        ``he.encoding``; ``release``: what the aggregate discloses, computed by this hospital,
        ``he.transcript.model_release`` or ``statistics_release``).

        A retry of the last (kind, round) returns the stored bytes: never two ``c0`` under one ``c1``.
        """
        share_checks.check_round(self.ctx.params.max_rounds, kind, round_id)
        share_checks.check_release(kind, round_id, release)
        last = self.encrypted.get(kind)
        if last is not None and round_id == last:
            return self.secrets[f"sent:{kind}"], self.secrets[f"sent-statement:{kind}"], 0
        if last is not None and round_id < last:
            raise RefusedRequest(f"{kind} round {round_id} is older than round {last} already encrypted")
        ctx = self.frame_context(statistics=kind == "statistics")
        label = self._label(kind, round_id)
        secret = SecretKeyShare(self._polynomial("secret-key"))
        encryptor = SecretKeyEncryptor(ctx, secret)
        update, clipped = encryptor.encrypt(arrays, num_examples, label, clip, weight_scale, quantizer, sums)
        frame = update.to_bytes(ctx)
        statement = transcript.sign_contribution(
            self._signer(),
            self.roster,
            self.run_id,
            kind,
            round_id,
            self.party,
            frame,
            update.num_ciphertexts,
            update.coefficients,
            update.layout.to_json(),
            release,
        )
        self.encrypted[kind] = round_id
        self.secrets[f"sent:{kind}"] = frame
        self.secrets[f"sent-statement:{kind}"] = statement
        return frame, statement, clipped

    # -- decryption ----------------------------------------------------------------------------
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
        poly_digest = hashlib.sha256(check_polynomial).digest()
        if record is not None and record.contributors != request.contributors_hash:
            raise RefusedRequest(
                f"{kind} round {round_id} was already decrypted for another contributor set; "
                "one set per round"
            )
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
        check_poly = share_check.polynomial_from_bytes(
            self.frame_context(), wire.Kind.CHECK_POLYNOMIAL, check_polynomial, "the check polynomial"
        )
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
        label = self._label(kind, round_id)
        a_pk = share_check.check_key_c1(self.ctx, self.roster.federation_id, self.run_id)
        try:
            challenge = share_check.derive_challenge(
                self.ctx, seed, ciphertexts, self._budget(ciphertexts).gain_bits
            )
        except ValueError as err:
            raise RefusedRequest(f"check seed refused: {err}") from None
        poly = share_check.check_polynomial(
            self.ctx, seeded_c1(self.ctx, label, ciphertexts), a_pk, challenge
        )
        frame = share_check.polynomial_to_bytes(self.frame_context(), wire.Kind.CHECK_POLYNOMIAL, poly)
        if hashlib.sha256(frame).digest() != self.secrets[f"check-polynomial:{stored}"]:
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
        return share, party.check_share(*common, self.run_id, dealt, check_poly, check_bits)

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

    # -- state ---------------------------------------------------------------------------------
    def to_state(self) -> dict[str, bytes]:
        """Everything needed to resume, as bytes (secrets included: node run state only)."""
        public = {
            "roster": self.roster.to_json(),
            "name": self.name,
            "flower_run": self.flower_run,
            "signing_key_path": self.signing_key_path,
            "hellos": {str(k): v.decode() for k, v in self.hellos.items()},
            "dealers": self.dealers,
            "encrypted": self.encrypted,
            "decryptions": {k: [r.contributors, r.attempts] for k, r in self.decryptions.items()},
        }
        return {"public": json.dumps(public).encode()} | {f"secret:{k}": v for k, v in self.secrets.items()}

    @classmethod
    def from_state(cls, state: dict[str, bytes]) -> KeyHolder:
        public = json.loads(state["public"])
        return cls(
            roster=Roster.from_bytes(json.dumps(public["roster"]).encode()),
            name=public["name"],
            flower_run=int(public["flower_run"]),
            signing_key_path=public["signing_key_path"],
            secrets={k[len("secret:") :]: bytes(v) for k, v in state.items() if k.startswith("secret:")},
            hellos={int(k): v.encode() for k, v in public["hellos"].items()},
            dealers=[int(d) for d in public["dealers"]],
            encrypted={k: int(v) for k, v in public["encrypted"].items()},
            decryptions={
                k: DecryptionRecord(c, {int(a): t for a, t in attempts.items()})
                for k, (c, attempts) in public["decryptions"].items()
            },
        )

    # -- helpers -------------------------------------------------------------------------------
    @property
    def setup(self) -> transcript.SetupTranscript:
        """The verified hellos of this run (checked once per process, then kept)."""
        if self._setup is None:
            if not self.hellos:
                raise RefusedRequest("no key set-up for this run on this hospital")
            try:
                self._setup = transcript.verify_hellos(self.roster, self.flower_run, self.hellos)
            except HEError as err:
                raise RefusedRequest(f"set-up refused: {err}") from None
        return self._setup

    @property
    def run_id(self) -> bytes:
        return self.setup.run_id

    @property
    def channel_keys(self) -> dict[int, bytes]:
        return self.setup.channel_keys

    def _label(self, kind: str, round_id: int) -> CiphertextLabel:
        return CiphertextLabel(self.roster.federation_id, self.run_id, kind, round_id)

    def _signer(self) -> SigningKey:
        """This hospital's signing key, read from its own file when needed (never kept in state)."""
        return SigningKey.load(self.signing_key_path)

    def _channel(self) -> channel.ChannelKeyPair:
        return channel.ChannelKeyPair.from_node_state(self.secrets["channel"])

    def frame_context(self, statistics: bool = False) -> HEContext:
        """The context whose wire frames are bound to this run (``HEContext.bound``)."""
        return _context(self.roster.preset, statistics).bound(self.run_id)

    def _polynomial(self, name: str) -> np.ndarray:
        residues = np.frombuffer(self.secrets[name], dtype=np.uint64)
        return residues.reshape(len(self.ctx.data_moduli), self.ctx.n)


_CONTEXTS: dict[tuple[str, bool], HEContext] = {}


def _context(preset_name: str, statistics: bool = False) -> HEContext:
    """One SEAL context per preset and process (building one costs ~0.1 s)."""
    key = (preset_name, statistics)
    if key not in _CONTEXTS:
        params = preset(preset_name)
        _CONTEXTS[key] = HEContext(params.for_feature_statistics() if statistics else params)
    return _CONTEXTS[key]


__all__ = ["KeyHolder", "RefusedRequest"]

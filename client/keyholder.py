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

import json
import logging
from dataclasses import dataclass, field

import numpy as np

from client import share_checks
from client.keyholder_decryption import Decrypting, DecryptionRecord
from client.ledger import ReleaseLedger
from client.refusals import RefusedRequest
from he import channel, keygen, party, transcript
from he.ciphertext import CiphertextLabel, SecretKeyEncryptor
from he.context import HEContext
from he.encoding import Quantizer
from he.errors import HEError
from he.identity import SigningKey
from he.keygen import SecretKeyShare
from he.params import preset
from he.roster import Roster

log = logging.getLogger(__name__)


@dataclass
class KeyHolder(Decrypting):
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

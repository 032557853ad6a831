"""A hospital's side of the threshold-HE protocol: its secrets, and the checks it makes.

No Flower here: ``client.app`` turns messages into calls. The state (secret key, Shamir share,
channel private key) is kept in the node's in-memory run state between messages; it never
appears in replies, logs or metrics. ``__repr__`` hides it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from he import channel, keygen
from he.ciphertext import EncryptedUpdate, UpdateEncryptor
from he.context import HEContext
from he.decrypt import DecryptionShare, gen_decryption_share
from he.errors import ShareMismatchError
from he.params import preset
from he.threshold import combine_received_shares

log = logging.getLogger(__name__)


class RefusedRequest(RuntimeError):
    """The hospital refuses a request that would reveal more than the round's aggregate."""


@dataclass
class KeyHolder:
    """Protocol state of one hospital for one run (``party`` is its index 1..n)."""

    preset_name: str
    party: int
    num_parties: int
    threshold: int
    run_id: int
    secrets: dict[str, bytes] = field(default_factory=dict, repr=False)
    trained_round: int = 0
    decrypted_rounds: list[int] = field(default_factory=list)
    statistics_rounds: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ctx = _context(self.preset_name)
        self.ctx.params.check_federation(self.num_parties, self.threshold)

    # -- setup -------------------------------------------------------------------------------
    def hello(self) -> tuple[bytes, bytes]:
        """Fresh CRS contribution and channel public key."""
        contribution = keygen.fresh_contribution()
        pair = channel.ChannelKeyPair.generate()
        self.secrets["contribution"] = contribution
        self.secrets["channel"] = pair.private_bytes_for_node_state()
        return contribution, pair.public_bytes()

    def keygen(self, contributions: list[bytes], channel_keys: dict[int, bytes]) -> tuple[bytes, dict]:
        """Public key share, and a sealed Shamir share of ``s_i`` for every other hospital."""
        if self.secrets.get("contribution") not in contributions:
            raise RefusedRequest("the CRS seed omits this hospital's contribution; refusing keygen")
        crp = keygen.sample_crp(self.ctx, keygen.crs_seed(contributions))
        secret = keygen.gen_secret(self.ctx)
        share = keygen.gen_public_key_share(self.ctx, secret, crp)
        sealed = {}
        if self.threshold < self.num_parties:
            me = self._channel()
            points = list(range(1, self.num_parties + 1))
            for j, share_j in keygen.deal_secret_shares(self.ctx, secret, self.threshold, points).items():
                if j == self.party:
                    self.secrets["own-shamir"] = share_j.tobytes()
                    continue
                frame = keygen.secret_share_to_bytes(self.ctx, share_j)
                sealed[j] = channel.seal(me, channel_keys[j], frame, self._aad(self.party, j))
        else:
            self.secrets["decryption-key"] = secret.data_level.tobytes()
        return share.to_bytes(self.ctx), sealed

    def receive_key_shares(self, sealed: dict[int, bytes], channel_keys: dict[int, bytes]) -> None:
        """Open the Shamir shares sent to this hospital and keep their sum ``S_j``."""
        if self.threshold == self.num_parties:
            return
        if set(sealed) != set(range(1, self.num_parties + 1)) - {self.party}:
            raise ShareMismatchError(
                f"expected Shamir shares from every other hospital, got from {sorted(sealed)}"
            )
        me = self._channel()
        shares = [self._secret_array("own-shamir")]
        for sender, blob in sorted(sealed.items()):
            frame = channel.open_sealed(me, channel_keys[sender], blob, self._aad(sender, self.party))
            shares.append(keygen.secret_share_from_bytes(self.ctx, frame, f"hospital {sender}"))
        total = combine_received_shares(shares, self.ctx.data_moduli)
        self.secrets["decryption-key"] = total.tobytes()
        del self.secrets["own-shamir"]

    # -- rounds ------------------------------------------------------------------------------
    def public_key(self) -> np.ndarray:
        residues = np.frombuffer(self.secrets["public-key"], dtype=np.uint64)
        return residues.reshape(2, len(self.ctx.key_moduli), self.ctx.n)

    def encrypt_update(
        self, server_round: int, delta: list[np.ndarray], num_examples: int, clip: float | None = None
    ) -> tuple[bytes, int]:
        """This round's encrypted weighted update (and how many values were clipped to ``clip``)."""
        update, clipped = UpdateEncryptor(self.ctx, self.public_key()).encrypt(delta, num_examples, clip)
        self.trained_round = server_round
        return update.to_bytes(self.ctx), clipped

    def encrypt_feature_statistics(self, round_id: int, values: list[np.ndarray], count: int) -> bytes:
        """One encrypted pass of feature statistics (averaged over hospitals by example count)."""
        stats_ctx = _context(self.preset_name, statistics=True)
        update, clipped = UpdateEncryptor(stats_ctx, self.public_key()).encrypt(values, count)
        if clipped:
            log.warning("%d feature statistics exceed 2^20 and were clipped: rescale those features", clipped)
        self.statistics_rounds.append(round_id)
        return update.to_bytes(stats_ctx)

    def partial_decrypt(
        self, server_round: int, c1: np.ndarray, contributors: list[int], min_contributors: int
    ) -> bytes:
        """Decrypt-share the round's aggregate, after the checks a hospital can make itself."""
        if server_round in self.decrypted_rounds:
            raise RefusedRequest(f"round {server_round} was already decrypted once; refusing a second time")
        if server_round < 1:
            if server_round not in self.statistics_rounds:
                raise RefusedRequest(
                    f"decryption asked for statistics pass {server_round}, which this hospital never sent"
                )
            if self.party not in contributors:
                raise RefusedRequest(
                    "this hospital's statistics are missing from the aggregate's contributor list"
                )
        elif server_round < max(self.trained_round, 1) or server_round > self.trained_round + 1:
            raise RefusedRequest(
                f"decryption asked for round {server_round}, but this hospital last trained "
                f"round {self.trained_round}"
            )
        if len(set(contributors)) < min_contributors:
            raise RefusedRequest(
                f"the aggregate claims {len(set(contributors))} contributors, fewer than the "
                f"minimum {min_contributors}; refusing to reveal it"
            )
        if self.trained_round == server_round and self.party not in contributors:
            raise RefusedRequest("this hospital's update is missing from the aggregate's contributor list")
        aggregate = EncryptedUpdate(layout=None, polys=np.stack([np.zeros_like(c1), c1], axis=1))
        bits = self.ctx.params.smudging_bits(self.num_parties, self.threshold)
        share = gen_decryption_share(
            self.ctx, aggregate, self._secret_array("decryption-key"), self.party, server_round, bits
        )
        self.decrypted_rounds.append(server_round)
        return share.to_bytes(self.ctx)

    # -- helpers -----------------------------------------------------------------------------
    def _channel(self) -> channel.ChannelKeyPair:
        return channel.ChannelKeyPair.from_node_state(self.secrets["channel"])

    def _aad(self, sender: int, recipient: int) -> bytes:
        return f"run={self.run_id};from={sender};to={recipient}".encode()

    def _secret_array(self, name: str) -> np.ndarray:
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


__all__ = ["DecryptionShare", "KeyHolder", "RefusedRequest"]

"""What one hospital computes in protocol v2 once its checks have passed: deal, open, share.

``client.keyholder`` makes every check and keeps the state; the computations live here, as pure
functions, so that ``experiments.bench_he`` times the very code hospitals run instead of a copy
that could drift from it. ``timed`` (default: call directly) lets the benchmark time each step;
it is given a step name, the function and its arguments, and must return the function's result.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from he import channel, keygen, share_check, transcript, wire
from he.ciphertext import seeded_c1
from he.context import HEContext
from he.decrypt import DecryptionRequest, gen_decryption_share, pairwise_masks
from he.roster import Roster
from he.threshold import sum_shares

Timed = Callable[..., object]


def untimed(name: str, fn: Callable, *args, **kwargs):
    """Run ``fn`` without timing it (the ``timed`` hook of a hospital's run)."""
    return fn(*args, **kwargs)


def deal_context(run_id: bytes, dealer: int, recipient: int) -> bytes:
    """The channel context of one dealt share: it binds the sealed share to the run and both
    parties, so a share cannot be replayed to another keyholder or into another run."""
    return run_id + f"|deal|from={dealer}|to={recipient}".encode()


def deal(
    ctx: HEContext,
    frame_ctx: HEContext,
    secret: keygen.SecretKeyShare,
    threshold: int,
    committee: list[int],
    dealer: int,
    own: channel.ChannelKeyPair,
    channel_keys: dict[int, bytes],
    run_id: bytes,
    timed: Timed = untimed,
) -> tuple[np.ndarray | None, dict[int, bytes]]:
    """Shamir-deal ``secret`` to ``committee`` and seal each share for its keyholder.

    Returns the dealer's own share, expanded (``None`` if it is not on the committee; it never
    leaves the hospital, so it is not sealed), and the sealed share per other keyholder.
    Frames are made with ``frame_ctx`` (bound to the run), sealing under ``deal_context``.
    """
    shares = timed("shamir", keygen.deal_secret_shares, ctx, secret, threshold, committee)
    own_share = timed("shamir", shares.pop(dealer).expand, ctx) if dealer in shares else None
    sealed = {}
    for keyholder, share in shares.items():
        frame = timed("frame", share.to_bytes, frame_ctx)
        context = deal_context(run_id, dealer, keyholder)
        sealed[keyholder] = timed("seal", channel.seal, own, channel_keys[keyholder], frame, context)
    return own_share, sealed


def open_dealt_share(
    ctx: HEContext,
    frame_ctx: HEContext,
    roster: Roster,
    run_id: bytes,
    dealer: int,
    keyholder: int,
    own: channel.ChannelKeyPair,
    dealer_key: bytes,
    statement: bytes,
    blob: bytes,
) -> keygen.DealtShare:
    """The share ``dealer`` sealed for ``keyholder``: its signed statement checked, opened and
    parsed (raises ``HEError`` naming the dealer if any of it fails). Expand it to keep it."""
    transcript.verify_dealing(roster, run_id, dealer, keyholder, statement, blob)
    frame = channel.open_sealed(own, dealer_key, blob, deal_context(run_id, dealer, keyholder))
    return keygen.DealtShare.from_bytes(frame_ctx, frame, roster.hospital(dealer).name)


def decryption_share(
    ctx: HEContext,
    frame_ctx: HEContext,
    request: DecryptionRequest,
    party: int,
    own: channel.ChannelKeyPair,
    channel_keys: dict[int, bytes],
    run_id: bytes,
    dealt: list[np.ndarray],
    smudging_bits: int,
    timed: Timed = untimed,
    check_poly: np.ndarray | None = None,
) -> bytes:
    """A keyholder's masked, flooded decryption share for ``request``, framed with ``frame_ctx``.

    ``dealt`` are the shares this keyholder was dealt by the contributors U: their sum is its
    share of ``s_U``, which it multiplies only by a ``c1`` it derives itself from the label.
    With ``check_poly``: its share of the server's check polynomial instead (``he.share_check``),
    flooded as any share (``smudging_bits`` then the check's), with masks of a stream of their
    own; it leaves only after the server's seed is shown to derive ``check_poly``.
    """
    key_share = timed("sum", sum_shares, dealt, ctx.data_moduli)
    if check_poly is None:
        polys, streams = timed("c1", seeded_c1, ctx, request.label, request.num_ciphertexts), None
    else:
        polys, streams = check_poly[None], [share_check.CHECK_STREAM]
    masks = timed("masks", _masks, ctx, request, party, own, channel_keys, run_id, streams)
    share = timed("share", gen_decryption_share, ctx, request, party, polys, key_share, masks, smudging_bits)
    return timed("serialize", share.to_bytes, frame_ctx)


def public_key_share(
    ctx: HEContext, frame_ctx: HEContext, secret: keygen.SecretKeyShare, federation_id: str, run_id: bytes
) -> bytes:
    """This hospital's ``pk_i`` for the run's share checks (``he.share_check``), framed."""
    a_pk = share_check.check_key_c1(ctx, federation_id, run_id)
    pk = share_check.public_key_share(ctx, secret, a_pk)
    return share_check.polynomial_to_bytes(frame_ctx, wire.Kind.PUBLIC_KEY_SHARE, pk)


def _masks(ctx, request, party, own, channel_keys, run_id, streams=None) -> np.ndarray:
    """The pairwise masks with every other member of T (they cancel when T's shares are summed)."""
    keys = {k: channel.mask_key(own, channel_keys[k], run_id) for k in request.keyholders if k != party}
    return pairwise_masks(ctx, party, keys, request, streams)

"""The benchmark's in-process federation: roster, hellos and the timed dealing (``bench_he``).

Every step is the production code a hospital runs (``he.party``: ``deal``, ``open_dealt_share``),
with frames bound to the run as ``client.keyholder`` binds them; only the loop over the parties,
which Flower's messages drive in a real run, is the benchmark's.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from he import channel, keygen, party, transcript
from he.context import HEContext
from he.identity import SigningKey
from he.roster import Roster

FLOWER_RUN = 1
MB, GB = 1e6, 1e9


@dataclass(frozen=True)
class Config:
    """One benchmarked federation: N hospitals, a committee of K keyholders, threshold T, preset."""

    hospitals: int
    committee: int
    threshold: int
    preset: str

    @classmethod
    def parse(cls, text: str) -> Config:
        try:
            n, k, t, name = text.split(":")
            config = cls(int(n), int(k), int(t), name)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected N:K:T:PRESET, got {text!r}") from None
        if not 2 <= config.threshold <= config.committee <= config.hospitals:
            raise argparse.ArgumentTypeError(f"{text}: need 2 <= T <= K <= N")
        return config

    @property
    def column(self) -> str:
        return f"{self.preset}, n={self.hospitals}, K={self.committee}, t={self.threshold}"


class Clock:
    """Seconds (of ``now``: CPU or wall) per named step and per party; reports medians over the
    parties. ``time`` is the ``timed`` hook of ``he.party``."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.parties: list[dict[str, float]] = []
        self._current: dict[str, float] = {}
        self._started = 0.0

    def start_party(self) -> None:
        self._current, self._started = {}, self.now()

    def end_party(self) -> None:
        self._current["total"] = self.now() - self._started
        self.parties.append(self._current)

    def time(self, name: str, fn, *args, **kwargs):
        start = self.now()
        result = fn(*args, **kwargs)
        self._current[name] = self._current.get(name, 0.0) + self.now() - start
        return result

    def median(self, *names: str) -> float:
        return float(np.median([sum(p.get(name, 0.0) for name in names) for p in self.parties]))


def progress(message: str) -> None:
    print(f"[bench_he {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def spread(n: int, count: int) -> list[int]:
    """``count`` party indices spread evenly over 1..n (all of them when count >= n)."""
    if count >= n:
        return list(range(1, n + 1))
    return sorted({round(float(x)) for x in np.linspace(1, n, count)})


@dataclass
class Federation:
    """One configuration's set-up: roster, hellos, channel keys, and the distinct dealers' shares."""

    config: Config
    ctx: HEContext
    frame_ctx: HEContext  # ctx bound to the run, as every hospital frames its shares
    roster: Roster
    run_id: bytes
    channels: dict[int, channel.ChannelKeyPair] = field(repr=False)
    channel_keys: dict[int, bytes]
    dealers: list[int]  # the distinct dealers (dealt, timed, and encrypting)
    secrets: dict[int, keygen.SecretKeyShare] = field(repr=False)
    dealt: dict[int, dict[int, np.ndarray]] = field(repr=False)  # dealer -> keyholder -> f(k)
    rows: dict[str, object] = field(default_factory=dict)

    @property
    def committee(self) -> tuple[int, ...]:
        return self.roster.quorum.committee

    def source(self, party: int) -> int:
        """The distinct dealer whose secret and update stand in for ``party``."""
        return party if party in self.secrets else self.dealers[(party - 1) % len(self.dealers)]


def build_federation(
    config: Config, ctx: HEContext, distinct: int, max_attempts: int, now: Callable[[], float]
) -> Federation:
    """Sign every hospital's hello, time the dealing of ``distinct`` dealers and every keyholder's
    receiving of them, and count the set-up's bytes through the server for all N dealers."""
    n, k, t = config.hospitals, config.committee, config.threshold
    signers = {i: SigningKey.generate() for i in range(1, n + 1)}
    roster = Roster.create(
        f"bench-{n}-{k}-{t}",
        {f"hospital-{i}": key.public_bytes() for i, key in signers.items()},
        threshold=t,
        preset=config.preset,
        committee_size=k,
        max_attempts=max_attempts,
    )
    channels = {i: channel.ChannelKeyPair.generate() for i in range(1, n + 1)}
    hellos = {
        i: transcript.sign_hello(
            signers[i],
            roster,
            f"hospital-{i}",
            FLOWER_RUN,
            keygen.fresh_contribution(),
            channels[i].public_bytes(),
        )
        for i in range(1, n + 1)
    }
    setup = transcript.verify_hellos(roster, FLOWER_RUN, hellos)
    fed = Federation(
        config,
        ctx,
        ctx.bound(setup.run_id),
        roster,
        setup.run_id,
        channels,
        setup.channel_keys,
        spread(n, distinct),
        {},
        {},
    )
    clock = Clock(now)
    sealed_by, statements, public_keys = {}, {}, {}
    for dealer in fed.dealers:
        clock.start_party()
        secret = clock.time("gen_secret", keygen.gen_secret, ctx)
        own, sealed = party.deal(
            ctx,
            fed.frame_ctx,
            secret,
            t,
            list(fed.committee),
            dealer,
            channels[dealer],
            fed.channel_keys,
            fed.run_id,
            timed=clock.time,
        )
        args = (ctx, fed.frame_ctx, secret, roster.federation_id, fed.run_id)
        public_keys[dealer] = clock.time("public key", party.public_key_share, *args)
        statements[dealer] = clock.time(
            "sign", transcript.sign_dealing, signers[dealer], fed.run_id, dealer, sealed, public_keys[dealer]
        )
        clock.end_party()
        fed.secrets[dealer], sealed_by[dealer] = secret, sealed
        fed.dealt[dealer] = {} if own is None else {dealer: own}
    receive = _receive_dealings(fed, sealed_by, statements, now)
    fed.rows = {
        "dealing per hospital [s]": clock.median("total"),
        "  of which gen_secret / Shamir / frame+seal / sign [s]": " / ".join(
            f"{clock.median(*names):.3f}"
            for names in (("gen_secret",), ("shamir",), ("frame", "seal"), ("sign",))
        ),
        **_byte_rows(fed, signers, hellos, sealed_by, next(iter(public_keys.values())), receive),
    }
    progress(f"{config.column}: set-up done ({len(fed.dealers)} dealers timed)")
    return fed


def _receive_dealings(
    fed: Federation,
    sealed_by: dict[int, dict[int, bytes]],
    statements: dict[int, bytes],
    now: Callable[[], float],
) -> dict[str, list[float]]:
    """Every keyholder opens what the distinct dealers sent it (signature check, AEAD, parse, and
    expansion of a seeded share: the residues it keeps); seconds scaled to n - 1 dealers, per
    keyholder, by the kind of share it is sent (seed or full)."""
    receive: dict[str, list[float]] = {"seed": [], "full": []}
    for keyholder in fed.committee:
        seconds, kinds = [], set()
        for dealer in fed.dealers:
            if dealer == keyholder:
                continue
            start = now()
            share = party.open_dealt_share(
                fed.ctx,
                fed.frame_ctx,
                fed.roster,
                fed.run_id,
                dealer,
                keyholder,
                fed.channels[keyholder],
                fed.channel_keys[dealer],
                statements[dealer],
                sealed_by[dealer][keyholder],
            )
            fed.dealt[dealer][keyholder] = share.expand(fed.ctx)
            seconds.append(now() - start)
            kinds.add("seed" if share.seed is not None else "full")
        if len(kinds) == 1 and seconds:
            receive[kinds.pop()].append(float(np.mean(seconds)) * (fed.config.hospitals - 1))
    return receive


def _byte_rows(
    fed: Federation,
    signers: dict[int, SigningKey],
    hellos: dict[int, bytes],
    sealed_by: dict[int, dict[int, bytes]],
    public_key: bytes,
    receive: dict[str, list[float]],
) -> dict[str, object]:
    """Exact byte counts for all n dealers (what each keyholder is sent has one size, seed or
    full; each dealer's public-key share goes to the server only), and the receiving times."""
    n, committee, dealers = fed.config.hospitals, fed.committee, fed.dealers
    size_to = {k: len(next(sealed_by[d][k] for d in dealers if d != k)) for k in committee}
    example = next(iter(sealed_by[dealers[0]].values()))
    hello_bytes = sum(len(h) for h in hellos.values())
    up = hello_bytes  # hello replies
    down = n * hello_bytes  # every hospital gets every hello with the deal request
    per_dealer = []
    for dealer in range(1, n + 1):
        recipients = [kh for kh in committee if kh != dealer]
        statement = transcript.sign_dealing(
            signers[dealer], fed.run_id, dealer, dict.fromkeys(recipients, example), public_key
        )
        per_dealer.append(sum(size_to[k] for k in recipients))
        up += per_dealer[-1] + len(statement) + len(public_key)
        down += per_dealer[-1] + len(recipients) * len(statement)  # share + statement to each keyholder
    full = max(size_to.values())
    seeded = sum(1 for k in committee if size_to[k] < full)
    return {
        "shares sent per dealer as seeds / in full": f"{seeded} / {len(committee) - seeded}",
        "sealed share, seed / full [bytes]": f"{min(size_to.values())} / {full}",
        "sealed bytes per dealer, max [MB]": max(per_dealer) / MB,
        "receive dealings per keyholder, seed / full [s]": " / ".join(
            f"{np.median(receive[kind]):.3f}" if receive[kind] else "–" for kind in ("seed", "full")
        ),
        "set-up through the server, up + down [GB]": (up + down) / GB,
        "  of which hellos (up + down) [MB]": (hello_bytes * (n + 1)) / MB,
        "  up (dealers) / down (keyholders) [GB]": f"{up / GB:.3f} / {down / GB:.3f}",
    }

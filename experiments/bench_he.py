"""Benchmark of protocol v2 (he level, real presets): wire sizes, set-up, step timings, accuracy.

    python -m experiments.bench_he             # the full benchmark (~2 minutes on 2 cores)
    python -m experiments.bench_he --quick     # 10 hospitals, 100k values, compact (< 1 minute)
    python -m experiments.bench_he --config 32:16:11:compact --values 250000 --distinct 4

Each configuration ``N:K:T:PRESET`` is a federation of N hospitals (roster parties 1..N) whose
keyholder committee is parties 1..K with threshold T; everything runs in one process, through
the same ``he`` calls and byte frames as ``client.keyholder`` and the strategy:

* **set-up**: signed hellos (``he.transcript``) of all N hospitals; each dealer draws ``s_i``
  (``gen_secret``), Shamir-deals it to the K committee points (``keygen.deal_secret_shares``:
  t_K - 1 keyholders get a seed, the others the full share), frames and seals each share for its
  keyholder (``he.channel.seal``; a keyholder keeps its own share unsealed) and signs the
  dealing; every keyholder checks, opens and expands what it was sent. Only ``--distinct``
  dealers (spread over the roster) deal and are timed; the per-hospital time is their median.
  Bytes through the server are counted exactly for all N dealers: hellos up, all hellos down
  to every hospital (the deal request), sealed shares and dealing statements up, and down to
  each keyholder (Flower's own message framing is not counted).
* **round**: the distinct dealers encrypt (seeded c1, c0 only) and serialize their updates;
  the server streams every hospital's frame into ``CiphertextSum`` (parsing and range checks
  included). With N > ``--distinct`` the frames of the distinct dealers are re-added under the
  other hospitals' ids and every keyholder's ``[s_U]_k`` sums the matching dealt shares, so the
  sum is a genuine encryption of N (repeated) updates and decrypts exactly; timings are those
  of N distinct updates, the model is not.
* **decryption**: a random decryption set of the minimum size ``ceil((K + T)/2)``; each member
  sums its |U| dealt shares, derives c1 from the label, its mask keys and pairwise masks, and
  serializes its masked flooded share; the server parses the |T| shares, combines and decodes.

Targets (the issue's) apply to the compact preset; precise rows are for reference. Times are
this process's CPU seconds by default (``--clock cpu``; every step is single-threaded, so this is
the wall time of an idle machine and is not inflated by other load); ``--clock wall`` for
elapsed time.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from he import channel, keygen, transcript
from he.ciphertext import CiphertextLabel, CiphertextSum, SecretKeyEncryptor, seeded_c1
from he.context import HEContext
from he.decrypt import (
    DecryptionRequest,
    DecryptionShare,
    combine,
    decrypt_update,
    gen_decryption_share,
    pairwise_masks,
)
from he.encoding import UpdateEncoder, weight_scale_for
from he.identity import SigningKey
from he.modarith import addmod, inverse, mulmod, submod
from he.params import preset
from he.roster import DEFAULT_MAX_ATTEMPTS, Roster
from he.threshold import sum_shares

ARRAY_FRACTIONS = (0.6, 0.3, 0.1)  # an update is several arrays, like a model's layers
DEFAULT_CONFIGS = ("10:10:6:compact", "10:10:6:precise", "100:16:11:compact", "128:16:11:compact")
FLOWER_RUN = 1
MB, GB = 1e6, 1e9
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
now = CLOCKS["cpu"]  # set by --clock


@dataclass(frozen=True)
class Config:
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


# -- helpers -----------------------------------------------------------------------------------------
class Clock:
    """Seconds (``--clock``) per named step and per party; reports medians over the parties."""

    def __init__(self) -> None:
        self.parties: list[dict[str, float]] = []
        self._current: dict[str, float] = {}
        self._started = 0.0

    def start_party(self) -> None:
        self._current, self._started = {}, now()

    def end_party(self) -> None:
        self._current["total"] = now() - self._started
        self.parties.append(self._current)

    def time(self, name: str, fn, *args, **kwargs):
        start = now()
        result = fn(*args, **kwargs)
        self._current[name] = self._current.get(name, 0.0) + now() - start
        return result

    def median(self, *names: str) -> float:
        return float(np.median([sum(p.get(name, 0.0) for name in names) for p in self.parties]))


def median_time(repeats: int, fn, *args) -> tuple[float, object]:
    """Median seconds (``--clock``) of ``repeats`` calls, and the last result."""
    seconds = []
    for _ in range(repeats):
        start = now()
        result = fn(*args)
        seconds.append(now() - start)
    return float(np.median(seconds)), result


def progress(message: str) -> None:
    print(f"[bench_he {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def spread(n: int, count: int) -> list[int]:
    """``count`` party indices spread evenly over 1..n (all of them when count >= n)."""
    if count >= n:
        return list(range(1, n + 1))
    return sorted({round(float(x)) for x in np.linspace(1, n, count)})


def deal_context(run_id: bytes, dealer: int, recipient: int) -> bytes:
    """As ``client.keyholder.KeyHolder._deal_context``."""
    return run_id + f"|deal|from={dealer}|to={recipient}".encode()


# -- set-up ------------------------------------------------------------------------------------------
@dataclass
class Federation:
    """One configuration's set-up: roster, hellos, channel keys, and the distinct dealers' shares."""

    config: Config
    ctx: HEContext
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


def build_federation(config: Config, ctx: HEContext, distinct: int, max_attempts: int) -> Federation:
    n, k, t = config.hospitals, config.committee, config.threshold
    signers = {f"hospital-{i}": SigningKey.generate() for i in range(1, n + 1)}
    roster = Roster.create(
        f"bench-{n}-{k}-{t}",
        {name: key.public_bytes() for name, key in signers.items()},
        threshold=t,
        preset=config.preset,
        committee_size=k,
        max_attempts=max_attempts,
    )
    channels = {i: channel.ChannelKeyPair.generate() for i in range(1, n + 1)}
    hellos = {
        i: transcript.sign_hello(
            signers[f"hospital-{i}"],
            roster,
            f"hospital-{i}",
            FLOWER_RUN,
            keygen.fresh_contribution(),
            channels[i].public_bytes(),
        )
        for i in range(1, n + 1)
    }
    setup = transcript.verify_hellos(roster, FLOWER_RUN, hellos)
    committee = list(roster.quorum.committee)
    dealers = spread(n, distinct)

    clock = Clock()
    secrets, own, sealed_by = {}, {}, {}
    for dealer in dealers:
        clock.start_party()
        secret = clock.time("gen_secret", keygen.gen_secret, ctx)
        shares = clock.time("shamir", keygen.deal_secret_shares, ctx, secret, t, committee)
        sealed = {}
        for keyholder, share in shares.items():
            if keyholder == dealer:  # a keyholder keeps its own share, expanded, unsealed
                own[dealer] = clock.time("shamir", share.expand, ctx)
                continue
            frame = clock.time("frame", share.to_bytes, ctx)
            sealed[keyholder] = clock.time(
                "seal",
                channel.seal,
                channels[dealer],
                setup.channel_keys[keyholder],
                frame,
                deal_context(setup.run_id, dealer, keyholder),
            )
        clock.time(
            "sign", transcript.sign_dealing, signers[f"hospital-{dealer}"], setup.run_id, dealer, sealed
        )
        clock.end_party()
        secrets[dealer], sealed_by[dealer] = secret, sealed

    # Every keyholder opens what the distinct dealers sent it: signature check, AEAD, parse, and
    # expansion of a seeded share (the expanded residues are what it keeps for decryptions).
    statements = {
        d: transcript.sign_dealing(signers[f"hospital-{d}"], setup.run_id, d, sealed_by[d]) for d in dealers
    }
    dealt: dict[int, dict[int, np.ndarray]] = {d: {} for d in dealers}
    receive: dict[str, list[float]] = {"seed": [], "full": []}
    for keyholder in committee:
        seconds, kinds = [], set()
        for dealer in dealers:
            if dealer == keyholder:
                dealt[dealer][keyholder] = own[dealer]
                continue
            start = now()
            blob = sealed_by[dealer][keyholder]
            transcript.verify_dealing(roster, setup.run_id, dealer, keyholder, statements[dealer], blob)
            frame = channel.open_sealed(
                channels[keyholder],
                setup.channel_keys[dealer],
                blob,
                deal_context(setup.run_id, dealer, keyholder),
            )
            share = keygen.DealtShare.from_bytes(ctx, frame, f"hospital-{dealer}")
            dealt[dealer][keyholder] = share.expand(ctx)
            seconds.append(now() - start)
            kinds.add("seed" if share.seed is not None else "full")
        if len(kinds) == 1 and seconds:
            receive[kinds.pop()].append(float(np.mean(seconds)) * (n - 1))

    # Exact byte counts for all n dealers: what each keyholder is sent has one size (seed or full).
    size_to = {k: len(next(sealed_by[d][k] for d in dealers if d != k)) for k in committee}
    example = next(iter(sealed_by[dealers[0]].values()))
    hello_bytes = sum(len(h) for h in hellos.values())
    up = down = 0
    up += hello_bytes  # hello replies
    down += n * hello_bytes  # every hospital gets every hello with the deal request
    per_dealer = []
    for dealer in range(1, n + 1):
        recipients = [kh for kh in committee if kh != dealer]
        statement = transcript.sign_dealing(
            signers[f"hospital-{dealer}"], setup.run_id, dealer, dict.fromkeys(recipients, example)
        )
        per_dealer.append(sum(size_to[k] for k in recipients))
        up += per_dealer[-1] + len(statement)
        down += per_dealer[-1] + len(recipients) * len(statement)  # share + statement to each keyholder
    full = max(size_to.values())
    seeded = sum(1 for k in committee if size_to[k] < full)

    timed = len(dealers)
    rows = {
        "dealing per hospital [s]": clock.median("total"),
        "  of which gen_secret / Shamir / frame+seal / sign [s]": " / ".join(
            f"{clock.median(*names):.3f}"
            for names in (("gen_secret",), ("shamir",), ("frame", "seal"), ("sign",))
        ),
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
    progress(f"{config.column}: set-up done ({timed} dealers timed)")
    return Federation(
        config, ctx, roster, setup.run_id, channels, setup.channel_keys, dealers, secrets, dealt, rows
    )


# -- one round ---------------------------------------------------------------------------------------
def make_updates(num_values: int, dealers: list[int], seed: int):
    """Each distinct dealer's update (arrays uniform in [-0.9, 0.9]) and example count."""
    rng = np.random.default_rng(seed)
    sizes = [int(num_values * f) for f in ARRAY_FRACTIONS]
    sizes[0] += num_values - sum(sizes)
    updates = {d: [rng.uniform(-0.9, 0.9, s) for s in sizes] for d in dealers}
    drawn = rng.integers(500, 5001, len(dealers))
    counts = {d: int(c) for d, c in zip(dealers, drawn, strict=True)}
    return updates, counts, rng


def measured_noise_bits(ctx: HEContext, aggregate_c0: np.ndarray, shares: list[DecryptionShare]) -> float:
    """log2 of the largest decrypted noise coefficient, read off the noise primes (not timed)."""
    moduli = ctx.data_moduli
    total = aggregate_c0
    for share in shares:
        total = addmod(total, share.polys, moduli)
    rows = ctx.intt(total)[:, ctx.num_payload :]
    qs = [int(q) for q in ctx.noise_moduli.tolist()]
    # mixed radix: noise = d0 + d1*q0 + d2*q0*q1 + ..., then the signed magnitude in float64
    digits, value, radix_f = [], np.zeros(rows.shape[::2], dtype=np.float64), 1.0
    for k, qk in enumerate(qs):
        residue, radix = rows[:, k], 1
        for i in range(k):
            residue = submod(residue, mulmod(digits[i] % np.uint64(qk), np.uint64(radix % qk), qk), qk)
            radix *= qs[i]
        digit = mulmod(residue, np.uint64(inverse(radix % qk, qk)), qk) if k else residue
        digits.append(digit)
        value += digit.astype(np.float64) * radix_f
        radix_f *= float(qk)
    magnitude = np.minimum(value, radix_f - value)
    return float(np.log2(max(float(magnitude.max()), 1.0)))


class RecordingEncoder:
    """Wraps a ``SecretKeyEncryptor``'s encoder to keep the packed fields it encrypted (the bench
    checks that decryption returns exactly their sum)."""

    def __init__(self, encoder: UpdateEncoder) -> None:
        self._encoder = encoder
        self.fields: np.ndarray | None = None

    def __getattr__(self, name: str):
        return getattr(self._encoder, name)

    def encode(self, *args, **kwargs):
        encoded = self._encoder.encode(*args, **kwargs)
        self.fields = encoded.fields.copy()
        return encoded


def distinct_error(ctx: HEContext, n: int, num_values: int, seed: int) -> float:
    """Max abs error of the decoded average of n *distinct* updates, encoding and decoding only.

    Decryption returns the exact sum of the encoded fields (checked on the encrypted path), so
    this is the error the encrypted pipeline has with n distinct hospitals, whose stochastic
    rounding errors are independent (unlike the repeated updates of the encrypted path).
    """
    encoder = UpdateEncoder(ctx.params, ctx.num_payload)
    rng = np.random.default_rng(seed)
    counts = [int(c) for c in rng.integers(500, 5001, n)]
    total_examples = sum(counts)
    scale = weight_scale_for(total_examples, ctx.params)
    sizes = [int(num_values * f) for f in ARRAY_FRACTIONS]
    sizes[0] += num_values - sum(sizes)
    field_sum, want, layout = None, [np.zeros(s) for s in sizes], None
    for count in counts:
        arrays = [rng.uniform(-0.9, 0.9, s) for s in sizes]
        encoded = encoder.encode(arrays, count, rng, None, scale)
        field_sum = encoded.fields if field_sum is None else field_sum + encoded.fields
        layout = encoded.layout
        for acc, array in zip(want, arrays, strict=True):
            acc += count / total_examples * array
    got, total = encoder.decode(field_sum, layout, n)
    if total != total_examples:
        raise AssertionError(f"decoded {total} examples, expected {total_examples}")
    return max(float(np.max(np.abs(g - w))) for g, w in zip(got, want, strict=True))


def error_bound(params, counts: list[int], weight_scale: int) -> float:
    """Worst-case quantization error of the decoded average, ``2 n clip / (H W)`` (he.encoding;
    as tests/he/conftest.average_tolerance)."""
    half_range = (1 << (params.value_bits - 1)) - 1
    weight = sum(counts) / weight_scale
    return 2 * len(counts) * params.clip / (half_range * weight)


def run_round(
    fed: Federation, num_values: int, seed: int, max_attempts: int, repeats: int
) -> dict[str, object]:
    ctx, config = fed.ctx, fed.config
    params = ctx.params
    n = config.hospitals
    updates, counts, rng = make_updates(num_values, fed.dealers, seed)
    label = CiphertextLabel(fed.roster.federation_id, fed.run_id, "train", 1)
    contributors = list(range(1, n + 1))
    weights = [counts[fed.source(i)] for i in contributors]
    weight_scale = weight_scale_for(sum(weights), params)  # S: the server's steady state

    frames, encrypt_s, encoded = {}, [], {}
    for dealer in fed.dealers:
        encryptor = SecretKeyEncryptor(ctx, fed.secrets[dealer])
        encryptor.encoder = RecordingEncoder(encryptor.encoder)  # keeps the packed plaintext fields
        start = now()
        encrypted, _ = encryptor.encrypt(updates[dealer], counts[dealer], label, None, weight_scale)
        frames[dealer] = encrypted.to_bytes(ctx)
        encrypt_s.append(now() - start)
        encoded[dealer] = encryptor.encoder.fields
    num_ciphertexts = len(encrypted.c0)
    progress(f"{config.column}, {num_values:,} values: {len(frames)} updates encrypted")

    def aggregate_all():
        total = CiphertextSum(ctx, encrypted.layout)
        for party in contributors:
            total.add(party, frames[fed.source(party)])
        return total.result

    aggregate_s, aggregate = median_time(repeats, aggregate_all)
    upload_len = len(frames[fed.dealers[0]])
    frames.clear()

    size = fed.roster.quorum.min_decryption_set
    decryption_set = sorted(int(k) for k in rng.choice(fed.committee, size=size, replace=False))
    request = DecryptionRequest(label, 1, tuple(contributors), tuple(decryption_set), num_ciphertexts)
    smudging = params.smudging_bits(config.committee, max_attempts)
    clock, share_frames = Clock(), []
    for keyholder in decryption_set:
        clock.start_party()
        key_share = clock.time(
            "sum", sum_shares, [fed.dealt[fed.source(i)][keyholder] for i in contributors], ctx.data_moduli
        )
        c1 = clock.time("c1", seeded_c1, ctx, label, num_ciphertexts)

        def masks_for(me: int = keyholder):
            keys = {
                other: channel.mask_key(fed.channels[me], fed.channel_keys[other], fed.run_id)
                for other in decryption_set
                if other != me
            }
            return pairwise_masks(ctx, me, keys, request)

        masks = clock.time("masks", masks_for)
        share = clock.time(
            "share", gen_decryption_share, ctx, request, keyholder, c1, key_share, masks, smudging
        )
        share_frames.append(clock.time("serialize", share.to_bytes, ctx))
        clock.end_party()
    progress(f"{config.column}, {num_values:,} values: {size} decryption shares")

    noise_bits = params.decryption_noise_bits(config.committee, max_attempts)

    def combine_all():
        shares = [
            DecryptionShare.from_bytes(ctx, blob, f"keyholder {k}")
            for k, blob in zip(decryption_set, share_frames, strict=True)
        ]
        fields = combine(ctx, aggregate, shares, request, noise_bits)
        return shares, fields, decrypt_update(ctx, aggregate, fields)

    combine_s, (shares, fields, (arrays, total_examples)) = median_time(repeats, combine_all)
    plain_sum = sum(encoded[fed.source(i)] for i in contributors)  # exact: fields never carry
    exact = bool(np.array_equal(fields, plain_sum))

    weight = float(sum(weights))
    want = []
    for index in range(len(ARRAY_FRACTIONS)):
        acc = np.zeros_like(updates[fed.dealers[0]][index])
        for dealer in fed.dealers:
            multiplicity = sum(1 for i in contributors if fed.source(i) == dealer)
            acc += multiplicity * counts[dealer] * updates[dealer][index]
        want.append(acc / weight)
    error = max(float(np.max(np.abs(a - w))) for a, w in zip(arrays, want, strict=True))
    measured = measured_noise_bits(ctx, aggregate.c0, shares)
    if total_examples != sum(weights):  # counts travel exactly
        raise AssertionError(f"decoded {total_examples} examples, expected {sum(weights)}")

    per = len(decryption_set)
    return {
        "values per ciphertext": params.values_per_ciphertext,
        "ciphertexts per update": num_ciphertexts,
        "bytes/value uploaded (one update frame)": upload_len / num_values,
        "bytes/value of one decryption share": len(share_frames[0]) / num_values,
        "encrypt per hospital [s]": float(np.median(encrypt_s)),
        "aggregate of n updates [s]": aggregate_s,
        "decryption set |T|": per,
        "partial decrypt per keyholder [s]": clock.median("total"),
        "  of which sum of |U| dealt shares [s]": clock.median("sum"),
        "  of which c1 from the label [s]": clock.median("c1"),
        "  of which mask keys + masks [s]": clock.median("masks"),
        "  of which share (mul, flooding) + frame [s]": clock.median("share", "serialize"),
        "combine + decode [s]": combine_s,
        "decrypted field sums = plaintext sums of the encoded fields": "exact" if exact else "WRONG",
        "max abs error vs plaintext average": error,
        "  error bound (quantization, closed form)": error_bound(params, weights, weight_scale),
        "max abs error, n distinct updates (encoding only)": distinct_error(ctx, n, num_values, seed + 1),
        "total examples, decoded / true": f"{total_examples} / {sum(weights)}",
        "smudging bits": smudging,
        "decryption noise bits (bound / measured max)": f"{noise_bits} / {measured:.1f}",
        "noise room bits (noise primes)": params.noise_modulus_bits,
    }


# -- targets and tables ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    text: str
    limit: float
    applies: object  # (config, num_values) -> bool


TARGETS = {
    "bytes/value uploaded (one update frame)": Target(
        "≤ 5 (compact, 1M values)", 5.0, lambda c, v: c.preset == "compact" and v >= 1_000_000
    ),
    "encrypt per hospital [s]": Target("≤ 0.5 (compact)", 0.5, lambda c, v: c.preset == "compact"),
    "aggregate of n updates [s]": Target(
        "≤ 3 at n=100 (compact)", 3.0, lambda c, v: c.preset == "compact" and c.hospitals == 100
    ),
    "partial decrypt per keyholder [s]": Target(
        "≤ 0.5 at |T|=14 (compact)",
        0.5,
        lambda c, v: c.preset == "compact" and math.ceil((c.committee + c.threshold) / 2) == 14,
    ),
    "combine + decode [s]": Target("≤ 1 (compact)", 1.0, lambda c, v: c.preset == "compact"),
    "set-up through the server, up + down [GB]": Target("≤ 1 at n=128", 1.0, lambda c, v: c.hospitals == 128),
}


def fmt(value) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.2e}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.3g}"
    return str(value)


def escape(text: str) -> str:
    """A markdown table cell: ``|`` (as in |T|) must not end the cell."""
    return text.replace("|", "\\|")


def cell(key: str, value, config: Config, num_values: int) -> str:
    text = fmt(value)
    target = TARGETS.get(key)
    if target is not None and isinstance(value, float) and target.applies(config, num_values):
        text += " ✓" if value <= target.limit else " ✗"
    return text


def print_table(title: str, notes: list[str], columns: list[tuple[Config, dict]], num_values: int) -> None:
    print(f"\n### {title}\n")
    for note in notes:
        print(f"{note}  ")
    print()
    print("| metric | " + " | ".join(c.column for c, _ in columns) + " | target |")
    print("|---|" + "---|" * (len(columns) + 1))
    for key in columns[0][1]:
        cells = [cell(key, rows.get(key, "–"), config, num_values) for config, rows in columns]
        target = TARGETS[key].text if key in TARGETS else ""
        name = "↳ " + key.strip() if key.startswith("  ") else key
        print(f"| {escape(name)} | " + " | ".join(cells) + f" | {escape(target)} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        type=Config.parse,
        action="append",
        metavar="N:K:T:PRESET",
        help=f"hospitals:committee:threshold:preset, repeatable (default: {' '.join(DEFAULT_CONFIGS)})",
    )
    parser.add_argument("--values", type=int, nargs="+", default=None, help="update sizes (100000 1000000)")
    parser.add_argument(
        "--distinct",
        type=int,
        default=10,
        help="hospitals that really deal and encrypt; the others reuse their updates (default 10)",
    )
    parser.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: this process's CPU seconds (user + system; every step is single-threaded, so on an "
        "idle machine this is the wall time, and other load does not inflate it); wall: elapsed time",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of the server's aggregate and combine (median)"
    )
    parser.add_argument("--quick", action="store_true", help="10:10:6:compact and 100k values only")
    args = parser.parse_args(argv)
    if args.quick:
        args.config = args.config or [Config.parse("10:10:6:compact")]
        args.values = args.values or [100_000]
    args.config = args.config or [Config.parse(c) for c in DEFAULT_CONFIGS]
    args.values = args.values or [100_000, 1_000_000]
    if args.distinct < 2:
        parser.error("--distinct must be at least 2")
    return args


def main(argv: list[str] | None = None) -> None:
    global now
    args = parse_args(argv)
    now = CLOCKS[args.clock]
    started = time.perf_counter()
    contexts: dict[str, HEContext] = {}
    setups: list[tuple[Config, dict]] = []
    rounds: dict[int, list[tuple[Config, dict]]] = {v: [] for v in args.values}
    for config in args.config:
        if config.preset not in contexts:
            contexts[config.preset] = HEContext(preset(config.preset))
        ctx = contexts[config.preset]
        ctx.params.check_federation(config.committee, args.max_attempts)
        ctx.params.check_contributors(config.hospitals)
        fed = build_federation(config, ctx, args.distinct, args.max_attempts)
        setups.append((config, fed.rows))
        for num_values in args.values:
            rounds[num_values].append(
                (config, run_round(fed, num_values, args.seed, args.max_attempts, args.repeats))
            )
        del fed

    clock = "process CPU seconds" if args.clock == "cpu" else "wall-clock seconds"
    print(f"\n## Protocol v2 benchmark (N={ctx.n}, {os.cpu_count()} CPUs, one process, {clock})")
    distinct_note = (
        f"Dealing timed for {args.distinct} dealers per configuration (median; every hospital's dealing "
        "is the same work); receiving (check, open, parse, expand a seed) timed on every keyholder for "
        "those dealers, scaled to n - 1 dealers, median over the keyholders sent seeds / full shares. "
        "Bytes count every dealer's sealed shares to every keyholder, up and down, plus the hellos "
        "(Flower framing excluded)."
    )
    print_table("Set-up (per run)", [distinct_note], setups, 0)
    round_note = (
        f"Configurations with n > {args.distinct}: {args.distinct} distinct hospitals encrypt; their frames "
        "are re-added under the other hospitals' ids (each parsed and validated), and [s_U]_k sums the "
        "matching dealt shares, so timings are those of n updates and the decryption is exact; the "
        "average is over repeated updates, whose rounding errors add up coherently (the error is up "
        "to sqrt(n / distinct) times that of n distinct updates). Weight scale S = ceil(2 x the round's "
        "total example count / max_parties) (the server's steady state); the 'n distinct updates' "
        "error row encodes and decodes n distinct updates without encryption (decryption is exact, "
        "as the row above it checks). "
        "Per-party steps: median over the parties that ran them "
        f"(breakdown rows: medians of each part); server steps: median of {args.repeats} runs. "
        "✓/✗: target met or missed (compact preset only)."
    )
    for num_values, columns in rounds.items():
        print_table(f"One round, {num_values:,} values per update", [round_note], columns, num_values)
    progress(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

"""Benchmark of the threshold-HE aggregation protocol: wire sizes, step timings and accuracy.

One simulated federation per preset, in one process: every hospital's and the server's work is
timed separately with ``time.perf_counter`` and reported per party where the step is per party
(averaged over the parties that run it). Messages go through their byte serialization, so the
timings include framing and validation. Usage::

    python -m experiments.bench_he
    python -m experiments.bench_he --values 100000 --parties 5 --threshold 3 --presets compact
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from he import keygen
from he.ciphertext import CiphertextSum, UpdateEncryptor
from he.context import HEContext
from he.decrypt import DecryptionShare, combine, decrypt_update, gen_decryption_share
from he.params import preset
from he.threshold import combine_received_shares

ARRAY_FRACTIONS = (0.6, 0.3, 0.1)  # an update is several arrays, like a model's layers


@dataclass
class KeySetup:
    """The keys of a simulated federation and the time each key-generation step took."""

    public_key: np.ndarray
    decryption_keys: dict[int, np.ndarray]  # party -> what it multiplies c1 by
    key_share_s: float
    collective_key_s: float
    dealing_s: float | None


def timed(fn: Callable, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def setup_keys(ctx: HEContext, n: int, t: int) -> KeySetup:
    """Collective key generation (CKG) and, for t < n, Shamir dealing; all through bytes."""
    contributions = [keygen.fresh_contribution() for _ in range(n)]
    # per party: derive the CRS from the contributions, draw s_i, publish p0_i
    per_party, secrets, share_bytes = [], [], []
    for _ in range(n):
        start = time.perf_counter()
        crp = keygen.sample_crp(ctx, keygen.crs_seed(contributions))
        secret = keygen.gen_secret(ctx)
        share_bytes.append(keygen.gen_public_key_share(ctx, secret, crp).to_bytes(ctx))
        per_party.append(time.perf_counter() - start)
        secrets.append(secret)
    # server: parse, validate and sum the key shares
    start = time.perf_counter()
    shares = [keygen.PublicKeyShare.from_bytes(ctx, b, f"h{k}") for k, b in enumerate(share_bytes)]
    public_key = keygen.gen_public_key(ctx, crp, keygen.aggregate_public_key_shares(ctx, shares))
    collective = time.perf_counter() - start
    if t == n:
        keys = {j: secrets[j - 1].data_level for j in range(1, n + 1)}
        return KeySetup(public_key, keys, float(np.mean(per_party)), collective, None)
    # per party: deal n shares (serialized for the channel), then sum the n received ones
    points = list(range(1, n + 1))
    outgoing, dealing = [], [0.0] * n
    for i, secret in enumerate(secrets):
        start = time.perf_counter()
        dealt = keygen.deal_secret_shares(ctx, secret, t, points)
        outgoing.append({j: keygen.secret_share_to_bytes(ctx, s) for j, s in dealt.items()})
        dealing[i] += time.perf_counter() - start
    keys = {}
    for j in points:
        start = time.perf_counter()
        received = [keygen.secret_share_from_bytes(ctx, out[j], f"h{i}") for i, out in enumerate(outgoing)]
        keys[j] = combine_received_shares(received, ctx.data_moduli)
        dealing[j - 1] += time.perf_counter() - start
    return KeySetup(public_key, keys, float(np.mean(per_party)), collective, float(np.mean(dealing)))


def run_round(ctx: HEContext, keys: KeySetup, n: int, t: int, num_values: int, seed: int) -> dict:
    """One aggregation round of ``num_values``-value updates from n hospitals."""
    rng = np.random.default_rng(seed)
    sizes = [int(num_values * f) for f in ARRAY_FRACTIONS]
    sizes[0] += num_values - sum(sizes)
    updates = [[rng.uniform(-1, 1, s) * 0.9 for s in sizes] for _ in range(n)]
    high = min(ctx.params.max_samples_per_party, 5000)
    counts = [int(c) for c in rng.integers(max(1, high // 10), high + 1, n)]

    encryptor = UpdateEncryptor(ctx, keys.public_key)
    blobs, encrypt_times = [], []
    for update, count in zip(updates, counts, strict=True):
        start = time.perf_counter()
        encrypted, _ = encryptor.encrypt(update, count)
        blobs.append(encrypted.to_bytes(ctx))
        encrypt_times.append(time.perf_counter() - start)

    start = time.perf_counter()
    total = CiphertextSum(ctx)
    for k, blob in enumerate(blobs):
        total.add(f"hospital-{k + 1}", blob)
    aggregate = total.result
    aggregate_s = time.perf_counter() - start
    del blobs[1:]

    answering = sorted(rng.choice(np.arange(1, n + 1), size=t, replace=False).tolist())
    smudging = ctx.params.smudging_bits(n, t)
    share_bytes, partial_times = [], []
    for j in answering:
        start = time.perf_counter()
        share = gen_decryption_share(ctx, aggregate, keys.decryption_keys[j], j, 1, smudging)
        share_bytes.append(share.to_bytes(ctx))
        partial_times.append(time.perf_counter() - start)

    start = time.perf_counter()
    shares = [
        DecryptionShare.from_bytes(ctx, b, f"h{j}") for j, b in zip(answering, share_bytes, strict=True)
    ]
    arrays, total_examples = decrypt_update(ctx, aggregate, combine(ctx, aggregate, shares, n, t))
    combine_s = time.perf_counter() - start

    weight = sum(counts)
    want = [sum(c * u[i] for c, u in zip(counts, updates, strict=True)) / weight for i in range(len(sizes))]
    error = max(float(np.max(np.abs(a - w))) for a, w in zip(arrays, want, strict=True))
    return {
        "ciphertexts per update": len(aggregate.polys),
        "bytes per value uploaded": len(blobs[0]) / num_values,
        "bytes per decryption share per value": len(share_bytes[0]) / num_values,
        "encrypt (per party) [s]": float(np.mean(encrypt_times)),
        f"aggregate of {n} (server) [s]": aggregate_s,
        "partial decrypt (per party) [s]": float(np.mean(partial_times)),
        "combine+decode (server) [s]": combine_s,
        "max abs error of average": error,
        "total examples: decoded / true": f"{total_examples:.6f} / {weight}",
    }


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3e}" if value and (abs(value) < 1e-3 or abs(value) >= 1e5) else f"{value:.4g}"
    return str(value)


def print_table(title: str, rows: dict) -> None:
    print(f"\n### {title}\n")
    print("| metric | value |")
    print("|---|---|")
    for key, value in rows.items():
        print(f"| {key} | {fmt(value)} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--parties", type=int, default=10)
    parser.add_argument("--threshold", type=int, default=None, help="default: majority, n//2 + 1")
    parser.add_argument("--presets", nargs="+", default=["precise", "compact"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n = args.parties
    t = args.threshold if args.threshold is not None else n // 2 + 1

    for name in args.presets:
        params = preset(name)
        params.check_federation(n, t)
        ctx = HEContext(params)
        keys = setup_keys(ctx, n, t)
        for num_values in args.values:
            result = run_round(ctx, keys, n, t, num_values, args.seed)
            dealing = "n/a (n-of-n)" if keys.dealing_s is None else keys.dealing_s
            rows = {
                "values per ciphertext": params.values_per_ciphertext,
                "ciphertexts per update": result.pop("ciphertexts per update"),
                "bytes per value uploaded": result.pop("bytes per value uploaded"),
                "bytes per decryption share per value": result.pop("bytes per decryption share per value"),
                "key share (per party) [s]": keys.key_share_s,
                "collective key (server) [s]": keys.collective_key_s,
                "Shamir dealing (per party) [s]": dealing,
                **result,
                "smudging_bits": params.smudging_bits(n, t),
                "ciphertext_noise_bits": params.ciphertext_noise_bits,
                "noise modulus bits": params.noise_modulus_bits,
            }
            print_table(f"{name}: {num_values:,} values, {t}-of-{n}", rows)


if __name__ == "__main__":
    main()

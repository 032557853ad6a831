"""The benchmark's round: encrypt, aggregate, decryption shares, the share check, combine, and the
accuracy checks.

Keyholders make their shares and check shares with ``he.party.decryption_share``, the function
``client.keyholder`` calls; the server's steps are the ``he`` calls the strategy makes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from experiments.bench_he_setup import Clock, Federation, progress
from he import party, share_check, wire
from he.ciphertext import CiphertextLabel, CiphertextSum, SecretKeyEncryptor, seeded_c1
from he.context import HEContext
from he.decrypt import DecryptionRequest, DecryptionShare, combine, decrypt_update, measured_noise_bits
from he.encoding import UpdateEncoder, decoding_error, weight_scale_for
from he.threshold import sum_shares

ARRAY_FRACTIONS = (0.6, 0.3, 0.1)  # an update is several arrays, like a model's layers


def array_sizes(num_values: int) -> list[int]:
    """The sizes of an update's arrays (``ARRAY_FRACTIONS`` of ``num_values``)."""
    sizes = [int(num_values * f) for f in ARRAY_FRACTIONS]
    sizes[0] += num_values - sum(sizes)
    return sizes


def make_updates(num_values: int, dealers: list[int], seed: int):
    """Each distinct dealer's update (arrays uniform in [-0.9, 0.9]) and example count."""
    rng = np.random.default_rng(seed)
    sizes = array_sizes(num_values)
    updates = {d: [rng.uniform(-0.9, 0.9, s) for s in sizes] for d in dealers}
    drawn = rng.integers(500, 5001, len(dealers))
    counts = {d: int(c) for d, c in zip(dealers, drawn, strict=True)}
    return updates, counts, rng


def median_time(now: Callable[[], float], repeats: int, fn, *args) -> tuple[float, object]:
    """Median seconds (of ``now``) of ``repeats`` calls, and the last result."""
    seconds = []
    for _ in range(repeats):
        start = now()
        result = fn(*args)
        seconds.append(now() - start)
    return float(np.median(seconds)), result


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
    sizes = array_sizes(num_values)
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


def error_bound(ctx: HEContext, aggregate, total_examples: int) -> float:
    """Worst-case error of the decoded average: ``he.encoding.decoding_error``, doubled for the
    float64 conversion of the int64 field sums (as ``tests/he/conftest.average_tolerance``)."""
    return 2 * decoding_error(ctx.params, aggregate.layout, aggregate.contributors, total_examples)


def run_round(
    fed: Federation,
    num_values: int,
    seed: int,
    max_attempts: int,
    repeats: int,
    now: Callable[[], float],
) -> dict[str, object]:
    """One round of ``num_values`` values per update: timings, sizes, exactness and accuracy."""
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
        encryptor = SecretKeyEncryptor(fed.frame_ctx, fed.secrets[dealer])
        encryptor.encoder = RecordingEncoder(encryptor.encoder)  # keeps the packed plaintext fields
        start = now()
        encrypted, _ = encryptor.encrypt(updates[dealer], counts[dealer], label, None, weight_scale)
        frames[dealer] = encrypted.to_bytes(fed.frame_ctx)
        encrypt_s.append(now() - start)
        encoded[dealer] = encryptor.encoder.fields
    progress(f"{config.column}, {num_values:,} values: {len(frames)} updates encrypted")

    def aggregate_all():
        total = CiphertextSum(fed.frame_ctx, encrypted.layout)
        for contributor in contributors:
            total.add(contributor, frames[fed.source(contributor)])
        return total.result

    aggregate_s, aggregate = median_time(now, repeats, aggregate_all)
    upload_len = len(frames[fed.dealers[0]])
    frames.clear()

    size = fed.roster.quorum.min_decryption_set
    decryption_set = sorted(int(k) for k in rng.choice(fed.committee, size=size, replace=False))
    request = DecryptionRequest(
        label,
        1,
        tuple(contributors),
        tuple(decryption_set),
        encrypted.num_ciphertexts,
        encrypted.coefficients,
    )
    smudging = params.smudging_bits(config.committee, max_attempts)
    clock, share_frames = Clock(now), []
    for keyholder in decryption_set:
        clock.start_party()
        dealt = [fed.dealt[fed.source(i)][keyholder] for i in contributors]
        share_frames.append(
            party.decryption_share(
                ctx,
                fed.frame_ctx,
                request,
                keyholder,
                fed.channels[keyholder],
                fed.channel_keys,
                fed.run_id,
                dealt,
                smudging,
                timed=clock.time,
            )
        )
        clock.end_party()
    progress(f"{config.column}, {num_values:,} values: {size} decryption shares")

    check = run_check(fed, request, decryption_set, contributors, share_frames, max_attempts, now)
    noise_bits = params.decryption_noise_bits(config.committee, max_attempts)

    def combine_all():
        shares = [
            DecryptionShare.from_bytes(fed.frame_ctx, blob, f"keyholder {k}")
            for k, blob in zip(decryption_set, share_frames, strict=True)
        ]
        fields = combine(ctx, aggregate, shares, request, noise_bits)
        return shares, fields, decrypt_update(ctx, aggregate, fields)

    combine_s, (shares, fields, (arrays, total_examples)) = median_time(now, repeats, combine_all)
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
    measured = measured_noise_bits(ctx, aggregate, shares)
    if total_examples != sum(weights):  # counts travel exactly
        raise AssertionError(f"decoded {total_examples} examples, expected {sum(weights)}")

    return {
        "values per ciphertext": params.values_per_ciphertext,
        "ciphertexts per update": aggregate.num_ciphertexts,
        "bytes/value uploaded (one update frame)": upload_len / num_values,
        "bytes/value of one decryption share": len(share_frames[0]) / num_values,
        "encrypt per hospital [s]": float(np.median(encrypt_s)),
        "aggregate of n updates [s]": aggregate_s,
        "decryption set |T|": len(decryption_set),
        "partial decrypt per keyholder [s]": clock.median("total"),
        "  of which sum of |U| dealt shares [s]": clock.median("sum"),
        "  of which c1 from the label [s]": clock.median("c1"),
        "  of which mask keys + masks [s]": clock.median("masks"),
        "  of which share (mul, flooding) + frame [s]": clock.median("share", "serialize"),
        **check,
        "combine + decode [s]": combine_s,
        "decrypted field sums = plaintext sums of the encoded fields": "exact" if exact else "WRONG",
        "max abs error vs plaintext average": error,
        "  error bound (quantization, closed form)": error_bound(ctx, aggregate, sum(weights)),
        "max abs error, n distinct updates (encoding only)": distinct_error(ctx, n, num_values, seed + 1),
        "total examples, decoded / true": f"{total_examples} / {sum(weights)}",
        "smudging bits": smudging,
        "decryption noise bits (bound / measured max)": f"{noise_bits} / {measured:.1f}",
        "noise room bits (noise primes)": params.noise_modulus_bits,
    }


def run_check(
    fed: Federation, request, decryption_set, contributors, share_frames, max_attempts: int, now
) -> dict:
    """The share check of one decryption (``he.share_check``): the server's seed and check
    polynomial, each keyholder's check share, the keyholder's re-derivation before it opens, and
    the server's verification of the honest ``share_frames`` (it raises if they fail); timings and
    bytes."""
    ctx, frame_ctx, params = fed.ctx, fed.frame_ctx, fed.ctx.params
    budget = share_check.check_budget(params, fed.config.committee, max_attempts, request.num_ciphertexts)
    a_pk = share_check.check_key_c1(ctx, fed.roster.federation_id, fed.run_id)
    keys = [share_check.public_key_share(ctx, fed.secrets[fed.source(i)], a_pk) for i in contributors]
    public_key = sum_shares(keys, ctx.data_moduli)  # P_U, as the server sums it
    c1 = seeded_c1(ctx, request.label, request.num_ciphertexts)

    def derive(seed):
        challenge = share_check.derive_challenge(ctx, seed, request.num_ciphertexts, budget.gain_bits)
        return challenge, share_check.check_polynomial(ctx, c1, a_pk, challenge)

    seed = bytes(range(32))
    derive_s, (challenge, poly) = median_time(now, 3, derive, seed)
    poly_frame = share_check.polynomial_to_bytes(frame_ctx, wire.Kind.CHECK_POLYNOMIAL, poly)
    clock, checks = Clock(now), []
    for keyholder in decryption_set:
        dealt = [fed.dealt[fed.source(i)][keyholder] for i in contributors]
        keys = (fed.channels[keyholder], fed.channel_keys, fed.run_id)
        clock.start_party()
        args = (ctx, frame_ctx, request, keyholder, *keys, dealt, budget.smudging_bits)
        checks.append(party.decryption_share(*args, timed=clock.time, check_poly=poly))
        clock.end_party()
    shares = [DecryptionShare.from_bytes(frame_ctx, blob, "keyholder") for blob in share_frames]
    opened = [DecryptionShare.from_bytes(frame_ctx, blob, "keyholder") for blob in checks]
    args = (ctx, request, shares, opened, public_key, challenge, budget)
    verify_s, _ = median_time(now, 3, share_check.verify, *args)  # raises if the honest check failed
    return {
        "share check: gain bits a (a cheater passes with 1/(2^a - 1))": budget.gain_bits,
        "share check: check polynomial down per keyholder [bytes]": len(poly_frame),
        "share check: commitment + check share up per keyholder [bytes]": 32 + len(checks[0]),
        "share check: seed -> check polynomial (server; each keyholder again to open) [s]": derive_s,
        "share check: check share per keyholder [s]": clock.median("total"),
        "share check: verify (server) [s]": verify_s,
    }

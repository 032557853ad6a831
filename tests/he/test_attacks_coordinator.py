"""A lying coordinator's attacks on decryption sets, requests, nonces and shares, run against the
real code: each one must fail.

Threat model (``he.roster``, ``he.decrypt``): a coordinator that lies, plus up to t_K - 1
colluding hospitals. Every attack below is written out as the coalition would run it, with a
docstring that says what the coalition knows and what it computes. A control runs the same
attack code where the defence is removed (the ``he`` level without the keyholders' per-round
rule, a reused nonce) and shows that it succeeds there, so every test can fail. The tests
establish:

1. the difference attack (U, then U minus v, by two decryption sets) fails: any two accepted
   sets share t_K keyholders, and the honest one refuses the second contributor set;
2. no polynomial can be injected: a share multiplies only the hashed ``c1``, a request carries
   none, and a colluding contributor's crafted ``c0`` reveals only the honest sum;
3. ``c1`` stays a nonce: a retry resends the same bytes, and fresh encryption noise follows
   SEAL's clipped normal;
4. the decryption noise is flooded and within its bound, and a tampered share is absorbed,
   refused on the noise bound, or (on a payload prime only) silently shifts one field.

The rational-mu coalition attack is in ``test_attacks_coalition.py``.

Notation: U contributors, ``s_U = sum_{i in U} s_i``, ``C0`` the server's sum of the uploaded
``c0``, ``c1`` the seeded polynomial of the round's label, ``M`` and ``E`` the sums of the
contributors' messages and encryption noises (``C0 + c1*s_U = M + E``; ``M = 0`` on the noise
primes), K the committee, t_K its threshold, C the colluding keyholders, T a decryption set,
``F_k`` keyholder k's flooding (uniform in ``[-2^B, 2^B)``).

Under the insecure ``TEST_PARAMS`` (N=4096) except the KeyHolder tests, which use the real
``precise`` preset (N=16384) with five hospitals.
"""

from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from check_polynomials import answer, check_seed
from he_federation import ATTACK_SIZES as SIZES
from he_federation import TEST_PARAMS, oracle_plaintext, random_updates, signed_integers, tampered, times

from client.keyholder import KeyHolder
from client.refusals import RefusedRequest
from common.simulated_federation import simulated_hospital_name, write_simulated_federation
from he import wire
from he.ciphertext import CiphertextSum, EncryptedUpdate, SecretKeyEncryptor, seeded_c1
from he.decrypt import DecryptionRequest, combine, pairwise_masks
from he.encoding import UpdateEncoder
from he.errors import RosterError, ShareMismatchError
from he.modarith import addmod, mul_scalar, mulmod, submod
from he.params import ENCRYPTION_NOISE_BOUND
from he.roster import Quorum, Roster
from he.share_check import polynomial_to_bytes
from he.threshold import lagrange_coefficient
from he.transcript import model_release

MODEL = model_release([np.zeros(20)])  # the starting model the keyholder tests' rounds release


# == 1. The difference attack ======================================================================
def valid_decryption_sets(quorum: Quorum) -> list[tuple[int, ...]]:
    """Every subset of the committee that the quorum rule accepts (exhaustive)."""
    accepted = []
    for size in range(1, len(quorum.committee) + 1):
        for chosen in itertools.combinations(quorum.committee, size):
            try:
                accepted.append(quorum.check_decryption_set(list(chosen)))
            except RosterError:
                assert size < quorum.min_decryption_set
    return accepted


@pytest.mark.parametrize("committee, threshold", [(5, 3), (10, 6)], ids=["3-of-5", "6-of-10"])
def test_any_two_decryption_sets_share_t_keyholders(committee, threshold):
    """The coordinator would ask T1 for U and T2 for U minus v, hoping T1 and T2 share no honest
    keyholder. Every pair of accepted sets shares >= t_K members, so at least one honest one."""
    quorum = Quorum(tuple(range(1, committee + 1)), threshold)
    accepted = valid_decryption_sets(quorum)
    assert {len(t) for t in accepted} == set(range(quorum.min_decryption_set, committee + 1))
    overlaps = [len(set(a) & set(b)) for a, b in itertools.product(accepted, repeat=2)]
    assert min(overlaps) == threshold  # tight: the rule is exactly strong enough
    # One member fewer and two sets may share fewer than t_K: possibly only colluders.
    smaller = list(itertools.combinations(quorum.committee, quorum.min_decryption_set - 1))
    assert min(len(set(a) & set(b)) for a, b in itertools.product(smaller, repeat=2)) < threshold


def test_difference_of_two_decryptions_reveals_one_update(federation5, test_ctx):
    """CONTROL at the ``he`` level, which enforces nothing per round: decrypting U and U minus v
    and subtracting gives v's update exactly. ``client.keyholder`` is what refuses the second."""
    fed = federation5
    updates, counts = random_updates(TEST_PARAMS, 5, SIZES, seed=7)
    label = fed.label(round_id=11)
    frames = {p: fed.encrypt(p, updates[p - 1], counts[p - 1], label) for p in fed.parties}

    def field_sums(contributors, keyholders):
        total = CiphertextSum(test_ctx, EncryptedUpdate.from_bytes(test_ctx, frames[1], "h1").layout)
        for p in contributors:
            total.add(p, frames[p])
        request = fed.request(total.result, contributors, keyholders, label)
        return combine(test_ctx, total.result, fed.shares(request), request, fed.noise_bits)

    everyone = field_sums([1, 2, 3, 4, 5], [1, 2, 3, 4])
    without_v = field_sums([1, 2, 3, 4], [2, 3, 4, 5])
    alone = field_sums([5], [1, 2, 3, 4, 5])  # what v's update decrypts to on its own
    difference = submod(everyone, without_v, test_ctx.payload_moduli)
    assert np.array_equal(difference, alone)


# -- KeyHolder-level federation (real preset) ------------------------------------------------------
@dataclass
class Hospitals:
    """Five hospitals after a real v2 set-up (committee of all five, 3-of-5, min_contributors 3).

    ``fresh()`` rebuilds every KeyHolder from the saved state, so no test sees another's requests.
    """

    roster: Roster
    states: dict[int, dict[str, bytes]]

    def fresh(self) -> dict[int, KeyHolder]:
        return {p: KeyHolder.from_state(dict(state)) for p, state in self.states.items()}


def set_up(directory: Path, n: int, threshold: int, min_contributors: int, flower_run: int = 1) -> Hospitals:
    roster = write_simulated_federation(
        directory, n, threshold=threshold, min_contributors=min_contributors, preset="precise"
    )
    holders = {
        p: KeyHolder(roster, name, flower_run, str(directory / f"{name}.key"))
        for p, name in ((p, simulated_hospital_name(p - 1)) for p in range(1, n + 1))
    }
    hellos = {p: h.hello() for p, h in holders.items()}
    dealings = {p: h.deal(hellos) for p, h in holders.items()}
    for k in roster.quorum.committee:
        sealed = {d: blobs[k] for d, (blobs, _, _) in dealings.items() if k in blobs}
        assert holders[k].receive_dealings(sealed, {d: s for d, (_, s, _) in dealings.items()}) == []
    return Hospitals(roster, {p: h.to_state() for p, h in holders.items()})


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory) -> Hospitals:
    return set_up(tmp_path_factory.mktemp("attacks"), 5, threshold=3, min_contributors=3)


def encrypt_round(holders: dict[int, KeyHolder], kind: str, round_id: int, seed: int):
    """Every hospital encrypts a random update; the signed contributions, by party."""
    rng = np.random.default_rng(seed)
    return {
        p: h.encrypt(kind, round_id, [rng.uniform(-1, 1, (20,))], 100 + p, release=MODEL)[1]
        for p, h in holders.items()
    }


def test_keyholder_that_answered_u_refuses_u_minus_v(hospitals):
    """The difference attack against real keyholders: T1 = {1,2,3,4} decrypts U = all five;
    T2 = {2,3,4,5} is asked for U minus hospital 5. With colluders {2, 3}, honest keyholder 4 is in
    both sets and refuses, in this and every further attempt of the round."""
    holders = hospitals.fresh()
    contributions = encrypt_round(holders, "train", 1, seed=1)
    for k in (1, 2, 3, 4):
        answer(holders[k], "train", 1, 1, [1, 2, 3, 4], contributions)
    without_v = {p: s for p, s in contributions.items() if p != 5}
    for attempt in (1, 2, 3):
        with pytest.raises(RefusedRequest, match="another contributor set"):
            answer(holders[4], "train", 1, attempt, [2, 3, 4, 5], without_v)
    answer(holders[5], "train", 1, 1, [2, 3, 4, 5], without_v)  # 5 answered nothing yet
    # ... but without 4 the coordinator cannot form a valid T2 that 5 would answer.
    with pytest.raises(RefusedRequest, match="quorum-intersection"):
        answer(holders[5], "train", 1, 2, [2, 3, 5], without_v)


# == 2. No injected polynomial =====================================================================
def test_share_multiplies_the_key_share_by_the_hashed_c1_only(federation10, test_ctx):
    """Oracle view of a real share: ``d_k - masks - lambda_k [s_U]_k * seeded_c1(label)`` is the
    flooding alone (one small integer polynomial, the same on every prime, below 2^B). With any
    other polynomial in place of the hashed c1 (the old attack's constant 2^58) it is not."""
    fed, moduli = federation10, test_ctx.data_moduli
    label, contributors, keyholders = fed.label(round_id=3), list(range(1, 11)), (1, 2, 3, 5, 6, 8, 9, 10)
    request = DecryptionRequest(label, 1, tuple(contributors), keyholders, 1, test_ctx.n)
    k = 5
    share = fed.share(k, request).polys[0]
    masks = pairwise_masks(test_ctx, k, fed.mask_keys(k, list(keyholders)), request)[0]
    weighted = times(fed.key_share(k, contributors), lagrange_coefficient(k, keyholders), moduli)

    def residual(c1: np.ndarray) -> list[int]:
        product = test_ctx.intt(mulmod(c1, weighted, moduli)[None])[0]
        return signed_integers(test_ctx, submod(submod(share, masks, moduli), product, moduli), rows="all")

    flooding = residual(seeded_c1(test_ctx, label, 1)[0])
    assert max(abs(f) for f in flooding) <= 2**fed.smudging_bits
    assert max(abs(f) for f in flooding) > 2 ** (fed.smudging_bits - 2)  # the flooding is there
    injected = test_ctx.ntt(np.full((1, len(moduli), test_ctx.n), 1 << 58, dtype=np.uint64))[0]
    other_label = seeded_c1(test_ctx, fed.label(round_id=4), 1)[0]
    for c1 in (injected, other_label):
        assert max(abs(f) for f in residual(c1)) > 2**200


def test_keyholder_opens_no_share_of_a_polynomial_the_coordinator_chose(hospitals):
    """The old attack (the server sends c1 = 2^58 and reads s off the share) has no entry point. A
    decryption request names kind, round, attempt, T and the signed contributions, and carries
    one polynomial, the share check's (``he.share_check``); the keyholder answers it with a
    SHA-256 commitment only, and opens its share of it only once the server's revealed seed
    derives that polynomial, so a chosen ``2^58`` is never opened."""
    parameters = inspect.signature(KeyHolder.partial_decrypt).parameters
    assert list(parameters) == [
        "self",
        "kind",
        "round_id",
        "attempt",
        "keyholders",
        "contributions",
        "check_polynomial",
    ]
    assert parameters["check_polynomial"].annotation == "bytes"
    holders = hospitals.fresh()
    contributions = encrypt_round(holders, "train", 1, seed=4)
    keyholder = holders[1]
    ctx = keyholder.ctx
    chosen = np.full((len(ctx.data_moduli), ctx.n), 1 << 58, dtype=np.uint64)
    frame = polynomial_to_bytes(keyholder.frame_context(), wire.Kind.CHECK_POLYNOMIAL, chosen)
    _share, commitment = keyholder.partial_decrypt("train", 1, 1, [1, 2, 3, 4], contributions, frame)
    assert len(commitment) == 32
    for seed in (check_seed("train", 1, 1), bytes(32)):
        with pytest.raises(RefusedRequest, match="does not derive the check polynomial"):
            keyholder.open_check("train", 1, 1, seed)


def test_colluding_contributor_crafted_c0_reveals_only_honest_sum(federation5, test_ctx):
    """A colluding contributor (hospital 5) uploads ``c0_5 = K*c1`` with K = 2^58 instead of an
    encryption. The keyholders never see c0, so their shares do not depend on it; the coalition
    knows ``c0_5`` and ``s_5``, and ``C0 + sum_k d_k - c0_5 - c1*s_5`` is exactly the honest
    parties' ``sum (m_i + e_i)`` plus the flooding: no term in any secret. The combiner refuses
    the round: the noise primes hold K*c1, far above the noise bound."""
    fed, moduli = federation5, test_ctx.data_moduli
    label, keyholders, colluder = fed.label(round_id=5), (1, 2, 3, 4), 5
    updates, counts = random_updates(TEST_PARAMS, 5, SIZES, seed=5)
    c1 = seeded_c1(test_ctx, label, 1)[0]
    honest = {
        p: EncryptedUpdate.from_bytes(test_ctx, fed.encrypt(p, updates[p - 1], counts[p - 1], label), "h")
        for p in (1, 2, 3, 4)
    }
    crafted = test_ctx.intt(mul_scalar(c1, 1 << 58, moduli)[None])[..., : honest[1].coefficients]
    total = CiphertextSum(test_ctx, honest[1].layout)
    for p, update in honest.items():
        total.add(p, update.to_bytes(test_ctx))
    total.add(colluder, EncryptedUpdate(honest[1].layout, crafted).to_bytes(test_ctx))
    aggregate = total.result
    request = fed.request(aggregate, fed.parties, keyholders, label)
    shares = fed.shares(request)
    output = aggregate.c0[0]
    for share in shares:
        output = addmod(output, share.polys[0], moduli)
    colluding = EncryptedUpdate(honest[1].layout, crafted)
    known = oracle_plaintext(test_ctx, colluding, fed.secrets[colluder - 1].residues, label)[0]
    honest_plain = np.zeros_like(output)  # oracle: sum over honest i of m_i + e_i = c0_i + c1*s_i
    for p, update in honest.items():
        plain = oracle_plaintext(test_ctx, update, fed.secrets[p - 1].residues, label)[0]
        honest_plain = addmod(honest_plain, plain, moduli)
    residual = submod(submod(output, known, moduli), honest_plain, moduli)
    flooding = signed_integers(test_ctx, residual, rows="all")
    assert max(abs(f) for f in flooding) <= len(keyholders) * 2**fed.smudging_bits
    with pytest.raises(ShareMismatchError, match="exceeds its bound"):
        combine(test_ctx, aggregate, shares, request, fed.noise_bits)


# == 3. Nonces =====================================================================================
def test_keyholder_resends_the_same_bytes_under_a_used_label(hospitals):
    """A retry of (kind, round) returns the stored bytes even for another update, so the
    coordinator never holds two c0 under one c1; an older round is refused."""
    holder = hospitals.fresh()[2]
    rng = np.random.default_rng(3)
    first = holder.encrypt("train", 4, [rng.uniform(-1, 1, (20,))], 50, release=MODEL)
    again = holder.encrypt("train", 4, [rng.uniform(-1, 1, (20,))], 60, release=MODEL)
    assert again[:2] == first[:2]
    holder.encrypt("train", 5, [rng.uniform(-1, 1, (20,))], 50, release=MODEL)
    with pytest.raises(RefusedRequest, match="older than round 5"):
        holder.encrypt("train", 4, [rng.uniform(-1, 1, (20,))], 50, release=MODEL)
    assert (
        holder.encrypt("statistics", 0, [rng.uniform(-1, 1, (20,))], 50, release="statistics:spread")[0]
        != first[0]
    )  # own counter


def test_nonce_reuse_would_reveal_the_update_difference(federation5, test_ctx):
    """CONTROL: why the KeyHolder resends. Two c0 under one label give ``c0 - c0' = m - m' + e - e'``
    to anyone, without any key. And encryptions are randomized: the same update encrypted twice
    (two fresh encryptors, or two rounds) gives different c0."""
    fed, moduli = federation5, test_ctx.data_moduli
    updates, counts = random_updates(TEST_PARAMS, 2, SIZES, seed=9)
    label = fed.label(round_id=6)
    secret = fed.secrets[0]
    first, _ = SecretKeyEncryptor(test_ctx, secret).encrypt(updates[0], counts[0], label)
    second, _ = SecretKeyEncryptor(test_ctx, secret).encrypt(updates[1], counts[1], label)
    # The coordinator's computation: c0 - c0' on the noise primes is e - e' (m = 0 there), and
    # on a payload prime m - m' + e - e'.
    difference = submod(first.c0, second.c0, moduli)[0]
    noise_difference = np.array(signed_integers(test_ctx, difference))
    assert np.abs(noise_difference).max() <= 2 * ENCRYPTION_NOISE_BOUND
    q0 = int(test_ctx.payload_moduli[0])
    payload_difference = difference[0].astype(object)
    leaked = (payload_difference - noise_difference.astype(object)) % q0
    encoder = UpdateEncoder(TEST_PARAMS, test_ctx.num_payload)
    fields = [
        encoder.encode(u, c, np.random.default_rng(0)).fields[0, 0, : first.coefficients]
        for u, c in zip(updates, counts, strict=True)
    ]
    assert leaked.tolist() == ((fields[0].astype(object) - fields[1].astype(object)) % q0).tolist()
    again, _ = SecretKeyEncryptor(test_ctx, secret).encrypt(updates[0], counts[0], label)
    later, _ = SecretKeyEncryptor(test_ctx, secret).encrypt(updates[0], counts[0], fed.label(round_id=7))
    assert not np.array_equal(again.c0, first.c0)
    assert not np.array_equal(later.c0, first.c0)


def clipped_normal_model(sigma: float = 3.2, width: float = 6.0) -> dict[int, float]:
    """P(e = k) for SEAL's ``sample_poly_normal``: X ~ N(0, sigma^2) redrawn until |X| <= 6 sigma,
    then truncated toward zero (``static_cast<int64_t>``), so 0 collects (-1, 1)."""

    def cdf(x: float) -> float:
        return 0.5 * (1 + math.erf(x / (sigma * math.sqrt(2))))

    limit = width * sigma
    mass = cdf(limit) - cdf(-limit)
    model = {0: (cdf(1) - cdf(-1)) / mass}
    for k in range(1, math.floor(limit) + 1):
        model[k] = model[-k] = (cdf(min(k + 1, limit)) - cdf(k)) / mass
    return model


def test_encryption_noise_is_seal_clipped_normal(federation5, test_ctx):
    """The oracle decrypts ``c0 + c1*s`` on a noise prime (m = 0 there): 24 ciphertexts, ~98000
    coefficients. Each bin's empirical probability must be within 5 binomial standard deviations
    of the model (tails |e| >= 10 pooled); 20 bins give a false alarm rate below 2e-5. Rounding
    instead of truncation would put P(0) at 0.12 instead of 0.245, ~90 standard deviations off."""
    fed = federation5
    label = fed.label(round_id=8)
    update = [np.zeros(23 * TEST_PARAMS.values_per_ciphertext)]  # plus the counts: 24 ciphertexts
    encrypted, _ = SecretKeyEncryptor(test_ctx, fed.secrets[2]).encrypt(update, 10, label)
    assert len(encrypted.c0) >= 23
    assert encrypted.coefficients == test_ctx.n
    plain = oracle_plaintext(test_ctx, encrypted, fed.secrets[2].residues, label)
    q = int(test_ctx.noise_moduli[0])
    residues = plain[:, test_ctx.num_payload].astype(np.int64).ravel()
    noise = np.where(residues > q // 2, residues - q, residues)
    assert np.abs(noise).max() <= ENCRYPTION_NOISE_BOUND
    model, n = clipped_normal_model(), noise.size
    bins = {k: (noise == k, model[k]) for k in range(-9, 10)}
    bins["tails"] = (np.abs(noise) >= 10, sum(p for k, p in model.items() if abs(k) >= 10))
    for name, (hits, expected) in bins.items():
        observed = hits.mean()
        tolerance = 5 * math.sqrt(expected * (1 - expected) / n)
        assert abs(observed - expected) <= tolerance, f"P({name}) = {observed:.5f}, model {expected:.5f}"
    ratio = np.mean(noise == 0) / np.mean(np.abs(noise) == 1) * 2
    assert 1.9 < ratio < 2.5  # truncation toward zero: P(0) is about twice P(+1) (model 2.20)


# == 4. Flooding and tampered shares ===============================================================
@pytest.fixture(scope="module")
def decryption(federation10, test_ctx):
    fed = federation10
    label = fed.label(round_id=9)
    updates, counts = random_updates(TEST_PARAMS, 10, SIZES, seed=10)
    aggregate = fed.encrypt_all(updates, counts, label=label)
    request = fed.request(aggregate, fed.parties, (1, 2, 3, 4, 6, 7, 8, 9, 10), label)
    return fed, aggregate, request, fed.shares(request)


def combined_noise(ctx, aggregate, shares) -> list[int]:
    total = aggregate.c0[0]
    for share in shares:
        total = addmod(total, share.polys[0], ctx.data_moduli)
    return signed_integers(ctx, total)


def test_measured_decryption_noise_is_flooded_and_within_its_bound(decryption, test_ctx):
    fed, aggregate, request, shares = decryption
    noise = max(abs(v) for v in combined_noise(test_ctx, aggregate, shares))
    assert 2 ** (fed.smudging_bits - 1) < noise < 2**fed.noise_bits
    reference = combine(test_ctx, aggregate, shares, request, fed.noise_bits)
    assert reference.shape == (1, test_ctx.num_payload, test_ctx.n)


def test_tampered_shares(decryption, test_ctx):
    """What a coordinator or keyholder that alters one share achieves (there is no share integrity):

    * +1 on one coefficient, the same integer on every prime: indistinguishable from flooding,
      absorbed, the output is unchanged;
    * +1 on one payload residue only: the output is silently wrong by one unit in that field (one
      quantization step of one value): not caught (docs/security.md, "Not promised");
    * +1 on one noise residue only, or +2^100 on every prime: the noise read off the noise primes
      exceeds 2^noise_bits and the attempt is refused.
    """
    fed, aggregate, request, shares = decryption
    reference = combine(test_ctx, aggregate, shares, request, fed.noise_bits)
    every_row = list(range(len(test_ctx.data_moduli)))
    noise_row = test_ctx.num_payload

    def with_tamper(delta: int, rows: list[int]):
        return [tampered(test_ctx, shares[0], 17, delta, rows), *shares[1:]]

    absorbed = combine(test_ctx, aggregate, with_tamper(1, every_row), request, fed.noise_bits)
    assert np.array_equal(absorbed, reference)
    shifted = combine(test_ctx, aggregate, with_tamper(1, [0]), request, fed.noise_bits)
    changed = np.argwhere(shifted != reference)
    assert changed.tolist() == [[0, 0, 17]]
    assert int(shifted[0, 0, 17]) - int(reference[0, 0, 17]) in (1, 1 - int(test_ctx.payload_moduli[0]))
    for delta, rows in ((1, [noise_row]), (1 << 100, every_row)):
        with pytest.raises(ShareMismatchError, match="exceeds its bound"):
            combine(test_ctx, aggregate, with_tamper(delta, rows), request, fed.noise_bits)

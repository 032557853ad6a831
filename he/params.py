"""Threshold-CKKS parameter presets, with the security and bit-budget reasoning checked in code.

The ciphertext modulus is split into three roles (SEAL convention: the last prime is special):

* **payload primes** carry the packed, quantized model update: each residue holds
  ``fields_per_prime`` unsigned fields of ``slot_bits`` bits, so any sum of up to
  ``max_parties`` updates stays exact and never carries into a neighbouring field;
* **noise primes** (the last ``noise_primes`` data primes) carry nothing: the message is zero
  there, so after threshold decryption their residues are the total decryption noise, read off
  exactly and subtracted from every payload residue (decoding is exact, no rounding);
* the **special prime** exists only at the key level; SEAL divides the fresh encryption noise
  by it. We never key-switch, so 18 bits suffice and the rest of the 128-bit budget goes to data.

Security: the total modulus must not exceed SEAL's ``CoeffModulus.MaxBitCount(N, TC128)``
(HomomorphicEncryption.org standard, ternary secrets). Anything larger is refused.

Noise flooding (Li & Micciancio, EUROCRYPT 2021): every decryption share carries uniform noise
of ``smudging_bits`` bits. A coalition (server plus t-1 keyholders) learns, per decryption
attempt, the aggregate plus ``E + F`` where ``E`` is the sum of the contributors' encryption
noise (at most ``max_parties`` times SEAL's 19-bound clipped Gaussian) and ``F`` holds the flooding
of at least one honest keyholder. Each revealed coefficient is then within ``|E| / 2^B`` of
ideal in statistical distance; over everything a run may reveal (N coefficients x ciphertexts x
decryptions x attempts x keyholders) the total stays below ``2^-flooding_margin_bits``:
``B >= B_ct + margin + log2(N * max_ciphertexts * (max_rounds + 2) * attempts * |K|)``.
No Lagrange factor multiplies any noise (``he.decrypt`` masks shares instead), so the bound is
closed-form. Correctness needs ``|K|`` floods plus ``E`` below half the noise primes' product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property

import tenseal.sealapi as seal

from he.errors import InsecureParametersError

MIN_FLOODING_MARGIN_BITS = 40
MAX_COMMITTEE = 32  # keyholders; larger federations name a committee in the roster
MAX_ATTEMPTS = 16  # the roster's max_attempts is at most this
STATISTICS_DECRYPTIONS = 3  # feature-statistics passes of a run (common.protocol.STATISTICS_ROUNDS)
MAX_EXAMPLES = 10_000_000  # training examples per hospital; counts travel exactly up to this
ENCRYPTION_NOISE_BOUND = 19  # SEAL's clipped normal: |e| <= 6 * 3.2, truncated toward zero


@dataclass(frozen=True)
class HEParams:
    """One parameter set. Validated on construction: insecure or inconsistent sets are refused.

    Parameters
    ----------
    name : str
        Preset name, shown in errors, logs and MLflow.
    poly_modulus_degree : int
        Ring dimension N (a power of two); each ciphertext holds N coefficients.
    coeff_modulus_bits : tuple[int, ...]
        Bit sizes of the RNS primes; the last one is SEAL's special (key-level) prime.
    noise_primes : int
        How many of the last data primes are reserved to read the decryption noise.
    value_bits : int
        Quantizer width: each weighted value becomes an integer in ``[0, 2^value_bits - 2]``.
    clip : float
        Weighted values are clipped to ``[-clip, clip]`` before quantization.
    max_parties : int
        Most hospitals whose updates are summed; sets the per-field headroom bits.
    default_weight_scale : int
        The weight scale ``S`` (``he.encoding``) of a round before the server knows the
        federation's total example count; hospitals larger than it are weighted as if this size.
    stochastic_rounding : bool
        Unbiased stochastic rounding (compact presets) instead of round-to-nearest.
    flooding_margin_bits : int (default: 40)
        Statistical distance of everything a run reveals from an ideal one is below 2^-margin.
    max_rounds : int (default: 1000)
        Most training rounds a run may have; sizes the flooding (each round is a decryption).
    max_ciphertexts : int (default: 64)
        Most ciphertexts one update may take; sizes the flooding.
    insecure_for_tests : bool (default: False)
        Skip the 128-bit check, for small fast test parameters only. Never used by presets.
    """

    name: str
    poly_modulus_degree: int
    coeff_modulus_bits: tuple[int, ...]
    noise_primes: int
    value_bits: int
    clip: float
    max_parties: int
    default_weight_scale: int
    stochastic_rounding: bool
    flooding_margin_bits: int = MIN_FLOODING_MARGIN_BITS
    max_rounds: int = 1000
    max_ciphertexts: int = 64
    insecure_for_tests: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeff_modulus_bits", tuple(self.coeff_modulus_bits))
        n = self.poly_modulus_degree
        if n < 1024 or n & (n - 1):
            raise InsecureParametersError(
                f"{self.name}: poly_modulus_degree must be a power of two >= 1024, got {n}"
            )
        if self.noise_primes < 1 or len(self.data_prime_bits) <= self.noise_primes:
            raise InsecureParametersError(
                f"{self.name}: need at least one payload prime besides {self.noise_primes} noise "
                f"prime(s) and the special prime; coeff_modulus_bits={self.coeff_modulus_bits}"
            )
        limit = seal.CoeffModulus.MaxBitCount(n, seal.SEC_LEVEL_TYPE.TC128)
        if sum(self.coeff_modulus_bits) > limit and not self.insecure_for_tests:
            raise InsecureParametersError(
                f"{self.name}: {sum(self.coeff_modulus_bits)} modulus bits at N={n} is below "
                f"128-bit security (SEAL allows at most {limit}); lower coeff_modulus_bits or "
                f"raise poly_modulus_degree"
            )
        if self.flooding_margin_bits < MIN_FLOODING_MARGIN_BITS:
            raise InsecureParametersError(
                f"{self.name}: flooding_margin_bits={self.flooding_margin_bits} is below the "
                f"{MIN_FLOODING_MARGIN_BITS} bits that make shared decryption statistically safe"
            )
        if not 2 <= self.value_bits <= 62:
            raise InsecureParametersError(f"{self.name}: value_bits must be in [2, 62]")
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise InsecureParametersError(f"{self.name}: clip must be a positive finite number")
        if self.max_rounds < 1 or self.max_ciphertexts < 1:
            raise InsecureParametersError(f"{self.name}: max_rounds and max_ciphertexts must be positive")
        if self.max_parties < 1 or not 1 <= self.default_weight_scale <= MAX_EXAMPLES:
            raise InsecureParametersError(
                f"{self.name}: max_parties must be positive and default_weight_scale in [1, {MAX_EXAMPLES}]"
            )
        if self.fields_per_prime < 1:
            raise InsecureParametersError(
                f"{self.name}: a field of {self.slot_bits} bits (value_bits {self.value_bits} + "
                f"headroom for {self.max_parties} parties) does not fit a "
                f"{min(self.payload_prime_bits)}-bit prime; lower value_bits or max_parties"
            )
        self.check_federation(min(self.max_parties, MAX_COMMITTEE), MAX_ATTEMPTS)

    # -- bit budget ---------------------------------------------------------------------------
    @property
    def data_prime_bits(self) -> tuple[int, ...]:
        return self.coeff_modulus_bits[:-1]

    @property
    def payload_prime_bits(self) -> tuple[int, ...]:
        return self.data_prime_bits[: -self.noise_primes]

    @property
    def noise_modulus_bits(self) -> int:
        """A lower bound on log2 of the product of the noise primes (a b-bit prime is > 2^(b-1))."""
        return sum(b - 1 for b in self.data_prime_bits[-self.noise_primes :])

    @property
    def headroom_bits(self) -> int:
        return max(1, math.ceil(math.log2(self.max_parties))) if self.max_parties > 1 else 0

    @property
    def slot_bits(self) -> int:
        """Bits of one packed field: a value plus room for the sum of ``max_parties`` values."""
        return self.value_bits + self.headroom_bits

    @property
    def fields_per_prime(self) -> int:
        # A b-bit prime exceeds 2^(b-1): fields using at most b-1 bits never wrap around.
        return (min(self.payload_prime_bits) - 1) // self.slot_bits

    @property
    def values_per_ciphertext(self) -> int:
        return self.poly_modulus_degree * len(self.payload_prime_bits) * self.fields_per_prime

    @property
    def ciphertext_bytes(self) -> int:
        """Wire size of one uploaded ciphertext: ``c0`` only (``c1`` is seeded), N residues per
        data prime at 7.5 bytes each."""
        return self.poly_modulus_degree * len(self.data_prime_bits) * 15 // 2

    @cached_property
    def ciphertext_noise_bits(self) -> int:
        """Bound on the encryption noise of a sum of ``max_parties`` fresh encryptions.

        Each hospital encrypts under its own ``s_i`` with noise from SEAL's clipped normal
        sampler, so every coefficient of one noise polynomial is at most 19 in absolute value
        (checked by a test against SEAL's sampler), and a sum of ``max_parties`` at most 19x that.
        """
        return math.ceil(math.log2(self.max_parties * ENCRYPTION_NOISE_BOUND + 1))

    def smudging_bits(self, committee_size: int, max_attempts: int) -> int:
        """Bits of the uniform flooding noise each decryption share adds (closed form)."""
        decryptions = self.max_rounds + STATISTICS_DECRYPTIONS
        revealed = self.poly_modulus_degree * self.max_ciphertexts * decryptions * max_attempts
        return (
            self.ciphertext_noise_bits
            + self.flooding_margin_bits
            + math.ceil(math.log2(revealed * committee_size))
        )

    def decryption_noise_bits(self, committee_size: int, max_attempts: int) -> int:
        """Bound on the total noise of a combined decryption: |K| floods plus ``E``."""
        floods = committee_size * 2 ** self.smudging_bits(committee_size, max_attempts)
        # ceil(log2(x)) in exact integer arithmetic: float log2 rounds 2^82 + 2^10 down to 82
        return (floods + 2**self.ciphertext_noise_bits - 1).bit_length()

    def check_federation(self, committee_size: int, max_attempts: int) -> None:
        """Refuse a committee whose flooded decryption noise could overflow the noise primes."""
        if committee_size < 2:
            raise InsecureParametersError(
                f"a keyholder committee needs at least 2 members, got {committee_size}"
            )
        if committee_size > MAX_COMMITTEE:
            raise InsecureParametersError(
                f"a keyholder committee of {committee_size} exceeds {MAX_COMMITTEE}; name a "
                f"committee of at most {MAX_COMMITTEE} hospitals in the roster"
            )
        noise = self.decryption_noise_bits(committee_size, max_attempts)
        if noise + 2 > self.noise_modulus_bits:
            raise InsecureParametersError(
                f"{self.name}: a committee of {committee_size} with {max_attempts} attempts needs "
                f"{noise} bits of decryption noise room but the noise primes hold "
                f"{self.noise_modulus_bits}; use a smaller committee or fewer rounds"
            )

    def check_contributors(self, count: int) -> None:
        """Refuse an aggregate of more updates than the packed fields have headroom for."""
        if count > self.max_parties:
            raise InsecureParametersError(
                f"{self.name}: {count} contributors exceed max_parties={self.max_parties}, so "
                f"sums could overflow their {self.slot_bits}-bit fields"
            )

    def for_feature_statistics(self) -> HEParams:
        """Same ring and keys, fields as wide as they go: for summing feature moments once per run.

        Means and mean squares of raw features span many orders of magnitude (a tumour area
        near 10^3, a smoothness near 10^-1), so they get the widest field the primes allow and a
        clip of 2^20 on each moment. The first pass runs at weight scale 2^10, which holds
        federations of up to 2^10 * max_parties / 2 examples at full precision; a larger one is
        detected exactly and the pass is run again at its scale (``strategies.encrypted_fedavg``).
        """
        return replace(
            self,
            name=f"{self.name}-statistics",
            value_bits=min(self.payload_prime_bits) - 1 - self.headroom_bits,
            clip=float(1 << 20),
            default_weight_scale=1 << 10,
            stochastic_rounding=False,
        )

    def describe(self) -> dict[str, float | int | str]:
        """Plain numbers for logs and MLflow (no key material here, ever)."""
        return {
            "preset": self.name,
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_modulus_bits": "-".join(map(str, self.coeff_modulus_bits)),
            "value_bits": self.value_bits,
            "slot_bits": self.slot_bits,
            "values_per_ciphertext": self.values_per_ciphertext,
            "bytes_per_value": self.ciphertext_bytes / self.values_per_ciphertext,
            "ciphertext_noise_bits": self.ciphertext_noise_bits,
        }


# N=16384 with 7x60-bit data primes and an 18-bit special prime is exactly SEAL's 438-bit
# 128-bit bound. 5 payload primes + 2 noise primes (118 bits of room for flooding noise).
_RING = {"poly_modulus_degree": 16384, "coeff_modulus_bits": (60,) * 7 + (18,), "noise_primes": 2}

PRESETS: dict[str, HEParams] = {
    # 54-bit fields: quantization step 2*clip/2^54, far below float32 resolution of weights.
    "precise": HEParams(
        name="precise", value_bits=54, clip=64.0, max_parties=32,
        default_weight_scale=1 << 10, stochastic_rounding=False, **_RING,
    ),
    # 10-bit values with stochastic rounding and headroom for 128 contributors: 3 fields of 17
    # bits per prime, only c0 uploaded: ~3.6 bytes per value on the wire (4.3 at 1M values, 5
    # ciphertexts). The server narrows the clip each round to
    # the updates' range (strategies.encrypted_fedavg.next_clip); bench_compact measures the
    # accuracy cost against plaintext FedAvg.
    "compact": HEParams(
        name="compact", value_bits=10, clip=1.0, max_parties=128,
        default_weight_scale=1 << 10, stochastic_rounding=True, **_RING,
    ),
    # The small ring, for models that fit one ciphertext (32,768 values with the evaluation sums).
    # Security: N=8192 with 40-, 40-, 60- and 60-bit data primes and the 18-bit special prime is
    # exactly SEAL's 218-bit 128-bit bound. Noise: the two 60-bit noise primes hold 118 bits, as
    # compact's do: room for the flooded decryption noise (at most 94 bits here: 88 bits of flooding
    # per share for the same run as above, 1000 rounds, 64 ciphertexts, committees of up to 32 with
    # 16 attempts) and for the share check's gains (he.share_check.check_budget: 20 bits for the
    # largest committee). Payload: 2 primes of 2 fields of 15 bits each (compact's 10-bit values,
    # headroom for 32 contributors). A full ciphertext's c0 is 245,760 B against compact's 860,160 B;
    # a small model sends only the coefficients that carry its fields (he.ciphertext), where compact's
    # 15 fields per coefficient beat small's 4. N=4096 cannot hold such a run: of its 109 bits, 91
    # are left after the special prime and the noise primes alone need 97.
    "small": HEParams(
        name="small", poly_modulus_degree=8192, coeff_modulus_bits=(40, 40, 60, 60, 18), noise_primes=2,
        value_bits=10, clip=1.0, max_parties=32, default_weight_scale=1 << 10, stochastic_rounding=True,
    ),
}  # fmt: skip


def preset(name: str) -> HEParams:
    """The named preset; unknown names list the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InsecureParametersError(
            f"unknown HE preset {name!r}; expected one of {sorted(PRESETS)}"
        ) from None

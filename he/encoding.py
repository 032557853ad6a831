"""Quantize, weight and pack a model update into integer fields, and decode their sum.

A hospital with ``k`` training examples has FedAvg weight ``w = k / S``, where ``S`` is the
round's **weight scale**: one number for every hospital of the round, carried in the layout
(which each contribution signs, and keyholders check is the same across the contributor set,
so no hospital can be weighted apart from the others).

Each value ``v`` is clipped to ``[-clip, clip]`` and becomes ``z = round(v/clip * w*H)`` with
``H = 2^(b-1)-1`` (stochastic rounding for ``compact``: unbiased), stored offset as
``u = z + o`` in ``[0, 2o]`` with the hospital's own offset ``o = ceil(w*H)``: a large
hospital's values get a wide range and a small one's a narrow range, so the sum of the
weighted values uses the fields' whole headroom whatever the sizes. The example count ``k`` and
the offset ``o`` travel **exactly**, split into chunks of ``b-1`` bits, each in a field of its
own. Fields of ``b + ceil(log2 max_parties)`` bits are packed several per 60-bit residue
(BatchCrypt, USENIX ATC 2020). The sum decodes to ``sum_k w_k v_k / sum_k w_k`` (FedAvg, by
adding integers only; the divisor ``sum_k k / S`` is exact) and the exact total count.

An update may also carry **exact sums**: non-negative integers below ``2^SUM_BITS`` (counts,
fixed-point totals: the evaluation statistics of ``models.pooled_metrics``), unweighted, split
into chunks like the count, so the decrypted aggregate holds each one's exact federation-wide
sum and nothing per hospital.

The server picks ``S = ceil(2 * total / max_parties)`` from the last exact total, so the
weights add up to about ``max_parties / 2``: half the headroom, the other half for a round
with up to twice as many examples. A sum whose offsets could overflow the fields (the total
grew more than that, or a scale far too small) is refused when decoding, never decoded wrong.
Decoding also refuses what no honest sum can be (an altered share's payload rows): an offset
sum other than the count's (each offset is ``ceil(k*H/S)``), or a value field above twice it.

Error bound: each ``z`` errs by less than 1 unit, so the decoded average errs by less than
``n * clip / (H * W)`` per value, with ``n`` contributors and ``W = sum_k k_k / S``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from he.errors import EncodingError
from he.params import MAX_EXAMPLES, HEParams

MAX_ARRAYS = 4096  # arrays (layers) in one update
MAX_ARRAY_DIMENSIONS = 8
MAX_LAYOUT_VALUES = 1 << 30  # values in one update (far beyond max_ciphertexts anyway)
MAX_SUMS = 1 << 20  # exact sums in one update
SUM_BITS = 62  # each exact sum of one hospital is an integer in [0, 2^62): a Python int, chunked

# Replaces rounding: scaled values (units) -> integers, e.g. privacy.mechanism.DdgPlan.privatize
# (distributed DP: clip, conditional rounding and a noise share, added after quantization).
Quantizer = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def weight_scale_for(total_examples: int, params: HEParams) -> int:
    """The weight scale ``S`` for a round after an aggregate of ``total_examples``: weights then
    add up to about ``max_parties / 2`` (module docstring)."""
    return max(1, min(MAX_EXAMPLES, -(-2 * total_examples // params.max_parties)))


def decoding_error(params: HEParams, layout: UpdateLayout, contributors: int, total_examples: int) -> float:
    """The bound on each decoded average value's error (module docstring: ``n * clip / (H * W)``)."""
    return contributors * layout.clip * layout.weight_scale / (half_range_of(params) * total_examples)


def half_range_of(params: HEParams) -> int:
    """``H``: a weight-1 value at the clip becomes ``H`` units."""
    return (1 << (params.value_bits - 1)) - 1


class WeightScaleError(EncodingError):
    """The round's weight scale was too small for its examples: fields may have overflowed, so
    the aggregate is discarded. The exact example count is still known (its fields have their
    own headroom, and decoding checks it against the offsets first), so the next round can use the
    right scale."""

    def __init__(self, total_examples: int, needed: int, limit: int) -> None:
        super().__init__(
            f"the weighted values need a field range of {needed}, above {limit}: the round's weight "
            f"scale was too small for its {total_examples} examples; the aggregate is discarded"
        )
        self.total_examples = total_examples


@dataclass(frozen=True)
class UpdateLayout:
    """Shapes of the arrays of an update (the model architecture), the clip, the weight scale and
    the number of exact sums: public, fixed by the server for the round, signed by every
    contributor."""

    shapes: tuple[tuple[int, ...], ...]
    clip: float
    weight_scale: int
    sums: int = 0

    @classmethod
    def of(cls, arrays: list[np.ndarray], clip: float, weight_scale: int, sums: int = 0) -> UpdateLayout:
        shapes = tuple(tuple(int(d) for d in np.shape(a)) for a in arrays)
        return cls(shapes, float(clip), int(weight_scale), int(sums))

    @property
    def num_values(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def to_json(self) -> dict:
        return {
            "shapes": [list(s) for s in self.shapes],
            "clip": self.clip,
            "weight_scale": self.weight_scale,
            "sums": self.sums,
        }

    @classmethod
    def from_json(cls, layout: object) -> UpdateLayout:
        """A layout from untrusted JSON: every field checked (Python ints, bounded) before use."""
        if not isinstance(layout, dict):
            raise ValueError("layout must be a JSON object")
        shapes, clip, scale = layout.get("shapes"), layout.get("clip"), layout.get("weight_scale")
        sums = layout.get("sums", 0)
        if not _is_int(sums) or not 0 <= sums <= MAX_SUMS:
            raise ValueError(f"layout sums must be an integer in [0, {MAX_SUMS}], got {str(sums)[:40]}")
        if not isinstance(shapes, list) or not (0 if sums else 1) <= len(shapes) <= MAX_ARRAYS:
            raise ValueError(f"layout shapes must be a list of 1 to {MAX_ARRAYS} shapes (0 with sums)")
        for shape in shapes:
            if (
                not isinstance(shape, list)
                or len(shape) > MAX_ARRAY_DIMENSIONS
                or not all(_is_int(d) and 0 <= d <= MAX_LAYOUT_VALUES for d in shape)
            ):
                raise ValueError(f"layout shape {str(shape)[:60]} is not a list of sizes")
        if sum(math.prod(shape) for shape in shapes) > MAX_LAYOUT_VALUES:
            raise ValueError(f"layout holds more than {MAX_LAYOUT_VALUES} values")
        if not _is_int(scale) or not 1 <= scale <= MAX_EXAMPLES:
            raise ValueError(f"layout weight_scale must be an integer in [1, {MAX_EXAMPLES}], got {scale!r}")
        if isinstance(clip, bool) or not isinstance(clip, int | float) or not 0 < clip < math.inf:
            raise ValueError(f"layout clip must be a positive finite number, got {clip!r}")
        return cls(tuple(tuple(shape) for shape in shapes), float(clip), scale, sums)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class EncodedUpdate:
    """Packed fields ``[ciphertexts, payload primes, N]`` and how many values were clipped."""

    fields: np.ndarray
    layout: UpdateLayout
    clipped_values: int


class UpdateEncoder:
    """Encodes one hospital's update; decodes the sum of several."""

    def __init__(self, params: HEParams, num_payload_primes: int) -> None:
        self.params = params
        self.num_payload_primes = num_payload_primes
        self.half_range = half_range_of(params)
        self.mask = np.uint64((1 << params.slot_bits) - 1)
        self.field_limit = (1 << params.slot_bits) - 1
        self.chunk_bits = params.value_bits - 1
        # chunks enough for a count up to 10^7 and for an offset up to the field limit
        self.count_chunks = math.ceil(max(MAX_EXAMPLES.bit_length(), params.slot_bits) / self.chunk_bits)
        self.sum_chunks = math.ceil(SUM_BITS / self.chunk_bits)

    def num_fields(self, layout: UpdateLayout) -> int:
        return layout.num_values + 2 * self.count_chunks + layout.sums * self.sum_chunks

    def num_ciphertexts(self, layout: UpdateLayout) -> int:
        return -(-self.num_fields(layout) // self.params.values_per_ciphertext)

    def coefficients(self, layout: UpdateLayout) -> int:
        """How many leading coefficients of each ciphertext carry fields. ``_pack`` fills every
        field of every payload prime of a coefficient before the next coefficient, so an update
        in one ciphertext needs only ``ceil(num_fields / fields per coefficient)`` of them
        (rounded up to even: ``he.wire`` packs residues in pairs); a longer update fills all N.
        Only these travel and are ever decrypted."""
        if self.num_ciphertexts(layout) > 1:
            return self.params.poly_modulus_degree
        needed = -(-self.num_fields(layout) // self.fields_per_coefficient)
        return min(self.params.poly_modulus_degree, needed + needed % 2)

    @property
    def fields_per_coefficient(self) -> int:
        return self.num_payload_primes * self.params.fields_per_prime

    def encode(
        self,
        arrays: list[np.ndarray],
        num_examples: int,
        rng: np.random.Generator,
        clip: float | None = None,
        weight_scale: int | None = None,
        quantizer: Quantizer | None = None,
        sums: list[int] | tuple[int, ...] = (),
    ) -> EncodedUpdate:
        """Quantize and pack; ``rng`` drives stochastic rounding (pass an OS-seeded one).

        ``clip`` (default: the preset's) may only narrow the preset's range; ``weight_scale``
        (default: the preset's ``default_weight_scale``) is the round's ``S``. ``quantizer``
        (DP mode) turns the scaled values into integers instead of the preset's rounding; a
        result beyond the hospital's range is clipped to it like any other value. ``sums``: the
        exact sums (module docstring), added unweighted.
        """
        exact = self._validated_sums(sums)
        values = self._validated_values(arrays, num_examples, allow_empty=bool(exact))
        p = self.params
        clip = p.clip if clip is None else float(clip)
        if not 0 < clip <= p.clip:
            raise EncodingError(f"clip must be in (0, {p.clip}] (the preset's clip), got {clip}")
        scale = p.default_weight_scale if weight_scale is None else weight_scale
        if (
            isinstance(scale, bool)
            or not isinstance(scale, int | np.integer)
            or not 1 <= scale <= MAX_EXAMPLES
        ):
            raise EncodingError(f"weight_scale must be an integer in [1, {MAX_EXAMPLES}], got {scale!r}")
        offset = -(-num_examples * self.half_range // int(scale))  # ceil(w * H), exactly
        if 2 * offset > self.field_limit:
            raise EncodingError(
                f"{num_examples} examples at weight scale {scale} need a field range of {2 * offset}, "
                f"above {self.field_limit}; the round's weight scale is too small"
            )
        clipped = int(np.count_nonzero(np.abs(values) > clip))
        scaled = np.clip(values, -clip, clip) * (num_examples * self.half_range / int(scale) / clip)
        if quantizer is not None:
            quantized = quantizer(scaled, rng)
        elif p.stochastic_rounding:
            quantized = np.floor(scaled + rng.random(scaled.shape))
        else:
            quantized = np.rint(scaled)
        shifted = np.clip(quantized, -offset, offset).astype(np.int64) + offset
        chunked = [c for value in exact for c in self._chunks(value, self.sum_chunks)]
        counts = np.array(self._chunks(num_examples) + self._chunks(offset) + chunked, dtype=np.int64)
        layout = UpdateLayout.of(arrays, clip, int(scale), len(exact))
        unsigned = np.concatenate([shifted, counts]).astype(np.uint64)
        return EncodedUpdate(self._pack(unsigned, layout), layout, clipped)

    def decode(
        self, field_sums: np.ndarray, layout: UpdateLayout, num_contributors: int
    ) -> tuple[list[np.ndarray], int]:
        """Weighted average of the contributors' updates, and their exact total example count."""
        count = layout.num_values
        unpacked = self._unpack(field_sums)[: count + 2 * self.count_chunks].astype(np.int64)
        total_examples = self._unchunk(unpacked[count : count + self.count_chunks])
        total_offset = self._unchunk(unpacked[count + self.count_chunks :])
        if not num_contributors <= total_examples <= num_contributors * MAX_EXAMPLES:
            raise EncodingError(
                f"decoded example count {total_examples} is not that of {num_contributors} valid updates"
            )
        # each offset is ceil(k * H / S), so their sum is pinned by the count up to one S each
        scaled_count, scaled_offset = total_examples * self.half_range, total_offset * layout.weight_scale
        if not scaled_count <= scaled_offset < scaled_count + num_contributors * layout.weight_scale:
            raise EncodingError(
                f"decoded offset sum {total_offset} is not that of {total_examples} examples at weight "
                f"scale {layout.weight_scale} over {num_contributors} updates"
            )
        if 2 * total_offset > self.field_limit:
            raise WeightScaleError(total_examples, 2 * total_offset, self.field_limit)
        outside = np.count_nonzero(unpacked[:count] > 2 * total_offset)
        if outside:  # each update's value fields lie in [0, 2 o]
            raise EncodingError(
                f"{outside} decoded values lie above {2 * total_offset}, the range of the summed offsets"
            )
        weighted = (unpacked[:count] - total_offset).astype(np.float64)
        average = weighted * (layout.clip * layout.weight_scale / (self.half_range * total_examples))
        arrays, start = [], 0
        for shape in layout.shapes:
            size = math.prod(shape)
            arrays.append(average[start : start + size].reshape(shape))
            start += size
        return arrays, total_examples

    def decode_sums(self, field_sums: np.ndarray, layout: UpdateLayout) -> list[int]:
        """The exact federation-wide sums (Python ints) of the update's exact-sum section."""
        start = layout.num_values + 2 * self.count_chunks
        chunks = self._unpack(field_sums)[start : start + layout.sums * self.sum_chunks]
        width = self.sum_chunks
        return [self._unchunk(chunks[i * width : (i + 1) * width]) for i in range(layout.sums)]

    def _chunks(self, value: int, chunks: int | None = None) -> list[int]:
        mask = (1 << self.chunk_bits) - 1
        return [(value >> (i * self.chunk_bits)) & mask for i in range(chunks or self.count_chunks)]

    @staticmethod
    def _validated_sums(sums) -> list[int]:
        if len(sums) > MAX_SUMS:
            raise EncodingError(f"{len(sums)} exact sums exceed {MAX_SUMS}")
        values = []
        for index, value in enumerate(sums):
            if (
                not isinstance(value, int | np.integer)
                or isinstance(value, bool)
                or not 0 <= value < 1 << SUM_BITS
            ):
                raise EncodingError(
                    f"exact sum {index} must be an integer in [0, 2^{SUM_BITS}), got {value!r}"
                )
            values.append(int(value))
        return values

    def _unchunk(self, sums: np.ndarray) -> int:
        return sum(int(s) << (i * self.chunk_bits) for i, s in enumerate(sums.tolist()))

    def _validated_values(
        self, arrays: list[np.ndarray], num_examples: int, allow_empty: bool = False
    ) -> np.ndarray:
        if not arrays and not allow_empty:
            raise EncodingError("the update holds no arrays")
        for index, array in enumerate(arrays):
            if not np.issubdtype(np.asarray(array).dtype, np.number):
                raise EncodingError(f"update array {index} is not numeric ({np.asarray(array).dtype})")
            if not np.all(np.isfinite(array)):
                raise EncodingError(f"update array {index} contains NaN or Inf; refusing to encrypt it")
        if isinstance(num_examples, bool) or not isinstance(num_examples, int | np.integer):
            raise EncodingError(f"num_examples must be an integer, got {num_examples!r}")
        if not 1 <= num_examples <= MAX_EXAMPLES:
            raise EncodingError(f"num_examples={num_examples} is outside [1, {MAX_EXAMPLES}]")
        return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays] or [np.zeros(0)])

    def _pack(self, unsigned: np.ndarray, layout: UpdateLayout) -> np.ndarray:
        p, n = self.params, self.params.poly_modulus_degree
        count = self.num_ciphertexts(layout)
        # zero padding: a sum decrypts to zero beyond the fields, whether or not it is sent
        padded = np.zeros(count * p.values_per_ciphertext, dtype=np.uint64)
        padded[: unsigned.size] = unsigned
        # value order: ciphertext, coefficient, prime, field (a small update fills few coefficients)
        per_field = padded.reshape(count, n, self.num_payload_primes, p.fields_per_prime)
        packed = np.zeros((count, self.num_payload_primes, n), dtype=np.uint64)
        for f in range(p.fields_per_prime):
            packed |= per_field[..., f].transpose(0, 2, 1) << np.uint64(f * p.slot_bits)
        return packed

    def _unpack(self, packed: np.ndarray) -> np.ndarray:
        slot = self.params.slot_bits
        fields = [(packed >> np.uint64(f * slot)) & self.mask for f in range(self.params.fields_per_prime)]
        return np.stack(fields, axis=-1).transpose(0, 2, 1, 3).reshape(-1)  # the order of ``_pack``

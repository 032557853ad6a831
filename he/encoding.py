"""Quantize, weight and pack a model update into integer fields, and decode their sum.

A hospital with ``k`` training examples has FedAvg weight ``w = k' / S`` with ``k' = min(k, S)``,
where ``S`` is the round's **weight scale**: one number for every hospital of the round, carried
in the layout (which each contribution signs, and keyholders check is the same across the
contributor set, so no hospital can be weighted apart from the others). The server sets it to
the exact total example count of the previous aggregate, so weights add up to about 1 and the
quantization error does not grow for small hospitals, whatever their size (1 to 10^7).

Each value ``v`` is clipped to ``[-clip, clip]`` and becomes ``z = round(w*v/clip * H)`` with
``H = 2^(b-1)-1`` (stochastic rounding for ``compact``: unbiased), stored offset as
``u = z + H`` in ``[0, 2H]``. The example counts ``k`` and ``k'`` travel **exactly**, split into
chunks of ``b-1`` bits, each in a field of its own. Fields of ``b + ceil(log2 max_parties)``
bits are packed several per 60-bit residue (BatchCrypt, USENIX ATC 2020), so the sum of up to
``max_parties`` updates never carries into a neighbour. The sum decodes to
``sum_k w_k v_k / sum_k w_k`` (FedAvg, by adding integers only) and the exact total count.

Error bound: each ``z`` errs by less than 1 unit, so the decoded average errs by less than
``n * clip / (H * W)`` per value, with ``n`` contributors and ``W = sum_k k'_k / S`` (W = 1
when ``S`` is the total count), plus float64 rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from he.errors import EncodingError
from he.params import MAX_EXAMPLES, HEParams


@dataclass(frozen=True)
class UpdateLayout:
    """Shapes of the arrays of an update (the model architecture), the clip and the weight scale:
    public, fixed by the server for the round, signed by every contributor."""

    shapes: tuple[tuple[int, ...], ...]
    clip: float
    weight_scale: int

    @classmethod
    def of(cls, arrays: list[np.ndarray], clip: float, weight_scale: int) -> UpdateLayout:
        return cls(tuple(tuple(int(d) for d in np.shape(a)) for a in arrays), float(clip), int(weight_scale))

    @property
    def num_values(self) -> int:
        return int(sum(np.prod(s, dtype=np.int64) for s in self.shapes))

    def to_json(self) -> dict:
        return {
            "shapes": [list(s) for s in self.shapes],
            "clip": self.clip,
            "weight_scale": self.weight_scale,
        }

    @classmethod
    def from_json(cls, layout: dict) -> UpdateLayout:
        scale = layout["weight_scale"]
        if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= MAX_EXAMPLES:
            raise ValueError(f"layout weight_scale must be an integer in [1, {MAX_EXAMPLES}], got {scale!r}")
        result = cls(tuple(tuple(int(d) for d in s) for s in layout["shapes"]), float(layout["clip"]), scale)
        if any(d < 0 for s in result.shapes for d in s):
            raise ValueError(f"layout dimensions must be non-negative, got {result.shapes}")
        if not (result.clip > 0 and np.isfinite(result.clip)):
            raise ValueError(f"layout clip must be a positive finite number, got {result.clip}")
        return result


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
        self.half_range = (1 << (params.value_bits - 1)) - 1
        self.mask = np.uint64((1 << params.slot_bits) - 1)
        self.chunk_bits = params.value_bits - 1
        self.count_chunks = math.ceil(MAX_EXAMPLES.bit_length() / self.chunk_bits)

    def num_ciphertexts(self, layout: UpdateLayout) -> int:
        return -(-(layout.num_values + 2 * self.count_chunks) // self.params.values_per_ciphertext)

    def encode(
        self,
        arrays: list[np.ndarray],
        num_examples: int,
        rng: np.random.Generator,
        clip: float | None = None,
        weight_scale: int | None = None,
    ) -> EncodedUpdate:
        """Quantize and pack; ``rng`` drives stochastic rounding (pass an OS-seeded one).

        ``clip`` (default: the preset's) may only narrow the preset's range; ``weight_scale``
        (default: the preset's ``default_weight_scale``) is the round's ``S``.
        """
        values = self._validated_values(arrays, num_examples)
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
        weighted_count = min(num_examples, int(scale))
        clipped = int(np.count_nonzero(np.abs(values) > clip))
        scaled = np.clip(values, -clip, clip) * (weighted_count / scale / clip * self.half_range)
        if p.stochastic_rounding:
            quantized = np.floor(scaled + rng.random(scaled.shape))
        else:
            quantized = np.rint(scaled)
        offset = np.clip(quantized, -self.half_range, self.half_range).astype(np.int64) + self.half_range
        counts = np.array(self._chunks(num_examples) + self._chunks(weighted_count), dtype=np.int64)
        layout = UpdateLayout.of(arrays, clip, int(scale))
        unsigned = np.concatenate([offset, counts]).astype(np.uint64)
        return EncodedUpdate(self._pack(unsigned, layout), layout, clipped)

    def decode(
        self, field_sums: np.ndarray, layout: UpdateLayout, num_contributors: int
    ) -> tuple[list[np.ndarray], int]:
        """Weighted average of the contributors' updates, and their exact total example count."""
        count = layout.num_values
        unpacked = self._unpack(field_sums)[: count + 2 * self.count_chunks].astype(np.int64)
        total_examples = self._unchunk(unpacked[count : count + self.count_chunks])
        weighted_examples = self._unchunk(unpacked[count + self.count_chunks :])
        if not 1 <= weighted_examples <= total_examples <= num_contributors * MAX_EXAMPLES:
            raise EncodingError(
                f"decoded example counts ({total_examples} total, {weighted_examples} weighted) are not "
                f"those of {num_contributors} valid updates"
            )
        centered = unpacked[:count] - num_contributors * self.half_range
        total_weight = weighted_examples / layout.weight_scale
        average = centered.astype(np.float64) * (layout.clip / self.half_range) / total_weight
        arrays, start = [], 0
        for shape in layout.shapes:
            size = int(np.prod(shape, dtype=np.int64))
            arrays.append(average[start : start + size].reshape(shape))
            start += size
        return arrays, total_examples

    def _chunks(self, count: int) -> list[int]:
        mask = (1 << self.chunk_bits) - 1
        return [(count >> (i * self.chunk_bits)) & mask for i in range(self.count_chunks)]

    def _unchunk(self, sums: np.ndarray) -> int:
        return sum(int(s) << (i * self.chunk_bits) for i, s in enumerate(sums.tolist()))

    def _validated_values(self, arrays: list[np.ndarray], num_examples: int) -> np.ndarray:
        if not arrays:
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
        return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])

    def _pack(self, unsigned: np.ndarray, layout: UpdateLayout) -> np.ndarray:
        p, n = self.params, self.params.poly_modulus_degree
        count = self.num_ciphertexts(layout)
        padded = np.full(count * p.values_per_ciphertext, self.half_range, dtype=np.uint64)
        padded[: unsigned.size] = unsigned
        per_field = padded.reshape(count, p.fields_per_prime, self.num_payload_primes, n)
        packed = np.zeros((count, self.num_payload_primes, n), dtype=np.uint64)
        for f in range(p.fields_per_prime):
            packed |= per_field[:, f] << np.uint64(f * p.slot_bits)
        return packed

    def _unpack(self, packed: np.ndarray) -> np.ndarray:
        slot = self.params.slot_bits
        fields = [(packed >> np.uint64(f * slot)) & self.mask for f in range(self.params.fields_per_prime)]
        return np.stack(fields, axis=1).reshape(-1)

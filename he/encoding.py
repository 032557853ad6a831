"""Quantize, weight and pack a model update into integer fields, and decode their sum.

A hospital with ``k`` examples has FedAvg weight ``w = k / max_samples_per_party``. Each value
``v`` is clipped to ``[-clip, clip]`` (the preset's clip, or a round's narrower one that the server
picks from the previous aggregate, so that quantization bins follow the shrinking updates) and
becomes ``z = round(w*v/clip * H)`` with ``H = 2^(b-1)-1``,
stored offset as ``u = z + H`` in ``[0, 2^b - 2]``; one more value carries ``w`` itself. Fields of
``b + ceil(log2 max_parties)`` bits are packed several per 60-bit residue (BatchCrypt, USENIX
ATC 2020), so the sum of up to ``max_parties`` updates never carries into a neighbour. The sum
decodes to ``sum_k w_k v_k / sum_k w_k``: FedAvg, computed by adding integers only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from he.errors import EncodingError
from he.params import HEParams


@dataclass(frozen=True)
class UpdateLayout:
    """Shapes of the arrays of a model update, in order (public: the model architecture)."""

    shapes: tuple[tuple[int, ...], ...]
    clip: float

    @classmethod
    def of(cls, arrays: list[np.ndarray], clip: float) -> UpdateLayout:
        return cls(tuple(tuple(int(d) for d in np.shape(a)) for a in arrays), float(clip))

    @property
    def num_values(self) -> int:
        return int(sum(np.prod(s, dtype=np.int64) for s in self.shapes))

    def to_json(self) -> dict:
        return {"shapes": [list(s) for s in self.shapes], "clip": self.clip}

    @classmethod
    def from_json(cls, layout: dict) -> UpdateLayout:
        result = cls(tuple(tuple(int(d) for d in s) for s in layout["shapes"]), float(layout["clip"]))
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

    def num_ciphertexts(self, layout: UpdateLayout) -> int:
        return -(-(layout.num_values + 1) // self.params.values_per_ciphertext)

    def encode(
        self, arrays: list[np.ndarray], num_examples: int, rng: np.random.Generator, clip: float | None = None
    ) -> EncodedUpdate:
        """Quantize and pack; ``rng`` drives stochastic rounding (pass an OS-seeded one).

        ``clip`` (default: the preset's) may only narrow the preset's range.
        """
        values = self._validated_values(arrays, num_examples)
        p = self.params
        clip = p.clip if clip is None else float(clip)
        if not 0 < clip <= p.clip:
            raise EncodingError(f"clip must be in (0, {p.clip}] (the preset's clip), got {clip}")
        weight = num_examples / p.max_samples_per_party
        clipped = int(np.count_nonzero(np.abs(values) > clip))
        scaled = np.append(np.clip(values, -clip, clip) * (weight / clip), weight)
        scaled *= self.half_range
        if p.stochastic_rounding:
            quantized = np.floor(scaled + rng.random(scaled.shape))
        else:
            quantized = np.rint(scaled)
        offset = np.clip(quantized, -self.half_range, self.half_range).astype(np.int64) + self.half_range
        layout = UpdateLayout.of(arrays, clip)
        return EncodedUpdate(self._pack(offset.astype(np.uint64), layout), layout, clipped)

    def decode(
        self, field_sums: np.ndarray, layout: UpdateLayout, num_contributors: int
    ) -> tuple[list[np.ndarray], float]:
        """Weighted average of the contributors' updates, and their total example count."""
        unpacked = self._unpack(field_sums)[: layout.num_values + 1]
        centered = unpacked.astype(np.int64) - num_contributors * self.half_range
        total_weight = centered[-1] / self.half_range
        if total_weight <= 0:
            raise EncodingError(
                f"decoded total weight {total_weight} is not positive: the sum is not a sum of "
                f"{num_contributors} valid updates"
            )
        average = centered[:-1].astype(np.float64) * (layout.clip / self.half_range) / total_weight
        arrays, start = [], 0
        for shape in layout.shapes:
            size = int(np.prod(shape, dtype=np.int64))
            arrays.append(average[start : start + size].reshape(shape))
            start += size
        return arrays, total_weight * self.params.max_samples_per_party

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
        if not 1 <= num_examples <= self.params.max_samples_per_party:
            raise EncodingError(
                f"num_examples={num_examples} is outside [1, {self.params.max_samples_per_party}] "
                f"(the preset's max_samples_per_party)"
            )
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

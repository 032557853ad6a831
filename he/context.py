"""The SEAL context of a parameter set, and SEAL's NTTs applied to numpy arrays.

Polynomials are ``uint64`` arrays ``[L, N]`` (RNS prime, coefficient); batches are
``[m, L, N]``. NTTs are SEAL's own (``util.ntt_negacyclic_harvey`` and its inverse, one prime
row per call, in memory), never our code: no polynomial, secret or not, passes through a file.
"""

from __future__ import annotations

import copy
import hashlib
import importlib

import numpy as np
import tenseal.sealapi as seal

from he.params import HEParams


def seal_util():
    """SEAL's ``util`` namespace (samplers, NTT tables), which ``tenseal.sealapi`` hides."""
    try:
        return importlib.import_module("_sealapi_cpp").util
    except ModuleNotFoundError:
        return importlib.import_module("tenseal.sealapi._sealapi_cpp").util


class HEContext:
    """SEAL objects for one ``HEParams``; holds no key material."""

    def __init__(self, params: HEParams) -> None:
        self.params = params
        n = params.poly_modulus_degree
        self.seal_parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        self.seal_parms.set_poly_modulus_degree(n)
        self.seal_parms.set_coeff_modulus(seal.CoeffModulus.Create(n, list(params.coeff_modulus_bits)))
        level = seal.SEC_LEVEL_TYPE.NONE if params.insecure_for_tests else seal.SEC_LEVEL_TYPE.TC128
        self.seal = seal.SEALContext(self.seal_parms, True, level)
        if not self.seal.parameters_set():
            raise ValueError(
                f"{params.name}: SEAL rejects the parameters: {self.seal.parameters_error_message()}"
            )
        self.key_moduli = np.array([m.value() for m in self.seal_parms.coeff_modulus()], np.uint64)
        self.data_moduli = self.key_moduli[:-1]
        self.num_payload = len(params.payload_prime_bits)
        self.payload_moduli = self.data_moduli[: self.num_payload]
        self.noise_moduli = self.data_moduli[self.num_payload :]
        self.fingerprint = hashlib.sha256(repr((params, self.key_moduli.tolist())).encode()).digest()[:16]
        # Keep SEAL's owning pointers: a table taken out with .get() dangles once they are freed.
        self._ntt_tables = [
            seal_util().CreateNTTTables(n.bit_length() - 1, [q]) for q in self.seal_parms.coeff_modulus()[:-1]
        ]

    def bound(self, binding: bytes) -> HEContext:
        """This context with frames bound to ``binding`` (a run id): the 16-byte fingerprint in
        every wire frame then covers the parameters and the run, so a ciphertext, share or dealt
        share from another run or federation is refused when parsed, naming its sender."""
        view = copy.copy(self)
        view.fingerprint = hashlib.sha256(self.fingerprint + binding).digest()[:16]
        return view

    @property
    def n(self) -> int:
        return self.params.poly_modulus_degree

    # -- NTT through SEAL, in memory -----------------------------------------------------------
    def ntt(self, polys: np.ndarray) -> np.ndarray:
        """Forward negacyclic NTT of data-level polynomials ``[m, L, N]``."""
        return self._transform(polys, seal_util().ntt_negacyclic_harvey)

    def intt(self, polys: np.ndarray) -> np.ndarray:
        """Inverse NTT of data-level polynomials ``[m, L, N]``."""
        return self._transform(polys, seal_util().inverse_ntt_negacyclic_harvey)

    def _transform(self, polys: np.ndarray, transform) -> np.ndarray:
        flat = polys.reshape(-1, *polys.shape[-2:])
        out = np.empty_like(flat)
        for poly, result in zip(flat, out, strict=True):
            for row, table in enumerate(self._ntt_tables):
                result[row] = transform(poly[row].tolist(), table.get())
        return (out % self.data_moduli.reshape(-1, 1)).reshape(polys.shape)  # Harvey: may be in [q, 2q)

"""The SEAL context of a parameter set, and SEAL's NTTs applied to numpy arrays.

Polynomials are ``uint64`` arrays ``[L, N]`` (RNS prime, coefficient); batches are
``[m, L, N]``. NTTs go through SEAL (``Evaluator.transform_*_ntt`` on up to 16 polynomials per
call, packed as one SEAL ciphertext), never through our own code.
"""

from __future__ import annotations

import hashlib
import importlib

import numpy as np
import tenseal.sealapi as seal

from he.params import HEParams
from he.seal_blob import BlobFile, PolyBlob, build_poly_blob, parse_poly_blob

SEAL_MAX_POLYS_PER_CIPHERTEXT = 16


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
        self.data_parms_id = tuple(self.seal.first_parms_id())
        self.evaluator = seal.Evaluator(self.seal)
        self.fingerprint = hashlib.sha256(repr((params, self.key_moduli.tolist())).encode()).digest()[:16]
        self._scratch = BlobFile()

    @property
    def n(self) -> int:
        return self.params.poly_modulus_degree

    # -- NTT through SEAL -------------------------------------------------------------------
    def ntt(self, polys: np.ndarray) -> np.ndarray:
        """Forward negacyclic NTT of data-level polynomials ``[m, L, N]``."""
        return self._transform(polys, to_ntt=True)

    def intt(self, polys: np.ndarray) -> np.ndarray:
        """Inverse NTT of data-level polynomials ``[m, L, N]``."""
        return self._transform(polys, to_ntt=False)

    def _transform(self, polys: np.ndarray, *, to_ntt: bool) -> np.ndarray:
        out = np.empty_like(polys)
        step = SEAL_MAX_POLYS_PER_CIPHERTEXT
        for start in range(0, len(polys), step):
            chunk = polys[start : start + step]
            if len(chunk) == 1:  # SEAL refuses "transparent" (one-poly-like) ciphertexts
                chunk = np.concatenate([chunk, np.ones_like(chunk)])
            ct = seal.Ciphertext()
            blob = PolyBlob(self.data_parms_id, not to_ntt, chunk)
            ct.load(self.seal, self._scratch.write(build_poly_blob(blob)))
            if to_ntt:
                self.evaluator.transform_to_ntt_inplace(ct)
            else:
                self.evaluator.transform_from_ntt_inplace(ct)
            ct.save(self._scratch.path)
            result = parse_poly_blob(self._scratch.read()).polys
            out[start : start + step] = result[: len(polys[start : start + step])]
        return out

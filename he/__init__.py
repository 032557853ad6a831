"""Threshold CKKS for federated aggregation: numpy arrays and bytes in and out, no Flower, no torch."""

from he.ciphertext import CiphertextSum, EncryptedUpdate, UpdateEncryptor
from he.context import HEContext
from he.decrypt import DecryptionShare, combine, decrypt_update, gen_decryption_share
from he.errors import (
    CiphertextError,
    EncodingError,
    HEError,
    InsecureParametersError,
    NotEnoughPartiesError,
    ShareMismatchError,
)
from he.keygen import PublicKeyShare, SecretKeyShare
from he.params import PRESETS, HEParams, preset

__all__ = [
    "PRESETS",
    "CiphertextError",
    "CiphertextSum",
    "DecryptionShare",
    "EncodingError",
    "EncryptedUpdate",
    "HEContext",
    "HEError",
    "HEParams",
    "InsecureParametersError",
    "NotEnoughPartiesError",
    "PublicKeyShare",
    "SecretKeyShare",
    "ShareMismatchError",
    "UpdateEncryptor",
    "combine",
    "decrypt_update",
    "gen_decryption_share",
    "preset",
]

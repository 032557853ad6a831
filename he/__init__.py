"""Threshold CKKS for federated aggregation: numpy arrays and bytes in and out, no Flower, no torch."""

from he.ciphertext import CiphertextLabel, CiphertextSum, EncryptedUpdate, SecretKeyEncryptor, seeded_c1
from he.context import HEContext
from he.decrypt import DecryptionRequest, DecryptionShare, combine, decrypt_update, gen_decryption_share
from he.errors import (
    CiphertextError,
    EncodingError,
    HEError,
    InsecureParametersError,
    NotEnoughPartiesError,
    RosterError,
    ShareMismatchError,
    SignatureError,
)
from he.keygen import SecretKeyShare
from he.params import PRESETS, HEParams, preset
from he.roster import Quorum, Roster

__all__ = [
    "PRESETS",
    "CiphertextError",
    "CiphertextLabel",
    "CiphertextSum",
    "DecryptionRequest",
    "DecryptionShare",
    "EncodingError",
    "EncryptedUpdate",
    "HEContext",
    "HEError",
    "HEParams",
    "InsecureParametersError",
    "NotEnoughPartiesError",
    "Quorum",
    "Roster",
    "RosterError",
    "SecretKeyEncryptor",
    "SecretKeyShare",
    "ShareMismatchError",
    "SignatureError",
    "combine",
    "decrypt_update",
    "gen_decryption_share",
    "preset",
    "seeded_c1",
]

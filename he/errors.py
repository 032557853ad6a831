"""Typed errors of the threshold-HE layer; each message names the input and what was expected."""


class HEError(Exception):
    """Base class of every error raised by ``he``."""


class InsecureParametersError(HEError, ValueError):
    """Parameters below 128-bit security, with too little noise flooding, or that could overflow."""


class CiphertextError(HEError, ValueError):
    """A ciphertext or share is malformed, corrupt, or made under other parameters or keys."""


class ShareMismatchError(HEError, ValueError):
    """Shares that cannot be combined: other run, round, parameters or party set."""


class NotEnoughPartiesError(HEError, ValueError):
    """Fewer parties than the threshold (or the minimum) took part."""


class EncodingError(HEError, ValueError):
    """An update that cannot be encoded: wrong shapes, NaN/Inf, or weights outside the range."""


class SignatureError(HEError, ValueError):
    """A signed message whose signature, signer or content does not check out against the roster."""


class RosterError(HEError, ValueError):
    """A roster that is malformed, or a request that contradicts the pinned roster."""

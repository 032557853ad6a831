"""What a hospital tells the coordinator when it cannot answer a message, and what it keeps.

Flower sends the text of any exception escaping a ClientApp to the coordinator, so an error
deep in the data stack would hand over the hospital's file paths, label values or data values.
``error_boundary_mod`` (a Flower client mod, placed inside ``audit_mod`` so the audit line
records what was sent) lets only two kinds of text leave:

* refusals written to be sent (``client.refusals``: ``RefusedRequest`` and its subclasses, such as
  ``PolicyRefusal``), unchanged;
* a :class:`RequestError` built from the request alone: its message type, the protocol's
  config keys or blob names the failure mentions, and the form the hospital expects. A data
  file that does not fit the run's dataset settings (``client.data.HospitalDataError``) gets
  one generic reason.

The full exception goes only to the hospital's own log.
"""

from __future__ import annotations

import logging
import sys

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from client.identity import IdentityError, own_name
from client.refusals import RefusedRequest
from common import protocol as p
from common.sender_name import with_sender
from he.errors import HEError

log = logging.getLogger(__name__)

PROTOCOL_NAMES = frozenset(
    value for name, value in vars(p).items() if name.isupper() and isinstance(value, str) and value
)
EXPECTED_FORM = {
    p.HELLO: "config: the run's task settings, roster-fingerprint and he-preset",
    p.DEAL: "blobs hello-<party> of the roster's hospitals",
    p.DEALINGS: "blobs sealed-share-<dealer> and dealing-<dealer>",
    p.STATISTICS: "config: statistics-pass ('moments' or 'spread'), server-round, weight-scale, "
    "and for 'spread' feature-mean and feature-scale lists of one number per feature; the first "
    "with with-dealings and the blobs of query.dealings",
    p.TRAIN: "arrays: the global model; config: server-round, clip, weight-scale, party, "
    "feature-mean and feature-std, and the run's task settings",
    p.DECRYPT: "config: kind, server-round, attempt, keyholders (comma-separated party numbers); "
    "blobs contribution-<party>",
    p.EVALUATE: "arrays: the final model; config: server-round and the run's task settings",
}
DATA_MISMATCH = (
    "this hospital's data does not match the run's dataset settings (task / dataset.classes / "
    "target columns / features); see the hospital's log"
)


class RequestError(RuntimeError):
    """A message this hospital could not answer; the text names only what the request held."""


class InvalidRequest(RequestError):
    """The request's message type, config or blobs are not of the form the hospital expects."""


class DataMismatch(RequestError):
    """The hospital's data file does not fit the run's dataset settings (details in its log)."""


class HospitalIdentityRefusal(RequestError, RefusedRequest):
    """The run's roster is not the one this hospital pinned, or its own roster or key is unusable."""


def is_data_mismatch(error: Exception) -> bool:
    """Whether ``error`` is a ``client.data.HospitalDataError``. That module imports torch (seconds
    per message in deployment), so it is looked up only if a handler loaded it; if none did, no
    error can come from it."""
    data = sys.modules.get("client.data")
    return data is not None and isinstance(error, data.HospitalDataError)


def request_names(message: Message) -> list[str]:
    """The request's config keys and blob names that are protocol names, e.g. ``contribution-3``
    (no other name is echoed: a probe such as a guessed label value must not come back)."""
    names = [key for record in message.content.config_records.values() for key in record]
    blobs = message.content.array_records.get(p.BLOBS)
    names += [] if blobs is None else list(blobs)
    return [name for name in names if name.rstrip("0123456789").rstrip("-") in PROTOCOL_NAMES]


def safe_error(message: Message, error: Exception) -> RequestError:
    """The typed error to send for ``error``, built from the request and the protocol's names (of
    ``error``'s text only which of those names it quotes)."""
    message_type = message.metadata.message_type
    if is_data_mismatch(error):
        return DataMismatch(f"{message_type}: {DATA_MISMATCH}")
    if isinstance(error, IdentityError):
        return HospitalIdentityRefusal(
            f"{message_type}: refused by this hospital's identity check (the run's roster-fingerprint "
            "is not the roster it pinned, or its roster or signing key is unusable); see the hospital's log"
        )
    detail = str(error)
    named = sorted({name for name in PROTOCOL_NAMES.union(request_names(message)) if f"'{name}'" in detail})
    about = f" about {', '.join(repr(name) for name in named[:5])}" if named else ""
    kind = "the request is malformed"
    if isinstance(error, HEError):
        kind = "a blob or value failed the encryption protocol's checks"
    return InvalidRequest(
        f"{message_type}: {kind} ({type(error).__name__}{about}); expected "
        f"{EXPECTED_FORM.get(message_type, 'a message type this hospital answers')}; see the hospital's log"
    )


def error_boundary_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower client mod: any exception but a refusal leaves as a :class:`RequestError` whose text
    names only the request; the original goes to the hospital's log. Either text starts with
    the hospital's name (``common.sender_name``)."""
    name = own_name(context.node_config)
    try:
        return call_next(message, context)
    except (RefusedRequest, RequestError) as refusal:
        refusal.args = (with_sender(name, str(refusal)),)
        raise
    except Exception as error:
        safe = safe_error(message, error)
        log.warning("%s answered with %s: %s", message.metadata.message_type, safe, error, exc_info=True)
        safe.args = (with_sender(name, str(safe)),)
        raise safe from None


class HospitalClientApp(ClientApp):
    """Flower's ClientApp, refusing an unknown message type with a typed error: Flower raises a
    bare ``ValueError`` for it before any mod runs."""

    def __call__(self, message: Message, context: Context) -> Message:
        message_type = message.metadata.message_type
        if message_type not in EXPECTED_FORM:
            raise InvalidRequest(
                f"message type {message_type[:60]!r}: expected one of {', '.join(sorted(EXPECTED_FORM))}"
            )
        return super().__call__(message, context)

"""Byte blobs in Flower records, written and read the same way by the hospital and the server."""

from __future__ import annotations

from flwr.app import Array, Message

from common import protocol as p


def blob_array(data: bytes) -> Array:
    return Array(dtype="uint8", shape=(len(data),), stype="raw-bytes", data=data)


def blobs_of(message: Message) -> dict[str, bytes]:
    record = message.content.array_records.get(p.BLOBS)
    return {} if record is None else {name: bytes(array.data) for name, array in record.items()}

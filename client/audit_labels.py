"""One audit line in plain words: which step of the run it was and what left the hospital.

The audit log (``client.audit``) records protocol ids: message types such as ``query.deal``,
group ids such as ``train-11-1`` (the decryption of round 11's pooled sum, attempt 1) and the
statistics passes' negative round ids (``common.protocol.STATISTICS_PASS_ROUNDS``). A data
protection officer needs "training round 3", "final evaluation" and "feature statistics:
means" instead, and needs every item that left the site sorted into encrypted, protocol data
the coordinator reads by design (signed statements, versions), and values in the clear. Both
the text summary and the HTML report read these words from here, so they cannot disagree.

The final evaluation is encrypted under the round after the last training round, so its
decryption is labelled from the ``evaluate`` request of the same run (its round id); a run
whose ``evaluate`` line is missing labels that decryption by its round id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from common import protocol as p

# what the server asked for, by message type
REQUESTS = {
    p.HELLO: "introduce itself (keys)",
    p.DEAL: "deal its run key",
    p.DEALINGS: "accept dealt key shares",
    p.STATISTICS: "compute local statistics",
    p.TRAIN: "test and train locally",
    p.DECRYPT: "decrypt a pooled sum",
    p.EVALUATE: "test the final model",
}
SETUP_TYPES = (p.HELLO, p.DEAL, p.DEALINGS)
PASS_WORDS = {"moments": "means", "spread": "spread"}  # common.protocol.STATISTICS_PASS_ROUNDS' keys

# sent blobs (record ``blobs``) by name, without a trailing party number ("sealed-share-3"):
# encrypted, or protocol data the coordinator can read by design (public keys, digests, versions)
ENCRYPTED, PROTOCOL, UNRECOGNISED = "encrypted", "protocol", "unrecognised"
BLOB_KINDS = {
    p.UPDATE: (ENCRYPTED, "ciphertext"),
    p.SEALED_SHARE: (ENCRYPTED, "sealed key share"),
    p.DECRYPTION_SHARE: (ENCRYPTED, "decryption share"),
    p.CHECK_SHARE: (ENCRYPTED, "decryption share (share check)"),
    p.HELLO_BLOB: (PROTOCOL, "signed statement"),
    p.CONTRIBUTION: (PROTOCOL, "signed statement"),
    p.DEALING: (PROTOCOL, "signed statement"),
    p.COMPLAINTS: (PROTOCOL, "complaint list"),
    p.PUBLIC_KEY_SHARE: (PROTOCOL, "public-key share (share check)"),
    p.CHECK_COMMITMENT: (PROTOCOL, "digest (share check)"),
    p.SOFTWARE: (PROTOCOL, "software versions"),
}
# metrics that say how the exchange went, not what the data are
TIMINGS = frozenset({"encrypt_seconds", "decrypt_seconds"})
FLAGS = frozenset({"ready", "tabular"})
SIZES = frozenset({p.NUM_EXAMPLES})
NUMBER_BYTES = 8  # a metric or config number travels as a 64-bit value

# what the hospital sent in the clear, by kind (the bottom line lists them in this order)
OWN_RESULTS = "this hospital's own results"
MODEL_VALUES = "model values"
STATISTICS_VALUES = "this hospital's feature statistics"
TEST_SUMS = "this hospital's test-set sums"
DATA_SIZE = "this hospital's training-set size"
OTHER_VALUES = "other values"
TIMINGS_AND_FLAGS = "timings and status flags"
ARRAY_KINDS = frozenset({MODEL_VALUES, STATISTICS_VALUES, TEST_SUMS})  # whole arrays, not named numbers
CLEAR_ORDER = (
    OWN_RESULTS,
    MODEL_VALUES,
    STATISTICS_VALUES,
    TEST_SUMS,
    DATA_SIZE,
    OTHER_VALUES,
    TIMINGS_AND_FLAGS,
)

_GROUP = re.compile(r"^(train|statistics)-(-?\d+)-(\d+)$")  # strategies.reveal decryptions
_PARTY_SUFFIX = re.compile(r"-\d+$")


def request_config(entry: dict) -> dict:
    """The values the server sent with this message (all config records merged)."""
    records = (entry.get("received") or {}).get("config") or {}
    return {k: v for record in records.values() if isinstance(record, dict) for k, v in record.items()}


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def statistics_label(round_id: int | None) -> str:
    """``feature statistics: means`` for the first pass's round id, and so on."""
    for pass_name, rounds in p.STATISTICS_PASS_ROUNDS.items():
        if round_id in rounds:
            words = PASS_WORDS.get(pass_name, pass_name)
            again = ", again at a larger scale" if round_id == p.MOMENTS_RESCALED_ROUND else ""
            return f"feature statistics: {words}{again}"
    return f"feature statistics (round id {round_id})"


def final_round_of(entries: list[dict]) -> int | None:
    """The round id of a run's final evaluation: that of its ``evaluate`` request."""
    for entry in entries:
        if entry.get("message_type") == p.EVALUATE:
            round_id = _int(request_config(entry).get(p.ROUND))
            if round_id is not None:
                return round_id
    return None


def step_label(entry: dict, final_round: int | None) -> str:
    """Which step of the run this line was: ``set-up``, ``training round 3``, ``final evaluation``,
    ``feature statistics: spread``; a decryption's retry adds ``, attempt 2``."""
    kind = entry.get("message_type")
    config = request_config(entry)
    round_id = _int(config.get(p.ROUND))
    if kind in SETUP_TYPES:
        return "set-up"
    if kind == p.STATISTICS:
        return statistics_label(round_id)
    if kind == p.EVALUATE:
        return "final evaluation"
    if kind == p.TRAIN:
        group = str(entry.get("group_id", ""))
        round_id = round_id if round_id is not None else (int(group) if group.isdigit() else None)
        return f"training round {round_id if round_id is not None else '?'}"
    if kind == p.DECRYPT:
        what, attempt = config.get(p.KIND), _int(config.get(p.ATTEMPT))
        match = _GROUP.match(str(entry.get("group_id", "")))
        if match and (what is None or round_id is None):
            what, round_id, attempt = match.group(1), int(match.group(2)), int(match.group(3))
        if what == "statistics":
            label = statistics_label(round_id)
        elif round_id is not None and round_id == final_round:
            label = "final evaluation"
        else:
            label = f"training round {round_id if round_id is not None else '?'}"
        return label + (f", attempt {attempt}" if attempt is not None and attempt > 1 else "")
    return f"{kind} ({entry.get('group_id', '')})"


def request_words(entry: dict) -> str:
    kind = str(entry.get("message_type"))
    return REQUESTS.get(kind, f"{kind} (not a known request)")


def value_bytes(value) -> int:
    """The size of one value sent in the clear: bytes as logged, numbers at ``NUMBER_BYTES`` each
    (a list of more than ``client.audit.MAX_LISTED_VALUES`` is logged as its length and digest)."""
    if isinstance(value, dict) and isinstance(value.get("bytes"), int):
        return value["bytes"]
    if isinstance(value, dict) and isinstance(value.get("values"), int):
        return value["values"] * NUMBER_BYTES
    if isinstance(value, list):
        return sum(value_bytes(v) for v in value)
    return NUMBER_BYTES


@dataclass
class Sent:
    """What one reply carried: every encrypted or signed item with its size, and what went in the
    clear by kind (``CLEAR_ORDER``), with the names of the values and their size."""

    items: list[tuple[str, str, int]] = field(default_factory=list)  # (group, words, bytes)
    clear: dict[str, set[str]] = field(default_factory=dict)
    clear_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(size for _, _, size in self.items) + sum(self.clear_bytes.values())

    def add_clear(self, kind: str, name: str, size: int) -> None:
        self.clear.setdefault(kind, set()).add(name)
        self.clear_bytes[kind] = self.clear_bytes.get(kind, 0) + size

    def unrecognised(self) -> list[str]:
        return sorted({words for group, words, _ in self.items if group == UNRECOGNISED})

    def bytes_of(self, group: str) -> int:
        return sum(size for g, _, size in self.items if g == group)

    def words(self) -> str:
        """``ciphertext, signed statement; IN THE CLEAR: timings and status flags``."""
        counts: dict[str, int] = {}
        for group, words, _ in self.items:
            if group != UNRECOGNISED:
                counts[words] = counts.get(words, 0) + 1
        parts = [", ".join(f"{w} ({n})" if n > 1 else w for w, n in counts.items())]
        if self.clear:
            parts.append("IN THE CLEAR: " + ", ".join(k for k in CLEAR_ORDER if k in self.clear))
        if self.unrecognised():
            parts.append("NOT RECOGNISED: " + ", ".join(self.unrecognised()))
        return "; ".join(part for part in parts if part) or "nothing"


def describe_sent(entry: dict) -> Sent:
    """Sort everything the line's ``sent`` part lists (``client.audit.describe_sent``)."""
    sent = entry.get("sent") or {}
    kind = entry.get("message_type")
    out = Sent()
    for array in sent.get("arrays") or []:
        record, name, size = array.get("record"), str(array.get("name", "")), int(array.get("bytes", 0))
        if record == p.BLOBS:
            group, words = BLOB_KINDS.get(_PARTY_SUFFIX.sub("", name), (UNRECOGNISED, name))
            out.items.append((group, words, size))
        elif record == p.EVALUATION:
            out.add_clear(TEST_SUMS, "evaluation sums", size)
        elif record == p.ARRAYS and kind == p.STATISTICS:
            out.add_clear(STATISTICS_VALUES, "feature statistics", size)
        else:  # the plaintext update of a plaintext run, or any other array record
            out.add_clear(MODEL_VALUES, f"{record}/{name}", size)
    for section in ("metrics", "config"):
        for record in (sent.get(section) or {}).values():
            for name, value in (record or {}).items():
                out.add_clear(clear_kind(name), name, value_bytes(value))
    return out


def clear_kind(name: str) -> str:
    """The kind of a number sent in the clear (a metric or config value), by its name."""
    if name in TIMINGS or name in FLAGS:
        return TIMINGS_AND_FLAGS
    if name in SIZES:
        return DATA_SIZE
    if name.startswith(("eval_", "train_")) or name == "clipped_values":
        return OWN_RESULTS
    return OTHER_VALUES

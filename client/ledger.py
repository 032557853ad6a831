"""The hospital's release ledger: every disclosure it took part in, across all runs (append-only).

A hospital decides what leaves it by its own records, not by the coordinator's word. The ledger
lives at ``<state-dir>/ledger.jsonl`` (mode 0600, next to the audit log) and survives restarts
and runs. Each line is one JSON record, chained to the line before it by a SHA-256 digest
(``prev``), so a line edited, removed or reordered by hand is detected when the ledger is read
and the hospital refuses to act on it (fail closed: a ledger it cannot trust cannot stop a
difference attack).

Two kinds of record:

* ``release`` -- a keyholder answered a decryption: the release key (what was decrypted: the
  hash of the starting model a training round or evaluation started from, or a statistics
  pass), the contributor set by roster name, the run and the round. A keyholder answers one
  contributor set per release key, in this run and every later one (``client.keyholder``).
* ``dp`` -- a contributor spent privacy budget: the run, round, mechanism, its epsilon so far in
  that run (cumulative within a run) and delta. The lifetime spend is the sum over runs of each
  run's last epsilon (basic composition across runs).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from pathlib import Path

LEDGER_FILE = "ledger.jsonl"
FILE_MODE = 0o600
GENESIS = "0" * 64
RELEASE = "release"
DP = "dp"


class LedgerError(RuntimeError):
    """The ledger cannot be read or written, or its chain is broken; the hospital refuses to act."""


class ReleaseConflict(LedgerError):
    """The release key was already released for another contributor set."""


def _digest(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


class ReleaseLedger:
    """An append-only, hash-chained JSON-lines file (module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def in_state_dir(cls, state_dir: str | Path) -> ReleaseLedger:
        return cls(Path(state_dir) / LEDGER_FILE)

    # -- reading ---------------------------------------------------------------------------------
    def records(self, kind: str | None = None) -> list[dict]:
        """Every record (of ``kind``), after checking the whole chain."""
        records, _ = self._read()
        return [r for r in records if kind is None or r.get("type") == kind]

    def _read(self) -> tuple[list[dict], str]:
        if not self.path.exists():
            return [], GENESIS
        try:
            lines = self.path.read_bytes().splitlines()
        except OSError as err:
            raise LedgerError(
                f"release ledger {self.path.name} in the state dir cannot be read ({err.strerror})"
            ) from None
        records, prev = [], GENESIS
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except ValueError:
                raise LedgerError(
                    f"release ledger {self.path.name} in the state dir: line {number} is not JSON"
                ) from None
            if not isinstance(record, dict) or record.get("prev") != prev:
                raise LedgerError(
                    f"release ledger {self.path.name} in the state dir: line {number} does not chain to "
                    "the line before it (edited, removed or reordered); refusing to act on a ledger that "
                    "was altered"
                )
            records.append(record)
            prev = _digest(line)
        return records, prev

    def contributors_of(self, release_key: str) -> list[str] | None:
        """The contributor set this hospital already released ``release_key`` for, or None."""
        for record in self.records(RELEASE):
            if record.get("release_key") == release_key:
                return list(record["contributors"])
        return None

    def epsilon_spent(self) -> float:
        """Lifetime epsilon: the sum over runs of each run's last (cumulative) epsilon."""
        per_run: dict[str, float] = {}
        for record in self.records(DP):
            per_run[str(record["run"])] = float(record["epsilon"])
        return sum(per_run.values())

    # -- writing ---------------------------------------------------------------------------------
    def append(self, record: dict) -> dict:
        """Append ``record`` (a ``type`` and JSON values), chained and timestamped; fsync'd before
        returning, so nothing is released that the ledger does not hold."""
        return self._append(record, lambda records: True)

    def claim_release(self, release_key: str, contributors: list[str], **details) -> None:
        """Record that this hospital releases ``release_key`` for ``contributors`` (roster names),
        unless it already did: the same set again is a no-op, another set is a ``ReleaseConflict``.
        The check and the append hold one file lock, so two processes cannot both claim a key."""
        wanted = sorted(contributors)

        def is_new(records: list[dict]) -> bool:
            for held in records:
                if held.get("type") == RELEASE and held.get("release_key") == release_key:
                    if sorted(held.get("contributors", [])) != wanted:
                        raise ReleaseConflict(
                            f"release {release_key} was already released for another contributor set "
                            f"(run {held.get('run')}, round {held.get('round')}); one set per release"
                        )
                    return False
            return True

        self._append({"type": RELEASE, "release_key": release_key, "contributors": wanted, **details}, is_new)

    def _append(self, record: dict, condition) -> dict:
        if record.get("type") not in (RELEASE, DP):
            raise ValueError(f"ledger record type must be {RELEASE!r} or {DP!r}, got {record.get('type')!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
        except OSError as err:
            raise LedgerError(
                f"release ledger {self.path.name} in the state dir cannot be opened ({err.strerror})"
            ) from None
        try:
            if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
            fcntl.flock(fd, fcntl.LOCK_EX)
            records, prev = self._read()
            if not condition(records):
                return {}
            full = {**record, "ts": round(time.time(), 3), "prev": prev}
            os.write(fd, json.dumps(full, sort_keys=True).encode() + b"\n")
            os.fsync(fd)
            return full
        finally:
            os.close(fd)


__all__ = ["DP", "LEDGER_FILE", "RELEASE", "LedgerError", "ReleaseConflict", "ReleaseLedger"]

"""What the head-to-head benchmark measures per arm (``experiments.bench_arms``): the bytes of every
message down and up and the start of each round (``MeteredGrid``, the same accounting for every
arm), the time budget, and the peak RSS of the server and its Ray hospital workers; ``ArmResult``
holds it all. Kept apart from running the arms so the accounting reads in one place."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid


def value_bytes(value: object) -> int:
    if isinstance(value, bytes | str):
        return len(value)
    if isinstance(value, list):
        return sum(value_bytes(v) for v in value)
    return 1 if isinstance(value, bool) else 8


def content_bytes(content: RecordDict) -> int:
    """A message's payload size: array bytes, and config/metric values (bytes, str, numbers)."""
    size = 0
    for record in content.values():
        if isinstance(record, ArrayRecord):
            size += sum(len(a.data) for a in record.values())
        else:
            size += sum(value_bytes(v) for v in record.values())
    return size


@dataclass
class ArmResult:
    """What one arm measured (written as JSON; a stopped arm leaves the rounds it reached)."""

    arm: str
    hospitals: int
    num_rounds: int
    started: float = field(default_factory=time.perf_counter)
    round_starts: dict[int, float] = field(default_factory=dict)  # round -> s since measuring began
    bytes_down: dict[int, int] = field(default_factory=dict)  # round (0: set-up) -> bytes, all hospitals
    bytes_up: dict[int, int] = field(default_factory=dict)
    final: dict = field(default_factory=dict)  # eval_accuracy, eval_auc
    crypto: dict = field(default_factory=dict)  # our encrypted arms: median crypto seconds per round
    server_peak_rss: int = 0
    hospital_peak_rss: int = 0
    seconds: float = float("nan")
    error: str = ""
    done: bool = False

    @property
    def round(self) -> int:
        return max(self.round_starts, default=0)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "started"}


class BudgetExceededError(RuntimeError):
    """The arm ran past its time budget (checked whenever it sends)."""


class ForwardingGrid(Grid):
    """A Grid that hands everything to ``inner``: subclasses override only what they observe."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.inner.send_and_receive(messages, timeout=timeout)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def create_message(self, *args, **kwargs) -> Message:
        return self.inner.create_message(*args, **kwargs)

    def set_run(self, run) -> None:
        self.inner.set_run(run)

    @property
    def run(self):
        return self.inner.run


class MeteredGrid(ForwardingGrid):
    """A Grid that sizes every message, marks the start of each round and enforces a budget.

    A round starts with its first ``train`` message; its number is the message's group id
    (our strategies, SecAgg+) or its config's ``server-round`` (Flower's FedAvg).
    """

    def __init__(self, inner: Grid, result: ArmResult, budget: float, on_round: Callable[[], None]) -> None:
        super().__init__(inner)
        self.result, self.budget, self.on_round = result, budget, on_round

    @staticmethod
    def round_of(message: Message) -> int | None:
        meta = message.metadata
        if meta.message_type != "train":
            return None
        if meta.group_id.isdigit():
            return int(meta.group_id)
        config = message.content.config_records.get("config")
        return int(config["server-round"]) if config is not None and "server-round" in config else None

    def _count_down(self, messages: list[Message]) -> None:
        elapsed = time.perf_counter() - self.result.started
        if elapsed > self.budget:
            raise BudgetExceededError(
                f"stopped after {elapsed:.0f} s (budget {self.budget:.0f} s) in round "
                f"{self.result.round}/{self.result.num_rounds}"
            )
        for message in messages:
            number = self.round_of(message)
            if number is not None and number not in self.result.round_starts:
                self.result.round_starts[number] = elapsed
                self.on_round()
            r = self.result.round
            self.result.bytes_down[r] = self.result.bytes_down.get(r, 0) + content_bytes(message.content)

    def _count_up(self, replies: list[Message]) -> None:
        r = self.result.round
        size = sum(content_bytes(m.content) for m in replies if m.has_content())
        self.result.bytes_up[r] = self.result.bytes_up.get(r, 0) + size

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        self._count_down(messages)
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.inner.pull_messages(message_ids))
        self._count_up(replies)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        self._count_down(messages)
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        self._count_up(replies)
        return replies


# -- peak memory: the kernel's high-water mark (VmHWM), reset before each arm ---------------------
def ray_workers() -> list[int]:
    """This process's Ray worker processes (descendants named ``ray::...``): the hospitals."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - tree
        tree |= frontier
    workers = []
    for pid in tree:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::"):
                workers.append(pid)
        except OSError:
            continue
    return workers


def reset_peak_rss() -> None:
    """Reset the peak RSS of this process and its Ray workers (``clear_refs`` 5, Linux >= 4.0)."""
    for pid in [os.getpid(), *ray_workers()]:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def vm_hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss() -> tuple[int, int]:
    """(server, largest hospital worker) peak RSS in bytes since the last reset."""
    return vm_hwm(os.getpid()), max((vm_hwm(pid) for pid in ray_workers()), default=0)

"""Which keyholders decrypt, attempt by attempt, and who is suspected when a decryption fails.

Shares of a decryption set T only combine as a whole (their masks cancel only within T), so a
share that fails the noise bound cannot be pinned on its sender from one attempt. Across
attempts it is narrowed down by elimination: the next set leaves out first the keyholders that
were in the most failed sets of this decryption, then those named as suspects before, then those
that were silent before; ties are broken at random (from the run's seed), so a cheater cannot
count on a fixed order keeping it in. Every set has the quorum's minimum size: any two sets then
share at least t members (the rule the smudging budget is sized for), and each set leaves the
most keyholders out.

When an attempt succeeds its members are cleared for that decryption. The suspects are the
members of failed sets never cleared, most often failed first. A suspect is not proven guilty
(one of them tampered, or a dealer dealt one an inconsistent share): it is named, and later
decryptions leave it out first.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable


class DecryptionSets:
    """Chooses decryption sets for one federation run and keeps the record of failed sets."""

    def __init__(self, min_size: int, seed: int = 0) -> None:
        self.min_size = min_size
        self.named: Counter[int] = Counter()  # keyholder -> failed sets it was left a suspect by
        self.silences: Counter[int] = Counter()  # keyholder -> attempts it gave no valid share to
        self.failures: Counter[int] = Counter()  # of the current decryption: failed sets it was in
        self.cleared: set[int] = set()  # of the current decryption
        self._rng = random.Random(seed)

    def begin(self) -> None:
        """A new ciphertext to decrypt: its attempts start with no failed set and no one cleared."""
        self.failures, self.cleared = Counter(), set()

    def choose(self, available: Iterable[int]) -> tuple[int, ...] | None:
        """The next set: ``min_size`` available keyholders, least suspected first; None if too few."""
        candidates = sorted(available)
        if len(candidates) < self.min_size:
            return None
        ties = {k: self._rng.random() for k in candidates}
        ranked = sorted(
            candidates, key=lambda k: (self.failures[k], self.named[k], self.silences[k], ties[k])
        )
        return tuple(sorted(ranked[: self.min_size]))

    def silent(self, keyholders: Iterable[int]) -> None:
        """These members of a set gave no valid share (down, or their share was malformed)."""
        self.silences.update(keyholders)

    def failed(self, keyholders: Iterable[int]) -> None:
        """The shares of this set failed their check: one of its members is suspect."""
        self.failures.update(keyholders)

    def succeeded(self, keyholders: Iterable[int]) -> None:
        """This set decrypted within the noise bound: its members' shares were consistent."""
        self.cleared.update(keyholders)

    def suspects(self) -> list[int]:
        """Members of this decryption's failed sets not cleared by a successful one, most failed first."""
        uncleared = [k for k in self.failures if k not in self.cleared]
        return sorted(uncleared, key=lambda k: (-self.failures[k], k))

    def finish(self) -> list[int]:
        """End of a decryption: its suspects, recorded so later decryptions leave them out first."""
        suspects = self.suspects()
        self.named.update(
            {k: self.failures[k] for k in suspects}
        )  # weighted: in more failed sets, more suspect
        return suspects

"""What a hospital checks and does in DP mode before its update leaves (``client.app.train``).

The hospital computes the round's plan itself from the run's DP settings and enforces, on its
own side: the L2 clip, its noise share, weight 1 (no example count released), and — in
encrypted mode — that its pinned roster's ``min_contributors`` is at least the ``m`` the noise
shares are sized for. Keyholders refuse to decrypt any aggregate with fewer than
``min_contributors`` signed contributions, so no decrypted aggregate holds fewer than ``m``
noise shares. Whether the run's DP settings are good enough for this hospital (noise floor, ε
per run and lifetime, accounted rounds) is decided by its policy and ledger
(``client.privacy_budget``). What it cannot check (docs/privacy.md): that the other
contributors are honest and add their shares.
"""

from __future__ import annotations

from privacy.mechanism import DdgPlan


class TooFewContributors(RuntimeError):
    """The roster would let an aggregate be decrypted with fewer than m noise shares."""


def require_contributors(plan: DdgPlan, roster_min_contributors: int) -> None:
    """Refuse to contribute when keyholders would decrypt aggregates of fewer than m shares."""
    if roster_min_contributors < plan.min_contributors:
        raise TooFewContributors(
            f"the roster lets keyholders decrypt aggregates of {roster_min_contributors} contributions, "
            f"fewer than the {plan.min_contributors} whose noise shares make the DP guarantee; "
            "refusing to contribute"
        )

"""A federation for simulation: a roster and one signing key per simulated hospital, written to one
directory by the ServerApp, and the names its hospitals go by.

Not cryptography (``he/`` keeps the roster's rules and the keys); in deployment every hospital
makes its own key and the coordinator assembles the roster from the public halves
(``server.coordinator init-pilot``).
"""

from __future__ import annotations

from pathlib import Path

from he.identity import SigningKey
from he.roster import DEFAULT_COMMITTEE_SIZE, DEFAULT_MAX_ATTEMPTS, Roster


def simulated_hospital_name(partition: int) -> str:
    """Name of simulated hospital ``partition`` (0-based, Flower's ``partition-id``)."""
    return f"hospital-{partition + 1}"


def write_simulated_federation(
    directory: str | Path,
    num_hospitals: int,
    *,
    threshold: int = 0,
    min_contributors: int = 2,
    preset: str = "compact",
    committee_size: int = DEFAULT_COMMITTEE_SIZE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> Roster:
    """Simulation only: a roster and one signing key per simulated hospital in ``directory``.

    Files: ``roster.json`` and ``<hospital name>.key`` (0600). In deployment every hospital
    makes its own key and the coordinator assembles the roster from the public halves.
    """
    directory = Path(directory)
    keys = {simulated_hospital_name(i): SigningKey.generate() for i in range(num_hospitals)}
    for name, key in keys.items():
        key.save(directory / f"{name}.key")
    roster = Roster.create(
        f"simulation-{directory.name}",
        {name: key.public_bytes() for name, key in keys.items()},
        threshold=threshold,
        min_contributors=min_contributors,
        preset=preset,
        committee_size=committee_size,
        max_attempts=max_attempts,
    )
    roster.save(directory / "roster.json")
    return roster

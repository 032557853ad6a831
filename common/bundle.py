"""The top-level packages of the app bundle, read from ``pyproject.toml``'s ``fab-include``, so
that every copy of the app (tests, the deployment benchmark) carries exactly what a FAB does."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def bundle_packages(root: Path = REPO_ROOT) -> tuple[str, ...]:
    """``("common", "he", ...)``: the first path part of each ``fab-include`` pattern."""
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["fab-include"]
    return tuple(dict.fromkeys(pattern.split("/")[0] for pattern in patterns))

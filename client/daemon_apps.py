"""The daemon's app subcommands (``review``, ``approve``): a hospital sees what a submitted app
changes before it approves its hash, and only approved app code runs here (``client.launcher``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from client import approval, review
from client import node_check as check


def review_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m client.daemon review",
        description="Show what an app (FAB) adds or changes against the fedquorum installed here, "
        "its SHA-256 and the run settings it declares, before you `approve` it. Changes nothing.",
    )
    ap.add_argument("app", type=Path, help="a .fab file, or an app folder (built as `flwr build` builds it)")
    args = ap.parse_args(argv)
    try:
        found = review.review(args.app)
    except (review.ReviewError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(review.lines(found)))
    return 0


def approve_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m client.daemon approve",
        description="Approve an app (FAB) for this hospital after review: its SHA-256 goes to "
        f"<state-dir>/{approval.APPROVALS_FILE}. Apps equal to the installed code need no approval.",
    )
    ap.add_argument("app", type=Path, help="a .fab file, or an app folder (hashed as `flwr run` builds it)")
    ap.add_argument("--state-dir", type=Path, required=True, help="the daemon's state dir")
    ap.add_argument("--note", default="", help="who approved it and why (kept in the file)")
    args = ap.parse_args(argv)
    try:
        state_dir = check.check_state_dir(args.state_dir)
        digest = approval.approve(state_dir, args.app, args.note)
    except (check.NodeCheckError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"approved app sha256 {digest} in {state_dir / approval.APPROVALS_FILE}")
    return 0

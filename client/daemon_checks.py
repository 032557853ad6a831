"""The daemon's start-up checks (``validate``): every setting is checked before the SuperNode
starts, and the first error stops it with a message naming the setting. The individual checks
live in ``client.node_check``; this module decides which apply and collects the node config."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from client import approval
from client import node_check as check
from client.local_data import TRAINING_SEED_KEY
from client.policy import NODE_POLICY, POLICY_FILE, Policy, PolicyError
from client.targets import TargetColumns
from he.roster import NODE_HOSPITAL, NODE_ROSTER, NODE_SIGNING_KEY

log = logging.getLogger("fedquorum.daemon")


def require_options(args: argparse.Namespace, purposes: dict[str, str], unless: str = "") -> None:
    """Stop at the first of ``purposes`` (option -> what it is) not given, saying what it is for."""
    for name, purpose in purposes.items():
        if not getattr(args, name):
            raise check.NodeCheckError(f"--{name.replace('_', '-')} is required ({purpose}){unless}")


def check_identity(args: argparse.Namespace, warnings: list[str]) -> dict:
    """The roster and signing-key checks; the node-config values that point the ClientApp at them."""
    require_options(
        args,
        {
            "roster": "the federation's roster.json, whose fingerprint you compared with the coordinator's",
            "signing_key": "this hospital's Ed25519 signing key, PEM, mode 600; "
            "make one with `python -m client.daemon signing-keygen`",
        },
    )
    roster_path, roster = check.check_roster(args.roster)
    if roster_path.stat().st_mode & 0o022:
        warnings.append(f"roster {roster_path} is writable by others; it must not change: chmod 644")
    key_path, hospital = check.check_signing_key(args.signing_key, roster, roster_path, args.hospital)
    log.info(
        "roster %s: federation %r, %d hospitals; this is %r (party %d)",
        roster_path,
        roster.federation_id,
        roster.num_hospitals,
        hospital,
        roster.party_of(hospital),
    )
    log.info("roster fingerprint: %s (compare it by phone with the coordinator's)", roster.short_fingerprint)
    return {NODE_ROSTER: str(roster_path), NODE_SIGNING_KEY: str(key_path), NODE_HOSPITAL: hospital}


def check_policy(args: argparse.Namespace, state_dir: Path, warnings: list[str]) -> Path:
    """The hospital's policy (``client.policy``): it must parse, and the pinned roster must obey it."""
    path = Path(args.policy).expanduser().absolute() if args.policy else state_dir / POLICY_FILE
    if args.policy and not path.is_file():
        raise check.NodeCheckError(f"--policy {path} does not exist (expected a policy TOML file)")
    try:
        policy = Policy.load(path)
    except PolicyError as err:
        raise check.NodeCheckError(str(err)) from None
    violation = policy.roster_violation(check.check_roster(args.roster)[1])
    if violation is not None:
        raise check.NodeCheckError(f"{violation} ({path}); this hospital would refuse every run")
    source = path if path.exists() else f"defaults ({path} does not exist)"
    log.info("policy: %s: %s", source, policy)
    approved = len(approval.approved_hashes(state_dir))
    if policy.accept_any_app:
        warnings.append("policy accept_any_app=true: any submitted app runs here; a trial only")
    log.info("apps accepted: the installed code and %d approved hash(es)", approved)
    return path


def validate(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """Run every start-up check; return the node config values and warnings."""
    warnings = check.check_clock()
    version = check.check_flower_version(args.flower_version)
    log.info("Flower %s (pinned)", version)
    if not args.superlink or ":" not in args.superlink:
        raise check.NodeCheckError(
            f"--superlink must be HOST:PORT of the federation's SuperLink, got {args.superlink!r}"
        )
    if not args.insecure:
        require_options(
            args,
            {
                "root_certificates": "the federation's CA certificate, PEM",
                "auth_key": "this hospital's node authentication private key",
            },
            unless=", unless --insecure is given for a local trial",
        )
        args.root_certificates = check.check_root_certificate(args.root_certificates)
        args.auth_key = check.check_auth_key(args.auth_key)
    require_options(args, {"state_dir": "where the audit log and node config live"})
    identity = check_identity(args, warnings)
    state_dir = check.check_state_dir(args.state_dir)
    policy = check_policy(args, state_dir, warnings)
    values: dict = {"state-dir": str(state_dir), **identity, NODE_POLICY: str(policy)}
    if args.training_seed is not None:
        values[TRAINING_SEED_KEY] = args.training_seed
    if args.data:
        classes = [c for c in (args.classes or "").split(",") if c]
        targets = TargetColumns(args.task, args.target_column, args.time_column, args.event_column)
        summary = check.check_data(
            args.data, args.target_column, args.num_features, args.num_classes, classes, targets
        )
        values |= {
            "data-path": str(Path(args.data).expanduser().absolute()),
            "target-column": args.target_column,
            "task": args.task,  # pinned: a run asking this hospital's data for another task is refused
            "time-column": args.time_column,
            "event-column": args.event_column,
        }
    elif args.partition_id is not None and args.num_partitions is not None:
        summary = check.check_partition(args.partition_id, args.num_partitions)
        values |= {"partition-id": args.partition_id, "num-partitions": args.num_partitions}
        warnings.append("using the embedded demo data (--partition-id), not a hospital data file")
    else:
        raise check.NodeCheckError(
            "--data is required (the hospital's CSV or .npz file); for the demo data give "
            "--partition-id and --num-partitions instead"
        )
    log.info("data: %s", summary)
    if summary.quality is not None:
        for line in summary.quality.lines():
            log.info("data check: %s", line)
        warnings += summary.quality.warnings()
    log.info("state dir: %s (audit log: %s)", state_dir, state_dir / "audit.jsonl")
    return values, warnings

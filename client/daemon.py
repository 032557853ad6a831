"""The hospital daemon: check the site's settings, then become its Flower SuperNode.

    python -m client.daemon --superlink fl.example.org:9093 \\
        --root-certificates /etc/fedquorum/ca.crt --auth-key /etc/fedquorum/node.key \\
        --roster /etc/fedquorum/roster.json --signing-key /etc/fedquorum/signing.key \\
        --hospital charite --data /srv/data/cohort.csv --target-column outcome --num-features 30 \\
        --state-dir /var/lib/fedquorum

    python -m client.daemon keygen --out /etc/fedquorum          # node.key (0600) + node.pub
    python -m client.daemon signing-keygen --out /etc/fedquorum  # signing.key (0600) + signing.pub
    python -m client.daemon --config /etc/fedquorum/daemon.toml  # the same settings from a file
    python -m client.daemon review app.fab   # what the app changes against the installed code, its hash
    python -m client.daemon approve app.fab --state-dir /var/lib/fedquorum  # run this app too
    python -m client.daemon status --state-dir /var/lib/fedquorum  # what this hospital's files say
    python -m client.daemon audit --state-dir /var/lib/fedquorum --html audit.html  # for the DPO

At start it checks, and refuses to start with a message naming the setting on the first error:
the data file loads with the ClientApp's own loaders (and has the expected target column,
number of features and classes if given); the state dir exists or is created with mode 0700 and
is writable; the installed Flower is the pinned version; the clock is plausible and the CA
certificate valid now; the node authentication key is an OpenSSH EC key with mode 0600; the
roster (``he.roster``) parses and names this hospital, and the signing key has mode 0600 and is the
one the roster lists for it; the hospital's policy (``client.policy``, ``--policy`` or
``<state-dir>/policy.toml``) parses and the roster obeys it. It prints the roster's fingerprint,
to compare with the coordinator's by phone. ``--check-only`` then connects to the SuperLink (TLS
handshake, node key registration: ``node_check.check_superlink``) and exits. Otherwise it writes
the hospital's ``flwr-clientapp`` (``client.launcher``: only approved app code runs) to
``<state-dir>/bin`` and runs ``flower-supernode`` with the right flags as its child, that directory
first on its ``PATH`` (``client.supernode_supervisor``: it logs "connected to SuperLink ..." once
the node is activated, retries an activation refused while the previous node is still registered,
and passes SIGTERM on); the ClientApp reads ``data-path``, ``task`` (a run asking for another
task is refused), ``target-column`` (``time-column``, ``event-column``), ``state-dir``,
``policy`` and the absolute paths ``roster`` and ``signing-key`` plus the name ``hospital``
(``he.roster.NODE_*``) from the node config (``<state-dir>/node-config.toml``) and appends its audit log to
``<state-dir>/audit.jsonl``. Without ``--hospital`` the name is the roster entry whose key is
the signing key's public half.

``--insecure`` (no TLS, no node authentication) is for a trial on one machine only, and says so.
``--training-seed N`` puts ``training-seed`` in the node config: reproducible training at this
hospital's discretion; leave it unset so a coordinator's re-run is not a copy (``client.task``).
``status`` prints what the hospital's own files in the state dir say (policy, approved apps, the
last audit lines, the release ledger); the daemon itself keeps no log file there. ``audit`` prints
the audit log per run for the data protection officer, in plain words (``client.audit_summary``),
and writes it as an HTML page too with ``--html PATH``.
Anything after ``--`` goes to ``flower-supernode`` verbatim (e.g. ``-- --max-retries 5``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import tomllib
from pathlib import Path

from client import approval, review
from client import node_check as check
from client.audit import AUDIT_FILE
from client.audit_summary import main as audit_main
from client.audit_summary import read_entries
from client.ledger import LedgerError, ReleaseLedger
from client.policy import NODE_POLICY, POLICY_FILE, Policy, PolicyError
from client.supernode_supervisor import supervise
from client.targets import TASK_NAMES, TargetColumns
from he.identity import SigningKey
from he.roster import NODE_HOSPITAL, NODE_ROSTER, NODE_SIGNING_KEY

log = logging.getLogger("fedquorum.daemon")

NODE_CONFIG_FILE = "node-config.toml"
TRAINING_SEED = "training-seed"  # client.task.TRAINING_SEED_KEY (not imported: no torch here)
STATUS_AUDIT_LINES = 5
DEFAULT_RUNTIME_PORT = 9094
INSECURE_WARNING = """
**************************************************************************************
*  INSECURE MODE: no TLS and no node authentication. Model updates, decryption       *
*  shares and metrics cross the network unencrypted and unauthenticated, and any     *
*  process can pose as this hospital or as the SuperLink. Use only on one machine    *
*  for a trial, never with patient data.                                             *
**************************************************************************************"""

# settings a --config TOML file may hold (same names as the flags, with dashes)
CONFIG_KEYS = {
    "superlink",
    "root-certificates",
    "auth-key",
    "data",
    "target-column",
    "task",
    "time-column",
    "event-column",
    "num-features",
    "num-classes",
    "classes",
    "partition-id",
    "num-partitions",
    "state-dir",
    "port",
    "insecure",
    "flower-version",
    "roster",
    "signing-key",
    "hospital",
    "policy",
    "training-seed",
}
LAUNCHER_DIR = "bin"  # <state-dir>/bin: the hospital's flwr-clientapp, first on the SuperNode's PATH


# -- keygen -----------------------------------------------------------------------------------------
def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file created with mode 0600 (never wider, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def keygen(out_dir: Path, name: str = "node") -> tuple[Path, Path]:
    """A node authentication key pair: ``<name>.key`` (OpenSSH EC P-384, 0600) and ``<name>.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_path, public_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise check.NodeCheckError(f"{path} already exists; refusing to overwrite a key")
    key = ec.generate_private_key(ec.SECP384R1())
    write_secret(
        private_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public_path.write_bytes(public + b"\n")
    return private_path, public_path


def signing_keygen(out_dir: Path) -> tuple[Path, Path, str]:
    """This hospital's Ed25519 signing key: ``signing.key`` (PEM, 0600) and ``signing.pub`` (hex).

    Only the public hex goes to the coordinator, who puts it in the roster.
    """
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_path, public_path = out_dir / "signing.key", out_dir / "signing.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise check.NodeCheckError(f"{path} already exists; refusing to overwrite a key")
    key = SigningKey.generate()
    key.save(private_path)  # created 0600
    public = key.public_bytes().hex()
    public_path.write_text(public + "\n")
    return private_path, public_path, public


# -- the supernode command ----------------------------------------------------------------------------
def toml_string(value: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML)."""
    return json.dumps(value)


def write_node_config(state_dir: Path, values: dict) -> Path:
    """``<state-dir>/node-config.toml``, read by ``flower-supernode --node-config``."""
    lines = [
        f"{key} = {toml_string(v) if isinstance(v, str) else json.dumps(v)}" for key, v in values.items()
    ]
    path = state_dir / NODE_CONFIG_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        "# written by python -m client.daemon at start; edits are overwritten\n" + "\n".join(lines) + "\n"
    )
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def write_launcher(state_dir: Path) -> Path:
    """``<state-dir>/bin/flwr-clientapp``: runs ``client.launcher`` (the app approval check) with this
    interpreter. The SuperNode starts ClientApp processes by that name from ``PATH``."""
    directory = state_dir / LAUNCHER_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / "flwr-clientapp"
    tmp = path.with_suffix(".tmp")
    python = shlex.quote(sys.executable)
    tmp.write_text(f'#!/bin/sh\n# written by client.daemon\nexec {python} -m client.launcher "$@"\n')
    tmp.chmod(0o700)
    tmp.replace(path)
    return directory


def supernode_env(launcher_dir: Path) -> dict[str, str]:
    """The SuperNode's environment: our ``flwr-clientapp`` first, then this environment's Flower
    tools (``flower-superexec``), so a service without an activated venv works."""
    path = os.pathsep.join([str(launcher_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return os.environ | {"PATH": path, "FLWR_DISABLE_UPDATE_CHECK": "1"}


def supernode_command(args: argparse.Namespace, node_config: Path, extra: list[str]) -> list[str]:
    exe = shutil.which("flower-supernode", path=str(Path(sys.executable).parent)) or shutil.which(
        "flower-supernode"
    )
    if exe is None:
        raise check.NodeCheckError("flower-supernode is not on PATH; install the project's requirements")
    cmd = [exe, "--superlink", args.superlink, "--host", "127.0.0.1", "--port", str(args.port)]
    if args.insecure:
        cmd.append("--insecure")
    else:
        cmd += ["--root-certificates", str(args.root_certificates)]
        cmd += ["--auth-supernode-private-key", str(args.auth_key)]
    cmd += ["--node-config", str(node_config)]
    return cmd + extra


def check_identity(args: argparse.Namespace, warnings: list[str]) -> dict:
    """The roster and signing-key checks; the node-config values that point the ClientApp at them."""
    if not args.roster:
        raise check.NodeCheckError(
            "--roster is required (the federation's roster.json, whose fingerprint you compared "
            "with the coordinator's)"
        )
    if not args.signing_key:
        raise check.NodeCheckError(
            "--signing-key is required (this hospital's Ed25519 signing key, PEM, mode 600; "
            "make one with `python -m client.daemon signing-keygen`)"
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
        if not args.root_certificates:
            raise check.NodeCheckError(
                "--root-certificates is required (the federation's CA certificate, PEM), "
                "unless --insecure is given for a local trial"
            )
        if not args.auth_key:
            raise check.NodeCheckError(
                "--auth-key is required (this hospital's node authentication private key), "
                "unless --insecure is given for a local trial"
            )
        args.root_certificates = check.check_root_certificate(args.root_certificates)
        args.auth_key = check.check_auth_key(args.auth_key)
    if not args.state_dir:
        raise check.NodeCheckError("--state-dir is required (where the audit log and node config live)")
    identity = check_identity(args, warnings)
    state_dir = check.check_state_dir(args.state_dir)
    policy = check_policy(args, state_dir, warnings)
    values: dict = {"state-dir": str(state_dir), **identity, NODE_POLICY: str(policy)}
    if args.training_seed is not None:
        values[TRAINING_SEED] = args.training_seed
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


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m client.daemon",
        description="Check this hospital's settings, then run its Flower SuperNode.",
        epilog="Subcommands: `python -m client.daemon keygen --out DIR` creates node.key/node.pub; "
        "`python -m client.daemon signing-keygen --out DIR` creates signing.key/signing.pub; "
        "`python -m client.daemon review APP` shows what an app (.fab or folder) changes and its hash; "
        "`python -m client.daemon approve APP --state-dir DIR` approves an app (.fab or folder); "
        "`python -m client.daemon status --state-dir DIR` shows what this hospital's files say; "
        "`python -m client.daemon audit --state-dir DIR [--html PATH]` summarizes the audit log for the "
        "data protection officer.",
    )
    ap.add_argument("--config", type=Path, help="TOML file with any of the settings below (dashes)")
    ap.add_argument("--superlink", help="HOST:PORT of the federation's SuperLink")
    ap.add_argument("--root-certificates", help="the federation's CA certificate (PEM)")
    ap.add_argument("--auth-key", help="this hospital's node authentication private key (OpenSSH, 0600)")
    ap.add_argument("--roster", help="the federation's roster.json (fingerprint compared by phone)")
    ap.add_argument("--signing-key", help="this hospital's Ed25519 signing key (PEM, 0600)")
    ap.add_argument(
        "--hospital", help="this hospital's name in the roster (default: the entry with the signing key)"
    )
    ap.add_argument("--data", help="the hospital's data: CSV with a header row, or MedMNIST-style .npz")
    ap.add_argument(
        "--task", default="classification", choices=TASK_NAMES, help="what the data are for (pinned)"
    )
    ap.add_argument(
        "--target-column", default="target", help="label (or regression target) column of the CSV"
    )
    ap.add_argument("--time-column", default="time", help="survival: follow-up time column of the CSV")
    ap.add_argument("--event-column", default="event", help="survival: event column (1 event, 0 censored)")
    ap.add_argument("--num-features", type=int, help="expected number of feature columns")
    ap.add_argument("--num-classes", type=int, help="expected number of classes")
    ap.add_argument(
        "--classes", help="the federation's label values, comma-separated (as the run's dataset.classes)"
    )
    ap.add_argument("--partition-id", type=int, help="demo only: use this share of the embedded data")
    ap.add_argument("--num-partitions", type=int, help="demo only: number of shares")
    ap.add_argument("--state-dir", help="directory for the audit log and node config (created 0700)")
    ap.add_argument(
        "--policy", help=f"this hospital's policy TOML (default: <state-dir>/{POLICY_FILE}, else defaults)"
    )
    ap.add_argument(
        "--port", type=int, default=DEFAULT_RUNTIME_PORT, help="local port of the SuperNode's runtime API"
    )
    ap.add_argument(
        "--insecure", action="store_true", help="no TLS, no node authentication: local trial only"
    )
    ap.add_argument("--flower-version", help="expected Flower version (default: the pinned one)")
    ap.add_argument(
        "--training-seed",
        type=int,
        help="reproducible training at this hospital's discretion; leave unset so a coordinator's "
        "re-run is not a copy",
    )
    ap.add_argument(
        "--check-only",
        action="store_true",
        help="run the checks, connect to the SuperLink (TLS handshake, node key registration) and exit",
    )
    ap.add_argument(
        "--print-command", action="store_true", help="print the flower-supernode command and exit"
    )
    return ap


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    ap = parser()
    args = ap.parse_args(argv)
    if args.config:
        try:
            values = tomllib.loads(Path(args.config).expanduser().read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise check.NodeCheckError(f"--config {args.config} cannot be read as TOML: {err}") from err
        unknown = sorted(set(values) - CONFIG_KEYS)
        if unknown:
            raise check.NodeCheckError(
                f"--config {args.config}: unknown key(s) {unknown}; expected some of {sorted(CONFIG_KEYS)}"
            )
        # the file gives defaults; flags given on the command line win
        ap.set_defaults(**{k.replace("-", "_"): v for k, v in values.items()})
        args = ap.parse_args(argv)
    return args, extra


def keygen_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m client.daemon keygen",
        description="Create this hospital's node authentication key pair; send only the .pub file.",
    )
    ap.add_argument("--out", type=Path, required=True, help="directory for node.key (0600) and node.pub")
    ap.add_argument("--name", default="node")
    args = ap.parse_args(argv)
    try:
        private_path, public_path = keygen(args.out, args.name)
    except check.NodeCheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"private key: {private_path} (mode 600; keep it on this machine)")
    print(f"public key:  {public_path} (send this file to the federation coordinator)")
    return 0


def signing_keygen_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m client.daemon signing-keygen",
        description="Create this hospital's Ed25519 signing key; send only the public hex it prints.",
    )
    ap.add_argument(
        "--out", type=Path, required=True, help="directory for signing.key (0600) and signing.pub"
    )
    args = ap.parse_args(argv)
    try:
        private_path, public_path, public = signing_keygen(args.out)
    except check.NodeCheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"private key: {private_path} (mode 600; keep it on this machine)")
    print(f"public key:  {public_path}")
    print(f"public key (hex, send this to the federation coordinator for the roster): {public}")
    return 0


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


def status_lines(state_dir: Path, policy_path: Path | None = None) -> list[str]:
    """What this hospital's own files say: policy, approved apps, the last audit lines, the release
    ledger. Raises ``NodeCheckError`` if the state dir is missing or a file cannot be trusted."""
    if not state_dir.is_dir():
        raise check.NodeCheckError(
            f"state dir {state_dir} does not exist (expected the daemon's --state-dir)"
        )
    policy_path = policy_path or state_dir / POLICY_FILE
    try:
        policy = Policy.load(policy_path)
        ledger = ReleaseLedger.in_state_dir(state_dir)
        records, spent = len(ledger.records()), ledger.epsilon_spent()
        audit = state_dir / AUDIT_FILE
        entries = read_entries(audit) if audit.exists() else []
    except LedgerError as err:  # its text names the file only (it may reach the coordinator)
        raise check.NodeCheckError(f"{ledger.path}: {err}") from None
    except (ValueError, OSError) as err:  # PolicyError and a non-JSON audit line: ValueError
        raise check.NodeCheckError(str(err)) from None
    source = policy_path if policy_path.exists() else f"defaults ({policy_path} does not exist)"
    approved = sorted(approval.approved_hashes(state_dir))
    out = [f"state dir: {state_dir}", f"policy: {source}: {policy}"]
    out.append(f"approved apps ({approval.APPROVALS_FILE}): " + (", ".join(approved) or "none"))
    last = entries[-STATUS_AUDIT_LINES:]
    out.append(f"audit log {audit}: {len(entries)} line(s); the last {len(last)}:")
    out += [
        f"  {e.get('ts', '?')}  run {e.get('run_id', '?')}  {e.get('message_type', '?')}  "
        f"outcome {e.get('outcome', '?')}"
        for e in last
    ]
    out.append(f"release ledger {ledger.path}: {records} record(s), epsilon spent {spent:.4g}")
    out.append(
        "daemon connection: no daemon log in the state dir (the daemon logs 'connected to SuperLink' "
        "to its console: journalctl -u fedquorum-node)"
    )
    return out


def status_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m client.daemon status",
        description="Show, from this hospital's own files only, the policy in force, the approved apps, "
        "the last audit lines and the release ledger.",
    )
    ap.add_argument("--state-dir", type=Path, required=True, help="the daemon's state dir")
    ap.add_argument("--policy", type=Path, help=f"the policy TOML (default: <state-dir>/{POLICY_FILE})")
    args = ap.parse_args(argv)
    try:
        lines = status_lines(args.state_dir.expanduser().absolute(), args.policy)
    except check.NodeCheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def probe_superlink(args: argparse.Namespace) -> None:
    """``--check-only``: reach the SuperLink as the SuperNode will (``check.check_superlink``)."""
    if args.insecure:
        log.info(check.check_superlink(args.superlink, None, None))
    else:
        log.info(check.check_superlink(args.superlink, Path(args.root_certificates), Path(args.auth_key)))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s fedquorum-daemon: %(message)s")
    if argv and argv[0] == "keygen":
        return keygen_main(argv[1:])
    if argv and argv[0] == "signing-keygen":
        return signing_keygen_main(argv[1:])
    if argv and argv[0] == "review":
        return review_main(argv[1:])
    if argv and argv[0] == "approve":
        return approve_main(argv[1:])
    if argv and argv[0] == "status":
        return status_main(argv[1:])
    if argv and argv[0] == "audit":
        return audit_main(argv[1:])
    try:
        args, extra = parse(argv)
        if args.insecure:
            log.warning(INSECURE_WARNING)
        values, warnings = validate(args)
        for warning in warnings:
            log.warning(warning)
        node_config = write_node_config(Path(values["state-dir"]), values)
        launcher_dir = write_launcher(Path(values["state-dir"]))
        cmd = supernode_command(args, node_config, extra)
        if args.check_only:
            probe_superlink(args)
    except check.NodeCheckError as err:
        log.error("not starting: %s", err)
        return 2
    if args.check_only:
        log.info("all checks passed")
        return 0
    if args.print_command:
        print(" ".join(cmd))
        return 0
    log.info("starting: %s", " ".join(cmd))
    return supervise(cmd, supernode_env(launcher_dir), args.superlink, lambda: probe_superlink(args))


if __name__ == "__main__":
    sys.exit(main())

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
hospital's discretion; leave it unset so a coordinator's re-run is not a copy (``client.local_data``).
``status`` prints what the hospital's own files in the state dir say (policy, approved apps, the
last audit lines, the release ledger); the daemon itself keeps no log file there. ``audit`` prints
the audit log per run for the data protection officer, in plain words (``client.audit_summary``),
and writes it as an HTML page too with ``--html PATH``.
Anything after ``--`` goes to ``flower-supernode`` verbatim (e.g. ``-- --max-retries 5``).

This module is the command line only; each subcommand's work is its own module: the start-up
checks (``client.daemon_checks``), the SuperNode start (``client.daemon_start``), the keys
(``client.daemon_keys``), app review and approval (``client.daemon_apps``) and ``status``
(``client.daemon_status``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tomllib
from pathlib import Path

from client import node_check as check
from client.audit_summary import main as audit_main
from client.daemon_apps import approve_main, review_main
from client.daemon_checks import validate
from client.daemon_keys import keygen_main, signing_keygen_main
from client.daemon_start import (
    probe_superlink,
    supernode_command,
    supernode_env,
    write_launcher,
    write_node_config,
)
from client.daemon_status import status_main
from client.policy import POLICY_FILE
from client.supernode_supervisor import supervise
from client.targets import TASK_NAMES

log = logging.getLogger("fedquorum.daemon")

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

"""The federation coordinator's tools: pilot PKI, the SuperLink, hospital registration.

    python -m server.coordinator init-pilot --hospitals 3 --out pilot --hostname fl.example.org
    python -m server.coordinator roster --out roster.json --federation-id onco-2026 \\
        --hospital charite=<hex> --hospital hug=<hex> --hospital karolinska=<hex>
    python -m server.coordinator superlink --pilot pilot --host 0.0.0.0 --port 9093
    python -m server.coordinator register --pilot pilot hospital-4.pub
    python -m server.coordinator status --pilot pilot --superlink 127.0.0.1:9093   # (or: list)

``init-pilot`` writes a CA, the SuperLink's TLS certificate (SANs: 127.0.0.1, localhost and each
``--hostname``), one node-authentication key pair and one Ed25519 signing key per hospital, and
the federation's roster ``<pilot>/roster.json`` (see ``server.pki``, ``he.roster``); it prints the
roster's fingerprint, which every hospital compares by phone with the one its daemon prints.
``roster`` builds a roster from the public signing keys hospitals made themselves (the way to go
when no private key should travel); the order of ``--hospital`` is the order of party indices.
``superlink`` runs ``flower-superlink`` with TLS and SuperNode authentication, then registers
the public key of every hospital under ``<pilot>/hospitals/`` (``flwr supernode register``);
SIGTERM/SIGINT are passed on to the SuperLink, and the command exits with its exit code. A
SuperNode whose key is not registered is refused. ``--insecure`` (no TLS, no node
authentication) exists for a local trial only and says so loudly.

This module is the command line and the roster commands; the SuperLink is started by
``server.superlink``, keys are registered and hospitals listed by ``server.registration``, and
both call Flower through ``server.flower_cli``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from he.errors import RosterError
from he.roster import DEFAULT_COMMITTEE_SIZE, DEFAULT_MAX_ATTEMPTS, Roster
from server import pki, superlink
from server.flower_cli import flwr_home, write_cli_config
from server.registration import (
    NAMES_FILE,
    SuperLinkUnreachableError,
    configured_address,
    format_status,
    list_nodes,
    pilot_node_keys,
    register_keys,
)

DEFAULT_SUPERLINK = "127.0.0.1:9093"  # the `superlink` command's default address, seen locally


def check_preset(name: str, num_hospitals: int) -> None:
    """Refuse a roster the ServerApp would refuse: an unknown HE preset, or one whose decryption
    noise flooding cannot hold the roster's committee (``HEParams.check_federation``)."""
    from he.params import preset

    committee = min(num_hospitals, DEFAULT_COMMITTEE_SIZE)
    try:
        params = preset(name)
        if committee >= 2:  # fewer: the roster itself says why
            params.check_federation(committee, DEFAULT_MAX_ATTEMPTS)
    except ValueError as err:
        raise RosterError(f"--preset {name}: {err}") from None


def print_roster(path: Path, roster: Roster) -> None:
    """What the operator reads out to every hospital (public values only)."""
    print(
        f"roster: {path} (federation {roster.federation_id!r}, {roster.num_hospitals} hospitals, "
        f"committee of {len(roster.committee)} with threshold {roster.threshold}, "
        f"min contributors {roster.min_contributors}, set-up needs {roster.setup_minimum} "
        f"keyholders online, preset {roster.preset})"
    )
    print(f"roster fingerprint: {roster.short_fingerprint}")
    print(
        "compare this fingerprint by phone with every hospital: each daemon prints it at start "
        "and must show exactly the same"
    )


def cmd_init_pilot(args: argparse.Namespace) -> int:
    names = args.names.split(",") if args.names else args.hospitals
    check_preset(args.preset, len(names) if isinstance(names, list) else names)
    layout = pki.init_pilot(
        args.out,
        names,
        args.hostname,
        args.days,
        args.force,
        federation_id=args.federation_id,
        threshold=args.threshold,
        min_contributors=args.min_contributors,
        preset=args.preset,
        min_setup_keyholders=args.min_setup_keyholders,
    )
    print(f"pilot PKI in {layout.root}")
    print(f"  CA certificate:        {layout.ca_cert}  (CA key {layout.ca_key}: keep it offline)")
    print(f"  SuperLink certificate: {layout.server_cert} (key {layout.server_key}, mode 600)")
    for name in layout.hospital_names():
        print(
            f"  {name}: {layout.hospital_dir(name)}/ node.key (600), node.pub, signing.key (600), "
            "signing.pub, ca.crt, roster.json"
        )
    print("hand each hospital its own folder only; the server keeps node.pub files for registration")
    print_roster(layout.roster, Roster.load(layout.roster))
    return 0


def cmd_roster(args: argparse.Namespace) -> int:
    check_preset(args.preset, len(args.hospital))
    keys: dict[str, bytes] = {}
    for item in args.hospital:
        name, sep, hex_key = item.partition("=")
        if not sep:
            raise pki.PKIError(f"--hospital {name!r}: expected NAME=HEXKEY (the hospital's signing.pub)")
        if name in keys:
            raise pki.PKIError(f"--hospital {name!r} is given twice")
        keys[name] = pki.parse_public_signing_key(name, hex_key)
    pki.check_hospital_names(list(keys))
    roster = Roster.create(
        args.federation_id,
        keys,
        threshold=args.threshold,
        min_contributors=args.min_contributors,
        preset=args.preset,
        min_setup_keyholders=args.min_setup_keyholders,
    )
    pki.write_roster(args.out, roster, args.force)
    print_roster(args.out, roster)
    return 0


def add_roster_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``init-pilot`` and ``roster``: what the roster pins besides the keys."""
    p.add_argument(
        "--threshold",
        type=int,
        default=0,
        help="keyholders needed to decrypt (t_K); 0 (default): the whole committee",
    )
    p.add_argument(
        "--min-contributors",
        type=int,
        default=2,
        help="fewest hospitals an aggregate may have before it is decrypted (default: 2)",
    )
    p.add_argument("--preset", default="compact", help="HE parameter preset (default: compact)")
    p.add_argument(
        "--min-setup-keyholders",
        type=int,
        default=0,
        help="fewest keyholders online for a run's key set-up to go on without the others; "
        "0 (default): ceil((committee + threshold)/2), also the least allowed",
    )


def cmd_register(args: argparse.Namespace) -> int:
    layout = pki.PilotLayout(Path(args.pilot).expanduser().absolute())
    if args.name and len(args.public_keys or ()) > 1:
        raise pki.PKIError("--name applies to a single public key")
    home = flwr_home(layout)
    if args.superlink or configured_address(home) is None:  # else the config `superlink` wrote stays
        write_cli_config(home, args.superlink or DEFAULT_SUPERLINK, layout.superlink_ca)
    keys = [(args.name or Path(p).stem, Path(p)) for p in args.public_keys] if args.public_keys else []
    if not keys:
        keys = pilot_node_keys(layout)
    try:
        for name, result in register_keys(home, keys, args.timeout).items():
            print(f"{name}: {result}")
    except (RuntimeError, pki.PKIError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """The registered hospitals by name, online or offline and since when (``status``/``list``)."""
    layout = pki.PilotLayout(Path(args.pilot).expanduser().absolute())
    home = flwr_home(layout)
    address = args.superlink or configured_address(home)
    if address is None:
        print(
            f"error: no SuperLink address: pass --superlink HOST:PORT (none in {home / 'config.toml'}, "
            "which `python -m server.coordinator superlink` writes)",
            file=sys.stderr,
        )
        return 1
    try:
        nodes = list_nodes(address, layout.superlink_ca)
    except SuperLinkUnreachableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    names_path = home / NAMES_FILE
    names = json.loads(names_path.read_text()) if names_path.exists() else {}
    print(format_status(nodes, names))
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m server.coordinator", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init-pilot", help="generate the CA, SuperLink certificate and hospital keys")
    p.add_argument("--hospitals", type=int, default=3, help="number of hospitals (named hospital-1..N)")
    p.add_argument("--names", help="comma-separated hospital names instead of hospital-1..N")
    p.add_argument("--out", type=Path, required=True, help="pilot directory (created 0700)")
    p.add_argument(
        "--hostname",
        action="append",
        default=[],
        help="a DNS name or IP of the SuperLink hospitals connect to (repeatable)",
    )
    p.add_argument("--days", type=int, default=pki.DEFAULT_DAYS, help="certificate validity in days")
    p.add_argument("--force", action="store_true", help="overwrite existing keys")
    p.add_argument(
        "--federation-id",
        help="the federation's name in the roster (default: <pilot dir name>@<first --hostname, "
        "else this machine's hostname>)",
    )
    add_roster_options(p)
    p.set_defaults(func=cmd_init_pilot)

    p = sub.add_parser("roster", help="build the roster from the hospitals' public signing keys")
    p.add_argument("--out", type=Path, required=True, help="roster file to write (e.g. pilot/roster.json)")
    p.add_argument("--federation-id", required=True, help="the federation's name in the roster")
    p.add_argument(
        "--hospital",
        action="append",
        default=[],
        required=True,
        metavar="NAME=HEXKEY",
        help="a hospital and its public signing key (repeat; this order gives the party indices)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing roster")
    add_roster_options(p)
    p.set_defaults(func=cmd_roster)

    p = sub.add_parser("superlink", help="run the SuperLink (TLS + node auth) and register hospitals")
    p.add_argument("--pilot", type=Path, required=True, help="pilot directory from init-pilot")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    p.add_argument("--port", type=int, default=9093)
    p.add_argument("--database", type=Path, help="SuperLink state (default: <pilot>/superlink/state.db)")
    p.add_argument("--no-register", action="store_true", help="do not register the pilot's hospital keys")
    p.add_argument("--start-timeout", type=float, default=180.0)
    p.add_argument("--insecure", action="store_true", help="no TLS, no node authentication: local trial only")
    p.set_defaults(func=superlink.run)

    p = sub.add_parser("register", help="register hospital public keys with a running SuperLink")
    p.add_argument("--pilot", type=Path, required=True)
    p.add_argument(
        "--superlink",
        help=f"HOST:PORT of the SuperLink (default: the pilot's CLI config, else {DEFAULT_SUPERLINK}); "
        "given, it is written to that config",
    )
    p.add_argument("--name", help="name of the hospital (one key only)")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("public_keys", nargs="*", help=".pub files (default: every hospital of the pilot)")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser(
        "status", aliases=["list"], help="the registered hospitals by name: online or offline, since when"
    )
    p.add_argument("--pilot", type=Path, required=True)
    p.add_argument(
        "--superlink",
        help="HOST:PORT (default: the pilot's CLI config, written by `superlink` and `register`)",
    )
    p.set_defaults(func=cmd_status)
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s fedquorum-coordinator: %(message)s"
    )
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (pki.PKIError, RosterError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

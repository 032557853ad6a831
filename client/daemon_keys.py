"""The daemon's key subcommands (``keygen``, ``signing-keygen``): a hospital makes its own keys on its
own machine, files created 0600 from the start, and sends only the public halves away."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from client import node_check as check
from he.identity import SigningKey


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

"""The pilot's public-key infrastructure: a CA, the SuperLink's TLS certificate, node auth keys.

Formats are the ones Flower 1.42 reads:

* SuperLink TLS (``flower-superlink --ssl-ca-certfile --ssl-certfile --ssl-keyfile``): PEM X.509
  certificates and a PEM (PKCS#8) private key. The certificate's subject alternative names must
  cover every name hospitals and the ServerApp use to reach it (``127.0.0.1`` and ``localhost``
  always: the SuperLink's own ServerApp process connects over loopback with the same certificate).
* SuperNode authentication (``flower-supernode --auth-supernode-private-key``;
  ``flwr supernode register <public key>``): an EC key on a NIST curve, private key in OpenSSH
  format (unencrypted: Flower loads it without a passphrase), public key as an OpenSSH line.
* Protocol identities (``he.identity``, ``he.roster``): one Ed25519 signing key per hospital (PEM,
  PKCS#8) and the federation's roster ``roster.json`` naming every hospital's public signing key,
  which hospitals pin after comparing its fingerprint out of band.

Private keys are written only to new files created with mode 0600, in directories with mode
0700; nothing here logs or prints key material.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from he.identity import PUBLIC_KEY_BYTES, SigningKey
from he.roster import Roster

CURVE = ec.SECP384R1  # P-384: what Flower's node authentication documents
SECRET_MODE = 0o600
DIR_MODE = 0o700
DEFAULT_DAYS = 365
SIGNING_KEY_FILE = "signing.key"
SIGNING_PUB_FILE = "signing.pub"
ROSTER_FILE = "roster.json"


class PKIError(ValueError):
    """Bad PKI input (a name, a path, a file that exists)."""


# -- files ------------------------------------------------------------------------------------------
def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700 for the leaf; tighten it if it exists."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    path.chmod(DIR_MODE)
    return path


def write_secret(path: Path, data: bytes, overwrite: bool = False) -> Path:
    """Write a private key: a new file created 0600 (never wider, not even briefly)."""
    if path.exists():
        if not overwrite:
            raise PKIError(f"{path} already exists; refusing to overwrite a private key (use --force)")
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def write_public(path: Path, data: bytes, overwrite: bool = False) -> Path:
    if path.exists() and not overwrite:
        raise PKIError(f"{path} already exists; refusing to overwrite it (use --force)")
    path.write_bytes(data)
    path.chmod(0o644)
    return path


def pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# -- certificates -----------------------------------------------------------------------------------
def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedquorum pilot"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    if days < 1:
        raise PKIError(f"certificate validity must be at least 1 day, got {days}")
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)


def make_ca(common_name: str = "fedquorum pilot CA", days: int = DEFAULT_DAYS):
    """A self-signed CA (key, certificate) that may sign only end-entity certificates."""
    key = ec.generate_private_key(CURVE())
    not_before, not_after = _validity(days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def subject_alt_names(names: list[str]) -> list[x509.GeneralName]:
    """``127.0.0.1``/``::1`` style entries become IP SANs, the rest DNS SANs (validated)."""
    out: list[x509.GeneralName] = []
    for name in names:
        name = name.strip()
        if not name:
            raise PKIError("empty host name in the SuperLink certificate's names")
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        labels = name.split(".")
        if any(not label or len(label) > 63 for label in labels) or not all(
            label.replace("-", "").isalnum() for label in labels
        ):
            raise PKIError(f"host name {name!r} is not a valid DNS name or IP address")
        out.append(x509.DNSName(name))
    return out


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    names: list[str],
    days: int = DEFAULT_DAYS,
):
    """The SuperLink's TLS key and certificate for ``names`` (plus 127.0.0.1 and localhost)."""
    all_names = list(dict.fromkeys(["127.0.0.1", "localhost", *names]))
    key = ec.generate_private_key(CURVE())
    not_before, not_after = _validity(days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(all_names[2] if len(all_names) > 2 else "localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(subject_alt_names(all_names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


# -- node authentication keys -----------------------------------------------------------------------
def make_node_key() -> tuple[bytes, bytes]:
    """(OpenSSH private key, OpenSSH public key line) of a new P-384 node key."""
    key = ec.generate_private_key(CURVE())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + b"\n"


def load_node_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """Check a hospital's ``.pub`` file the way ``flwr supernode register`` will."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PKIError(f"public key {path} cannot be read: {err.strerror}") from err
    try:
        key = serialization.load_ssh_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        # no parser detail: if this is a private key by mistake, nothing of it is echoed
        raise PKIError(
            f"public key {path} is not an OpenSSH public key line (expected 'ecdsa-sha2-nistp384 AAAA...'; "
            "send the .pub file, never the private key)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise PKIError(f"public key {path} is a {type(key).__name__}; expected an EC key (P-256/384/521)")
    return key


# -- the pilot layout -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PilotLayout:
    """Where ``init-pilot`` puts things under ``root``.

    ``ca/`` (CA key: keep offline), ``superlink/`` (TLS key and certificate, CA certificate),
    ``roster.json`` (the federation's roster), ``hospitals/<name>/`` (each hospital's bundle: its
    node key pair, its signing key pair, the CA certificate and a copy of the roster).
    """

    root: Path

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.ca_dir / "ca.key"

    @property
    def superlink_dir(self) -> Path:
        return self.root / "superlink"

    @property
    def server_cert(self) -> Path:
        return self.superlink_dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.superlink_dir / "server.key"

    @property
    def superlink_ca(self) -> Path:
        return self.superlink_dir / "ca.crt"

    @property
    def roster(self) -> Path:
        return self.root / "roster.json"

    @property
    def hospitals_dir(self) -> Path:
        return self.root / "hospitals"

    def hospital_dir(self, name: str) -> Path:
        return self.hospitals_dir / name

    def signing_key(self, name: str) -> Path:
        return self.hospital_dir(name) / SIGNING_KEY_FILE

    def hospital_names(self) -> list[str]:
        if not self.hospitals_dir.is_dir():
            return []
        return sorted(p.name for p in self.hospitals_dir.iterdir() if (p / "node.pub").is_file())

    def public_keys(self) -> list[Path]:
        return [self.hospital_dir(name) / "node.pub" for name in self.hospital_names()]


def check_hospital_names(names: list[str]) -> None:
    """Names become folder names and roster entries: letters, digits, '-' and '_' only, distinct."""
    for name in names:
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise PKIError(f"hospital name {name!r} may hold only letters, digits, '-' and '_'")
    if len(set(names)) != len(names):
        raise PKIError(f"hospital names must be distinct, got {names}")


def default_federation_id(root: Path, hostnames: list[str] | None = None) -> str:
    """``<pilot dir name>@<first --hostname, else this machine's name>``: readable, and distinct
    across pilots of different coordinators (signatures are bound to it)."""
    host = (hostnames or [socket.gethostname()])[0]
    return f"{Path(root).name}@{host}"


def parse_public_signing_key(name: str, text: str) -> bytes:
    """A hospital's public signing key as sent by it: 64 hex digits (``signing.pub``)."""
    text = text.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != PUBLIC_KEY_BYTES:
        # the value is not echoed: if a private key was pasted by mistake, none of it is printed
        raise PKIError(
            f"signing key of {name!r} must be {2 * PUBLIC_KEY_BYTES} hex digits (the public key "
            f"`python -m client.daemon signing-keygen` prints), not a value of {len(text)} characters"
        )
    return key


def write_roster(path: Path, roster: Roster, overwrite: bool = False) -> Path:
    """The roster as JSON, mode 0644 (public, but it must not change once hospitals pinned it)."""
    if path.exists() and not overwrite:
        raise PKIError(f"{path} already exists; refusing to overwrite a roster (use --force)")
    roster.save(path)
    path.chmod(0o644)
    return path


def write_signing_key(folder: Path, key: SigningKey, overwrite: bool = False) -> Path:
    """``signing.key`` (PEM, 0600) and ``signing.pub`` (hex) in ``folder``."""
    private = folder / SIGNING_KEY_FILE
    if private.exists():
        if not overwrite:
            raise PKIError(f"{private} already exists; refusing to overwrite a private key (use --force)")
        private.unlink()  # save() keeps an existing file's mode: start from a new 0600 file
    key.save(private)
    write_public(folder / SIGNING_PUB_FILE, key.public_bytes().hex().encode() + b"\n", overwrite)
    return private


def init_pilot(
    out: Path,
    hospitals: int | list[str],
    hostnames: list[str] | None = None,
    days: int = DEFAULT_DAYS,
    force: bool = False,
    *,
    federation_id: str | None = None,
    threshold: int = 0,
    min_contributors: int = 2,
    preset: str = "compact",
    min_setup_keyholders: int = 0,
) -> PilotLayout:
    """Generate the CA, the SuperLink certificate, one node key pair and one signing key per
    hospital, and the roster; the roster is validated before any file is written."""
    names = [f"hospital-{i}" for i in range(1, hospitals + 1)] if isinstance(hospitals, int) else hospitals
    if len(names) < 2:
        raise PKIError(
            f"a pilot needs at least two hospitals (--hospitals N); got {len(names)} "
            "(an aggregate of one hospital would be decrypted alone)"
        )
    check_hospital_names(names)
    layout = PilotLayout(Path(out).expanduser().absolute())
    signing_keys = {name: SigningKey.generate() for name in names}
    roster = Roster.create(
        federation_id or default_federation_id(layout.root, hostnames),
        {name: key.public_bytes() for name, key in signing_keys.items()},
        threshold=threshold,
        min_contributors=min_contributors,
        preset=preset,
        min_setup_keyholders=min_setup_keyholders,
    )
    private_dir(layout.root)
    ca_key, ca_cert = make_ca(days=days)
    private_dir(layout.ca_dir)
    write_secret(layout.ca_key, pem_private(ca_key), force)
    write_public(layout.ca_cert, pem_cert(ca_cert), force)

    server_key, server_cert = make_server_cert(ca_key, ca_cert, hostnames or [], days)
    private_dir(layout.superlink_dir)
    write_secret(layout.server_key, pem_private(server_key), force)
    write_public(layout.server_cert, pem_cert(server_cert), force)
    write_public(layout.superlink_ca, pem_cert(ca_cert), force)

    private_dir(layout.hospitals_dir)
    for name in names:
        folder = private_dir(layout.hospital_dir(name))
        private, public = make_node_key()
        write_secret(folder / "node.key", private, force)
        write_public(folder / "node.pub", public, force)
        write_public(folder / "ca.crt", pem_cert(ca_cert), force)
        write_signing_key(folder, signing_keys[name], force)
        write_roster(folder / ROSTER_FILE, roster, force)
    write_roster(layout.roster, roster, force)
    return layout

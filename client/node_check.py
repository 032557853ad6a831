"""Start-up checks of a hospital node, before it connects to the federation.

Each check returns what it found or raises :class:`NodeCheckError` naming the input and what was
expected; ``python -m client.daemon`` runs them all and refuses to start on the first error.
Nothing here prints data values: only file names, column and label names, counts and shapes,
and only to the hospital's own console (none of it goes to the coordinator).
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path
from typing import TYPE_CHECKING

from client.targets import TargetColumns
from he.errors import RosterError
from he.identity import SigningKey
from he.roster import Roster

if TYPE_CHECKING:
    from client.data import CsvQuality

log = logging.getLogger(__name__)

MIN_YEAR = 2025
STATE_DIR_MODE = 0o700
SECRET_FILE_MODE = 0o600


class NodeCheckError(ValueError):
    """A hospital-side setting is wrong; the message says which and what was expected."""


# -- data -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSummary:
    path: str
    train_examples: int
    test_examples: int
    num_features: int | tuple[int, ...]
    num_classes: int
    quality: CsvQuality | None = None  # a CSV's missing values, suspicious zeros, label balance

    def __str__(self) -> str:
        return (
            f"{self.path}: {self.train_examples} training + {self.test_examples} test examples, "
            f"{self.num_features} features, {self.num_classes} classes"
        )


def check_data(
    path: str | os.PathLike,
    target_column: str = "target",
    num_features: int | None = None,
    num_classes: int | None = None,
    classes: list[str] | None = None,
    targets: TargetColumns | None = None,
) -> DataSummary:
    """Load the hospital's CSV or ``.npz`` with the ClientApp's own loaders; check its schema.

    ``classes``: the federation's label values (``--classes``); text labels need them.
    ``targets``: the task and its target column(s) (default: classification of ``target_column``)."""
    from client.data import csv_quality, load_csv, load_npz, require_named_classes  # torch/pandas only here

    path = Path(path).expanduser()
    if not path.is_file():
        raise NodeCheckError(f"data file {path} does not exist (expected a CSV or .npz file)")
    if not os.access(path, os.R_OK):
        raise NodeCheckError(f"data file {path} is not readable by this user")
    suffix = path.suffix.lower()
    quality = None
    try:
        targets = targets or TargetColumns(target=target_column)
        if suffix == ".npz":
            data = load_npz(path)
        elif suffix == ".csv" and targets.task != "classification":
            data = load_csv(path, target_column, targets=targets)
        elif suffix == ".csv":
            data = load_csv(path, target_column, classes=classes or None)
            if not classes:
                require_named_classes(data, path, "--classes (the run's dataset.classes)")
            quality = csv_quality(path, target_column)
        else:
            raise NodeCheckError(f"data file {path} has suffix {suffix!r}; expected .csv or .npz")
    except (ValueError, OSError) as err:
        if isinstance(err, NodeCheckError):
            raise
        raise NodeCheckError(f"data file {path} cannot be used: {err}") from err
    if num_features is not None and data.num_features != num_features:
        raise NodeCheckError(
            f"data file {path} has {data.num_features} feature columns, expected {num_features} "
            f"(every column except the target column(s) {targets.columns} is a feature)"
        )
    if num_classes is not None and data.num_classes != num_classes:
        raise NodeCheckError(
            f"data file {path} has {data.num_classes} classes in {target_column!r}, expected {num_classes}"
        )
    return DataSummary(
        str(path), len(data.y_train), len(data.y_test), data.num_features, data.num_classes, quality
    )


def check_partition(partition_id: int, num_partitions: int) -> DataSummary:
    """Demo data: the node's share of the embedded breast-cancer data."""
    from client.data import load_breast_cancer_partition

    try:
        data = load_breast_cancer_partition(partition_id, num_partitions)
    except ValueError as err:
        raise NodeCheckError(f"--partition-id/--num-partitions: {err}") from err
    return DataSummary(
        f"breast-cancer partition {partition_id}/{num_partitions}",
        len(data.y_train),
        len(data.y_test),
        data.num_features,
        data.num_classes,
    )


# -- state directory --------------------------------------------------------------------------------
def check_state_dir(path: str | os.PathLike) -> Path:
    """Create the state dir (mode 0700) or tighten it to 0700; check it is writable."""
    path = Path(path).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise NodeCheckError(f"state dir {path} exists but is not a directory")
    try:
        path.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
    except OSError as err:
        raise NodeCheckError(f"state dir {path} cannot be created: {err.strerror}") from err
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode != STATE_DIR_MODE:
        try:
            path.chmod(STATE_DIR_MODE)
        except OSError as err:
            raise NodeCheckError(
                f"state dir {path} has mode {mode:o} and cannot be set to {STATE_DIR_MODE:o}: {err.strerror}"
            ) from err
        log.warning("state dir %s had mode %o; set to %o", path, mode, STATE_DIR_MODE)
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as err:
        raise NodeCheckError(f"state dir {path} is not writable: {err.strerror}") from err
    return path


# -- software and clock -----------------------------------------------------------------------------
def pinned_flower_version(distribution: str = "fedquorum") -> str | None:
    """The ``flwr`` version pinned by this package's requirements (``flwr[...]==X``)."""
    try:
        reqs = requires(distribution) or []
    except PackageNotFoundError:
        return None
    for req in reqs:
        name = req.split(";")[0].strip()
        if name.split("[")[0].split("=")[0].strip().lower() == "flwr" and "==" in name:
            return name.split("==", 1)[1].strip()
    return None


def check_flower_version(expected: str | None = None) -> str:
    """The installed Flower must be the pinned one (the federation runs one version)."""
    expected = expected or pinned_flower_version()
    try:
        installed = version("flwr")
    except PackageNotFoundError as err:
        raise NodeCheckError("Flower (package 'flwr') is not installed in this environment") from err
    if expected and installed != expected:
        raise NodeCheckError(
            f"installed Flower is {installed}, expected the pinned {expected}; install the project's "
            "requirements (pip install -c requirements.lock -e .)"
        )
    return installed


def check_clock(now: datetime | None = None) -> list[str]:
    """Warnings if the clock looks wrong (TLS certificates and audit timestamps depend on it)."""
    now = now or datetime.now(UTC)
    if now.year < MIN_YEAR:
        return [f"system clock says {now.isoformat()} (before {MIN_YEAR}); TLS checks will fail; fix NTP"]
    return []


# -- TLS and node-authentication files ----------------------------------------------------------------
def check_root_certificate(path: str | os.PathLike, now: datetime | None = None) -> Path:
    """A PEM X.509 certificate that is valid now (the clock is checked against it)."""
    from cryptography import x509

    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise NodeCheckError(f"root certificate {path} does not exist (expected the federation's CA, PEM)")
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as err:
        raise NodeCheckError(f"root certificate {path} is not a PEM X.509 certificate: {err}") from err
    now = now or datetime.now(UTC)
    if now < cert.not_valid_before_utc:
        raise NodeCheckError(
            f"root certificate {path} is valid only from {cert.not_valid_before_utc.isoformat()}, "
            f"but the clock says {now.isoformat()}: fix the system clock"
        )
    if now > cert.not_valid_after_utc:
        raise NodeCheckError(
            f"root certificate {path} expired on {cert.not_valid_after_utc.isoformat()}; ask the "
            "federation coordinator for a new one"
        )
    return path


def check_secret_file_mode(path: Path, what: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise NodeCheckError(
            f"{what} {path} has mode {mode:o}: readable by others; expected 600 (chmod 600 {path})"
        )


# -- the federation's roster and this hospital's signing key ---------------------------------------
def check_roster(path: str | os.PathLike) -> tuple[Path, Roster]:
    """The pinned roster: it must parse, since every protocol message is checked against it."""
    path = Path(path).expanduser().absolute()
    try:
        return path, Roster.load(path)
    except (FileNotFoundError, RosterError) as err:
        raise NodeCheckError(str(err)) from None
    except OSError as err:
        raise NodeCheckError(f"roster {path} cannot be read: {err.strerror}") from None


def check_signing_key(
    path: str | os.PathLike, roster: Roster, roster_path: Path, hospital: str | None = None
) -> tuple[Path, str]:
    """This hospital's signing key (0600) and its roster name; the key must be the roster's entry
    for that name, else every message it signs would be refused by the other hospitals.

    ``hospital`` None: the name is the roster entry whose key is this key.
    """
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise NodeCheckError(f"signing key {path} does not exist (expected this hospital's PEM Ed25519 key)")
    check_secret_file_mode(path, "signing key")
    try:
        public = SigningKey.load(path).public_bytes()
    except (OSError, ValueError) as err:
        raise NodeCheckError(str(err)) from None
    names = [h.name for h in roster.hospitals]
    if hospital is None:
        matches = [h.name for h in roster.hospitals if h.signing_key == public]
        if not matches:
            raise NodeCheckError(
                f"signing key {path} (public {public.hex()[:16]}…) is the key of no hospital in roster "
                f"{roster_path} (hospitals: {names}); use the key whose public half the roster lists"
            )
        return path, matches[0]
    if hospital not in names:
        raise NodeCheckError(
            f"hospital {hospital!r} is not in roster {roster_path} (federation {roster.federation_id!r}; "
            f"expected one of {names})"
        )
    expected = roster.hospital(roster.party_of(hospital)).signing_key
    if public != expected:
        raise NodeCheckError(
            f"signing key {path} (public {public.hex()[:16]}…) does not match the key roster "
            f"{roster_path} lists for {hospital!r} ({expected.hex()[:16]}…): wrong key file, wrong "
            "--hospital, or a roster other than the one agreed"
        )
    return path, hospital


def check_auth_key(path: str | os.PathLike) -> Path:
    """The node's authentication private key: OpenSSH EC (NIST curve) format, mode 0600."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise NodeCheckError(f"node authentication key {path} does not exist")
    check_secret_file_mode(path, "node authentication key")
    try:
        key = load_ssh_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise NodeCheckError(
            f"node authentication key {path} is not an unencrypted OpenSSH private key ({err}); "
            "create one with `python -m client.daemon keygen`"
        ) from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise NodeCheckError(
            f"node authentication key {path} is a {type(key).__name__}; expected an EC key on a NIST "
            "curve (e.g. P-384)"
        )
    return path


# -- reaching the SuperLink -------------------------------------------------------------------------
NODE_NOT_REGISTERED = 2004  # Flower 1.42 ApiErrorCode.FLEET_NODE_ACTIVATION_FAILED
INVALID_HEARTBEAT = 2003  # ... FLEET_INVALID_HEARTBEAT_INTERVAL: only a registered key gets this far


def check_superlink(address: str, root_certificates: Path | None, auth_key: Path | None) -> str:
    """Connect to the SuperLink as the SuperNode will: TLS handshake with the given CA, then the
    node key's registration.

    The registration probe asks the Fleet API to activate this node with an out-of-range heartbeat
    interval. Flower 1.42 looks the key up first ("No SuperNode found": not registered) and checks
    the interval second, so a registered key is answered "invalid heartbeat interval" and the node
    is never activated: a running SuperNode with the same key is not disturbed.
    ``root_certificates``/``auth_key`` None: an insecure SuperLink (reachability only).
    """
    import httpx
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.proto.fleet_pb2 import ActivateNodeRequest  # pylint: disable=E0611
    from flwr.supercore.interceptors.http.runtime_version import RuntimeVersionHttpInterceptor
    from flwr.supercore.primitives.asymmetric import generate_key_pairs, public_key_to_bytes
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supernode.fleet_http_client import FleetHttpClient
    from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

    if auth_key is None:
        private, public = generate_key_pairs()
    else:
        private = load_ssh_private_key(auth_key.read_bytes(), password=None)
        public = private.public_key()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its "400 Bad Request" line is the good case
    retry = make_simple_http_retry_invoker()
    retry.max_tries = 1
    interceptors = [RuntimeVersionHttpInterceptor(component_name="SuperNode")]
    if auth_key is not None:
        interceptors.append(NodeAuthHttpInterceptor(private, public))
    ca = None if root_certificates is None else str(root_certificates)
    request = ActivateNodeRequest(public_key=public_key_to_bytes(public), heartbeat_interval=-1.0)
    try:
        with FleetHttpClient.from_server_address(
            address, ca is None, ca, interceptors=interceptors, retry_invoker=retry
        ) as client:
            client.ActivateNode(request)
    except httpx.HTTPStatusError as err:
        return _registration_answer(address, err.response, auth_key)
    except httpx.TimeoutException as err:
        raise NodeCheckError(
            f"--superlink {address} did not answer in time ({type(err).__name__}): a firewall, or the "
            "wrong host"
        ) from None
    except httpx.ConnectError as err:
        raise NodeCheckError(_connect_failure(address, str(err), ca)) from None
    except httpx.HTTPError as err:
        raise NodeCheckError(f"--superlink {address}: {type(err).__name__}: {err}") from None
    raise NodeCheckError(f"--superlink {address} activated a node with an invalid heartbeat; unexpected")


def _connect_failure(address: str, error: str, ca: str | None) -> str:
    if "CERTIFICATE_VERIFY_FAILED" in error and "mismatch" in error.lower():
        return (
            f"--superlink {address}: the SuperLink's certificate does not name this host ({error}); "
            "dial a name it lists, or have the coordinator re-issue it with `init-pilot --hostname`"
        )
    if "CERTIFICATE_VERIFY_FAILED" in error:
        return (
            f"--superlink {address}: the SuperLink's certificate is not signed by --root-certificates "
            f"{ca} ({error}); use the federation's ca.crt and compare its fingerprint with the coordinator"
        )
    if "WRONG_VERSION_NUMBER" in error or "record layer" in error:
        return f"--superlink {address} does not speak TLS ({error}): an insecure SuperLink, or not one"
    return (
        f"--superlink {address}: cannot connect ({error}); check the host and port, and that the "
        "SuperLink runs"
    )


def _registration_answer(address: str, response, auth_key: Path | None) -> str:
    import json

    try:
        code = int(json.loads(response.text).get("code", 0))
    except (ValueError, AttributeError):
        code = 0
    if auth_key is None:  # insecure: any Fleet API answer means the SuperLink is there
        return f"SuperLink {address} answers (insecure: no TLS, no node authentication)"
    if code == INVALID_HEARTBEAT:
        return f"SuperLink {address}: TLS handshake passed, node key {auth_key} is registered"
    if code == NODE_NOT_REGISTERED:
        raise NodeCheckError(
            f"node authentication key {auth_key} is not registered at SuperLink {address}: send its .pub "
            "to the coordinator (`python -m server.coordinator register`), or use the registered key"
        )
    raise NodeCheckError(
        f"--superlink {address} answered HTTP {response.status_code} {response.text[:200]!r}; is it a "
        "Flower 1.42 SuperLink?"
    )

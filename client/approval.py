"""Which submitted apps (FABs) this hospital runs: its own installed code, or an approved hash.

In Flower 1.42 a SuperNode installs and imports whatever app bundle (FAB) the run carries, so
without this check the ML engineer's code, not the hospital's vetted install, would run next to
the patient data. ``client.launcher`` calls :func:`app_refusal` on the FAB's bytes before Flower
installs it. A FAB is accepted when

* its SHA-256 is in ``<state-dir>/approved-apps.txt`` (``client.daemon approve``), or
* the policy's ``accept_installed_app`` is on and every file in it is byte for byte the file of
  this hospital's installed fedquorum, with ``client.app:app`` as its ClientApp, or
* the policy's ``accept_any_app`` is on (a trial only).
"""

from __future__ import annotations

import hashlib
import io
import tomllib
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from client.policy import Policy

APPROVALS_FILE = "approved-apps.txt"
CLIENT_APP = "client.app:app"
FAB_MANIFEST_PREFIX = ".info/"
FAB_CONFIG = "pyproject.toml"


def fab_sha256(content: bytes) -> str:
    """The FAB's hash, as ``flwr run`` and ``flwr build`` compute it."""
    return hashlib.sha256(content).hexdigest()


def installed_root() -> Path:
    """The directory of this hospital's installed fedquorum packages (``client/``, ``he/``, ...)."""
    return Path(__file__).resolve().parents[1]


def app_files(content: bytes) -> dict[str, bytes]:
    """The app's files in a FAB by relative path, without Flower's ``.info/`` manifest."""
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return {
            name: archive.read(name)
            for name in archive.namelist()
            if not name.startswith(FAB_MANIFEST_PREFIX) and not name.endswith("/")
        }


def installed_mismatch(content: bytes, root: Path | None = None) -> str | None:
    """Why the FAB is not this hospital's installed code (the first difference), or None."""
    root = root or installed_root()
    try:
        files = app_files(content)
    except zipfile.BadZipFile:
        return "the app bundle is not a zip archive"
    for name, data in files.items():
        if name == FAB_CONFIG:
            components = tomllib.loads(data.decode()).get("tool", {}).get("flwr", {}).get("app", {})
            clientapp = components.get("components", {}).get("clientapp")
            if clientapp != CLIENT_APP:
                return f"its ClientApp is {clientapp!r}, not the installed {CLIENT_APP!r}"
            continue
        local = root / name
        if ".." in Path(name).parts or not local.is_file():
            return f"{name} is not part of the installed fedquorum"
        if local.read_bytes() != data:
            return f"{name} differs from the installed {local}"
    return None


def app_dir_mismatch(content: bytes, app_dir: Path) -> str | None:
    """Why ``app_dir`` does not hold exactly the FAB's files, byte for byte and nothing else, or None.

    Flower 1.42 names an installed app's directory by only 8 hex digits of the FAB's SHA-256 and
    reuses it when it exists, so a colliding bundle installed earlier (say in an
    ``accept_any_app`` trial) would be imported in place of the approved one.
    """
    expected = app_files(content)
    present = {path.relative_to(app_dir).as_posix() for path in app_dir.rglob("*") if not path.is_dir()}
    foreign = sorted(present - expected.keys())
    if foreign:
        return f"{app_dir} holds {foreign[0]!r}, which is not in the app bundle"
    for name, data in expected.items():
        path = app_dir / name
        if name not in present or path.is_symlink() or path.read_bytes() != data:
            return f"{name!r} in {app_dir} is not the app bundle's file"
    return None


def approved_hashes(state_dir: Path) -> set[str]:
    """The hashes recorded by ``client.daemon approve`` (first word of each line, ``#`` comments)."""
    path = state_dir / APPROVALS_FILE
    if not path.exists():
        return set()
    words = (line.split("#", 1)[0].split() for line in path.read_text().splitlines())
    return {w[0].lower() for w in words if w}


def bundle_of(source: Path) -> bytes:
    """The FAB a ``.fab`` file holds, or the one ``flwr build`` and ``flwr run`` build from an app
    folder (Flower's own builder, so the hash is the one the launcher checks)."""
    from flwr.cli.build import build_fab_from_disk  # only approve and review need the builder

    source = source.expanduser()
    if source.is_dir():
        return build_fab_from_disk(source)
    if source.is_file():
        return source.read_bytes()
    raise FileNotFoundError(f"{source} does not exist (expected a .fab file or an app folder)")


def approve(state_dir: Path, source: Path, note: str = "") -> str:
    """Record the hash of a ``.fab`` file, or of the FAB ``flwr run`` builds from an app folder."""
    source = source.expanduser()
    digest = fab_sha256(bundle_of(source))
    if digest not in approved_hashes(state_dir):
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        with (state_dir / APPROVALS_FILE).open("a") as f:
            f.write(f"{digest}  # {source} approved {stamp}{' ' + note if note else ''}\n")
    return digest


def app_refusal(content: bytes, policy: Policy, state_dir: Path) -> str | None:
    """Why this hospital refuses to run the FAB ``content``, or None to run it."""
    digest = fab_sha256(content)
    if policy.accept_any_app or digest in approved_hashes(state_dir):
        return None
    if policy.accept_installed_app:
        mismatch = installed_mismatch(content)
        if mismatch is None:
            return None
        why = f"it is not this hospital's installed code ({mismatch})"
    else:
        why = "policy accept_installed_app=false and the hash is not approved"
    return (
        f"app sha256 {digest} refused: {why}; approve it after review with "
        f"`python -m client.daemon approve <app.fab> --state-dir {state_dir}`"
    )

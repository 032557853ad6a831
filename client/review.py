"""What an app bundle (FAB) would change at this hospital, in words a reviewer reads before ``approve``.

A hospital approves a bundle by its SHA-256 (``client.approval``); this module shows what that hash
stands for. The bundle is compared with the bundle this hospital's installed fedquorum makes
(Flower's builder run on the installed code, so both sides are filtered and serialized the same
way): files added, changed and removed, a unified diff of each changed or added text file, the
run settings it declares in its ``pyproject.toml`` (``[tool.flwr.app.config]``) and the model
code those settings name. Nothing is installed, imported or run.
"""

from __future__ import annotations

import difflib
import io
import re
import textwrap
import tomllib
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from flwr.common.constant import FAB_MAX_SIZE

from client.approval import FAB_CONFIG, app_files, bundle_of, fab_sha256, installed_root

MAX_UNPACKED_BYTES = 10 * FAB_MAX_SIZE  # app code, unpacked; more is refused before it is read
MAX_DIFF_LINES = 400  # per file; a reviewer unpacks the bundle (``unzip``) to read more
IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+(:[A-Za-z_]\w*)?$")  # pkg.mod.Class, pkg.mod:obj
WIDTH = 100  # columns of the wrapped lists
MODEL_KEY = "model"  # the run setting that names a built-in model (``common.settings.RunSettings``)


class ReviewError(ValueError):
    """The bundle (or the installed code to compare it with) cannot be read; the text says which."""


@dataclass(frozen=True)
class BundleReview:
    """A bundle compared with the installed code, as plain data (``lines`` renders it)."""

    source: Path
    sha256: str
    installed: Path
    added: dict[str, bytes]
    changed: dict[str, tuple[bytes, bytes]]  # name -> (installed, bundle)
    removed: list[str]
    unchanged: int
    components: dict[str, tuple[str | None, str | None]]  # serverapp/clientapp -> (installed, bundle)
    config: dict[str, object]
    installed_config: dict[str, object]
    files: frozenset[str]


def _app_section(files: dict[str, bytes], what: str) -> dict:
    """``[tool.flwr.app]`` of a bundle's ``pyproject.toml``."""
    try:
        pyproject = tomllib.loads(files[FAB_CONFIG].decode())
    except KeyError:
        raise ReviewError(f"{what} has no {FAB_CONFIG} (expected a Flower app bundle)") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ReviewError(f"{what}: {FAB_CONFIG} cannot be read as TOML: {err}") from None
    return _table(_table(_table(pyproject, "tool"), "flwr"), "app")


def _table(table: dict, key: str) -> dict:
    """``table[key]`` if it is a table, else empty: a bundle's TOML is not trusted to be well formed."""
    value = table.get(key)
    return value if isinstance(value, dict) else {}


def _check_unpacked_size(source: Path, content: bytes) -> None:
    """Refuse a bundle that would unpack to more than ``MAX_UNPACKED_BYTES`` (a zip bomb sent to the
    reviewer); the sizes are the archive's own, which ``zipfile`` holds each file to."""
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        size = sum(info.file_size for info in archive.infolist())
    if size > MAX_UNPACKED_BYTES:
        raise ReviewError(
            f"{source} would unpack to {size} bytes, more than the {MAX_UNPACKED_BYTES} a review reads "
            f"(Flower caps a bundle at {FAB_MAX_SIZE} bytes packed)"
        )


def installed_bundle_files(root: Path) -> dict[str, bytes]:
    """The files of the bundle the fedquorum installed at ``root`` makes (what runs here now)."""
    if not (root / FAB_CONFIG).is_file():
        raise ReviewError(
            f"the installed fedquorum at {root} has no {FAB_CONFIG} to compare with "
            "(expected an install from the repository: pip install -e .)"
        )
    return app_files(bundle_of(root))


def review(source: Path, root: Path | None = None) -> BundleReview:
    """Compare the bundle at ``source`` (a ``.fab`` file or an app folder) with the installed code."""
    source = source.expanduser()
    try:
        content = bundle_of(source)
        _check_unpacked_size(source, content)
        files = app_files(content)
    except ReviewError:
        raise
    except (zipfile.BadZipFile, zlib.error) as err:
        raise ReviewError(f"{source} is not a readable app bundle (a .fab is a zip archive): {err}") from None
    except ValueError as err:  # Flower's builder: no pyproject.toml, an invalid app configuration
        raise ReviewError(f"{source} cannot be built into an app bundle: {err}") from None
    root = root or installed_root()
    installed = installed_bundle_files(root)
    bundle_app, installed_app = _app_section(files, str(source)), _app_section(installed, "the installed app")
    common = files.keys() & installed.keys()
    changed = {
        name: (installed[name], files[name]) for name in sorted(common) if installed[name] != files[name]
    }
    return BundleReview(
        source=source,
        sha256=fab_sha256(content),
        installed=root,
        added={name: files[name] for name in sorted(files.keys() - installed.keys())},
        changed=changed,
        removed=sorted(installed.keys() - files.keys()),
        unchanged=len(common) - len(changed),
        components={
            role: (_table(installed_app, "components").get(role), _table(bundle_app, "components").get(role))
            for role in ("clientapp", "serverapp")
        },
        config=_table(bundle_app, "config"),
        installed_config=_table(installed_app, "config"),
        files=frozenset(files),
    )


def _text(data: bytes) -> list[str] | None:
    """The lines of a text file, or None for a binary one."""
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def file_diff(name: str, old: bytes | None, new: bytes, max_lines: int = MAX_DIFF_LINES) -> list[str]:
    """A unified diff of one file (``old`` None: a new file), cut after ``max_lines`` with a note."""
    before, after = _text(old or b""), _text(new)
    if before is None or after is None:
        what = f"new, {len(new)} bytes" if old is None else f"changed, {len(old)} -> {len(new)} bytes"
        return [f"{name}: binary file ({what}); not shown"]
    lines = [
        line.rstrip("\n")
        for line in difflib.unified_diff(
            before, after, "/dev/null" if old is None else f"installed/{name}", f"bundle/{name}"
        )
    ]
    if len(lines) > max_lines:
        hidden = len(lines) - max_lines
        lines = [
            *lines[:max_lines],
            f"... diff cut here: {hidden} more line(s); unzip the bundle to read all",
        ]
    return lines


def module_file(import_path: str, files: frozenset[str]) -> str | None:
    """The bundle file an import path (``pkg.mod.Class`` or ``pkg.mod:obj``) loads, or None."""
    parts = import_path.replace(":", ".").split(".")
    for end in range(len(parts), 0, -1):
        stem = "/".join(parts[:end])
        for candidate in (f"{stem}.py", f"{stem}/__init__.py"):
            if candidate in files:
                return candidate
    return None


def _value(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _wrapped(title: str, names: list[str], indent: str = "") -> list[str]:
    """``title: a, b, c`` (or ``none``) wrapped at ``WIDTH`` columns, never inside a name."""
    text = f"{title}: {', '.join(names) or 'none'}"
    return textwrap.wrap(
        text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ", break_on_hyphens=False
    )


def config_lines(found: BundleReview) -> list[str]:
    """The run settings the bundle declares, those that differ from the installed ones first."""
    new, old = found.config, found.installed_config
    differ = [key for key in new if key in old and new[key] != old[key]]
    lines = [f"  {key} = {_value(new[key])}   (installed: {_value(old[key])})" for key in differ]
    lines += [
        f"  {key} = {_value(new[key])}   (new: the installed app has no such setting)"
        for key in new
        if key not in old
    ]
    lines += [
        f"  {key}: no longer declared   (installed: {_value(old[key])})" for key in old if key not in new
    ]
    same = [key for key in new if key in old and new[key] == old[key]]
    if same:
        lines += _wrapped(f"the other {len(same)} setting(s) have the installed defaults", same, "  ")
    return lines or ["  none"]


def model_lines(found: BundleReview) -> list[str]:
    """The model code the bundle's settings name: the built-in model, and every import path."""
    lines = []
    for key, value in found.config.items():
        if isinstance(value, str) and IMPORT_PATH.match(value):
            where = module_file(value, found.files)
            if where is None:
                origin = "NOT in the bundle: it would have to be installed here already"
            elif where in found.added or where in found.changed:
                origin = f"{where}, {'added' if where in found.added else 'changed'} by this bundle"
            else:
                origin = f"{where}, as installed"
            lines.append(f"  {key} = {value!r}: code from {origin}")
        elif key == MODEL_KEY:
            lines.append(
                f"  {key} = {_value(value)} (a model by name, built by the bundle's models/registry.py)"
            )
    return lines or ["  none named in its settings"]


def visible(line: str) -> str:
    """``line`` with control and format characters written as escapes (``\\u001b``, ``\\u202e``), so a
    bundle cannot hide a line from the reviewer's terminal (ANSI codes, carriage returns, bidi
    overrides as in "Trojan Source")."""
    return "".join(
        f"\\u{ord(ch):04x}" if ch != "\t" and unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in line
    )


def lines(found: BundleReview) -> list[str]:
    """The review, in plain words for a hospital reviewer (every line made ``visible``)."""
    out = [
        f"App bundle: {found.source}",
        f"SHA-256: {found.sha256}",
        "  (`approve` records this hash; the daemon runs a submitted bundle only if its hash is",
        "   the same, so it must match the hash the ML engineer sent you)",
        f"Compared with the fedquorum installed here, the code this hospital runs now: {found.installed}",
        "",
        "Entry points (the code Flower starts):",
    ]
    for role, (old, new) in found.components.items():
        note = "same as installed" if old == new else f"CHANGED: the installed app starts {old!r}"
        out.append(f"  {role}: {new!r} ({note})")
    out += [
        "",
        *_wrapped(f"Files added ({len(found.added)})", list(found.added)),
        *_wrapped(f"Files changed ({len(found.changed)})", list(found.changed)),
        *_wrapped(f"Files removed ({len(found.removed)}, installed but not in the bundle)", found.removed),
        f"Files unchanged: {found.unchanged}",
        "",
        "Run settings it declares ([tool.flwr.app.config]; the engineer may still override them per run):",
        *config_lines(found),
        "",
        "Model code it names in those settings:",
        *model_lines(found),
    ]
    if found.added or found.changed:
        out += [
            "",
            "What is new or different, file by file (+ only in the bundle, - only in the installed code):",
        ]
        for name, data in found.added.items():
            out += ["", *file_diff(name, None, data)]
        for name, (old, new) in found.changed.items():
            out += ["", *file_diff(name, old, new)]
    else:
        out += ["", "No file differs from the installed code."]
    return [visible(line) for line in out]

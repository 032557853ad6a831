"""A real SuperLink (TLS + node authentication) and two hospital daemons on 127.0.0.1:

* ``server.coordinator status`` lists the hospitals by name, online;
* ``client.daemon --check-only`` connects: it passes with the right CA and a registered key, and
  fails naming the fix with a wrong CA, an unregistered key and a closed port;
* an app that is not the hospitals' installed code is refused at every hospital before any of its
  code runs (its ClientApp would write a marker file: the file stays absent), and each refusal is
  in the hospital's audit log; the ServerApp's log names the refusals;
* once both hospitals approve that app's hash it runs (the marker appears), and the default policy
  still refuses it as a plaintext run (``strategy=fedavg``), audited, naming ``require_encrypted``;
* (no SuperLink) a bundle installed in an ``accept_any_app`` trial whose hash shares its first 8 hex
  digits with an approved bundle's is not imported in the approved one's place.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from deploy_helpers import (
    BIN,
    ROOT,
    Processes,
    flower_env,
    flwr,
    free_port,
    identity_args,
    read_audit,
    start_superlink,
    wait_until,
)

from common.bundle import bundle_packages

HOSPITALS = 2
APP_PACKAGES = bundle_packages()


def python(module: str, *args: str) -> list[str]:
    return [str(BIN / "python"), "-m", module, *args]


def daemon_args(
    pilot: Path, name: str, port: int, state: Path, partition: int, **override: Path
) -> list[str]:
    hospital = pilot / "hospitals" / name
    return [
        *python("client.daemon", "--superlink", f"127.0.0.1:{port}"),
        "--root-certificates",
        str(override.get("ca", hospital / "ca.crt")),
        "--auth-key",
        str(override.get("key", hospital / "node.key")),
        "--partition-id",
        str(partition),
        "--num-partitions",
        str(HOSPITALS),
        "--state-dir",
        str(state),
        "--port",
        str(free_port()),
        *identity_args(hospital, name),
    ]


def check_only(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*args, "--check-only"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def marked_app(directory: Path, marker: Path) -> Path:
    """A copy of this checkout's app whose ClientApp writes ``marker`` as soon as it is imported."""
    for package in APP_PACKAGES:
        if (ROOT / package).is_dir():
            shutil.copytree(ROOT / package, directory / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", directory / "pyproject.toml")
    with (directory / "client" / "app.py").open("a") as f:
        f.write(f"\nimport pathlib\n\npathlib.Path({str(marker)!r}).touch()\n")
    return directory


def submit(home: Path, app: Path, pilot: Path, extra: str = "") -> int:
    done = flwr(
        home,
        "run",
        str(app),
        "pilot",
        "--run-config",
        f"roster='{pilot / 'roster.json'}' num-rounds=1{extra}",
    )
    found = re.search(r"started run (\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    return int(found.group(1))


def refusals(state: Path, run_id: int) -> list[dict]:
    path = state / "audit.jsonl"
    entries = read_audit(path) if path.exists() else []
    return [e for e in entries if e["run_id"] == str(run_id) and e["outcome"] == "refused"]


def test_check_only_connects_and_only_approved_apps_run(tmp_path: Path, procs: Processes) -> None:
    env = flower_env(tmp_path / "flwr-home")
    pilot, other = tmp_path / "pilot", tmp_path / "other"
    for directory in (pilot, other):
        made = subprocess.run(
            python(
                "server.coordinator", "init-pilot", "--hospitals", str(HOSPITALS), "--out", str(directory)
            ),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stderr
    link, port = start_superlink(procs, pilot, env, HOSPITALS)
    assert link.poll() is None, procs.log("superlink")
    states = [tmp_path / f"state-{i + 1}" for i in range(HOSPITALS)]

    # --check-only reaches the SuperLink as the SuperNode will
    good = check_only(daemon_args(pilot, "hospital-1", port, states[0], 0), env)
    assert good.returncode == 0, good.stderr
    assert "TLS handshake passed" in good.stderr and "is registered" in good.stderr
    wrong_ca = check_only(
        daemon_args(pilot, "hospital-1", port, states[0], 0, ca=other / "ca" / "ca.crt"), env
    )
    assert wrong_ca.returncode == 2
    assert "certificate is not signed by --root-certificates" in wrong_ca.stderr
    stranger = other / "hospitals" / "hospital-1" / "node.key"
    unregistered = check_only(daemon_args(pilot, "hospital-1", port, states[0], 0, key=stranger), env)
    assert unregistered.returncode == 2
    assert f"node authentication key {stranger} is not registered at SuperLink" in unregistered.stderr
    closed = check_only(daemon_args(pilot, "hospital-1", free_port(), states[0], 0), env)
    assert (
        closed.returncode == 2 and "cannot connect" in closed.stderr and "Connection refused" in closed.stderr
    )

    for i, state in enumerate(states):
        procs.start(f"hospital-{i + 1}", daemon_args(pilot, f"hospital-{i + 1}", port, state, i), env)
    wait_until(
        lambda: all("SuperNode ID" in procs.log(f"hospital-{i + 1}") for i in range(HOSPITALS)),
        300,
        "SuperNodes",
    )

    # the coordinator sees them by name
    status = subprocess.run(
        python("server.coordinator", "status", "--pilot", str(pilot), "--superlink", f"127.0.0.1:{port}"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    online = {row.split()[0] for row in status.stdout.splitlines() if " online " in row}
    assert online == {"hospital-1", "hospital-2"}, status.stdout

    # an app that is not the installed code: refused everywhere, none of its code ran
    home = pilot / "superlink" / "flwr"  # the coordinator's CLI config (connection "pilot")
    marker = tmp_path / "marker"
    app = marked_app(tmp_path / "app", marker)
    run_id = submit(home, app, pilot)
    wait_until(lambda: all(refusals(s, run_id) for s in states), 300, "every hospital to refuse the app")
    for state in states:
        (entry,) = refusals(state, run_id)
        assert entry["message_type"] == "query.hello" and entry["sent"] == {}
        assert "refused: it is not this hospital's installed code (client/app.py differs" in entry["reason"]
    assert not marker.exists()
    wait_until(
        lambda: "failed" in flwr(home, "log", str(run_id), "pilot", "--show").stdout, 120, "the run log"
    )
    assert "not this hospital's installed code" in flwr(home, "log", str(run_id), "pilot", "--show").stdout

    # approved after review, it runs; the default policy still refuses a plaintext run
    for state in states:
        approved = subprocess.run(
            python("client.daemon", "approve", str(app), "--state-dir", str(state)),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert approved.returncode == 0, approved.stderr
    run_id = submit(home, app, pilot, " strategy='fedavg'")
    wait_until(lambda: all(refusals(s, run_id) for s in states), 300, "every hospital to refuse plaintext")
    assert marker.exists()  # the approved app's code ran ...
    for state in states:
        (entry,) = refusals(state, run_id)  # ... and refused the plaintext run at its first message
        assert entry["message_type"] == "query.statistics"
        assert entry["reason"].startswith("policy require_encrypted=true")


# -- Flower names an installed app's directory by 8 hex digits of the FAB's hash ----------------
TINY_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "collide"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedquorum-test"

[tool.flwr.app.components]
serverapp = "collide_app.app:app"
clientapp = "collide_app.app:app"
"""
COMMENT_BYTES = 8


def tiny_fab(directory: Path, app_code: str) -> bytes:
    from flwr.cli.build import build_fab_from_disk

    (directory / "collide_app").mkdir(parents=True)
    (directory / "collide_app" / "__init__.py").write_text("")
    (directory / "collide_app" / "app.py").write_text(app_code)
    (directory / "pyproject.toml").write_text(TINY_PYPROJECT)
    return build_fab_from_disk(directory)


def with_comment(fab: bytes, comment: bytes) -> bytes:
    """The same bundle with a zip archive comment: same files and manifest, another hash."""
    assert fab[-2:] == b"\0\0", "expected a FAB without an archive comment"
    return fab[:-2] + len(comment).to_bytes(2, "little") + comment


def colliding_pair(first: bytes, second: bytes) -> tuple[bytes, bytes]:
    """Variants of two bundles whose SHA-256 share the first 8 hex digits (a birthday search over
    archive comments: ~2^16 hashes of each, well under a second)."""
    import hashlib

    bases = [hashlib.sha256(fab[:-2] + COMMENT_BYTES.to_bytes(2, "little")) for fab in (first, second)]
    seen: list[dict[bytes, bytes]] = [{}, {}]
    for counter in range(1 << 22):
        comment = counter.to_bytes(COMMENT_BYTES, "little")
        for side in (0, 1):
            digest = bases[side].copy()
            digest.update(comment)
            prefix = digest.digest()[:4]
            other = seen[1 - side].get(prefix)
            if other is not None:
                comments = (comment, other) if side == 0 else (other, comment)
                return with_comment(first, comments[0]), with_comment(second, comments[1])
            seen[side][prefix] = comment
    raise AssertionError("no 8-hex-digit collision in 2^22 tries")


def test_a_colliding_bundle_installed_in_a_trial_is_not_run_as_an_approved_one(
    tmp_path: Path, monkeypatch
) -> None:
    """A bundle installed while the policy accepted any app must not later run in place of an
    approved bundle whose hash shares its first 8 hex digits: ``client.launcher`` reinstalls."""
    import sys

    from flwr.cli.install import install_from_fab
    from flwr.clientapp.utils import get_load_client_app_fn

    from client.approval import APPROVALS_FILE, app_refusal, fab_sha256
    from client.launcher import verified_install
    from client.policy import Policy

    marker = tmp_path / "malicious-code-ran"
    genuine, malicious = colliding_pair(
        tiny_fab(tmp_path / "genuine", "from flwr.clientapp import ClientApp\n\napp = ClientApp()\n"),
        tiny_fab(
            tmp_path / "malicious",
            "import pathlib\n\nfrom flwr.clientapp import ClientApp\n\n"
            f"pathlib.Path({str(marker)!r}).touch()\napp = ClientApp()\n",
        ),
    )
    assert fab_sha256(genuine)[:8] == fab_sha256(malicious)[:8] and genuine != malicious
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    state = tmp_path / "state"
    state.mkdir()
    (state / APPROVALS_FILE).write_text(f"{fab_sha256(genuine)}  # reviewed\n")
    strict = Policy()
    assert app_refusal(genuine, strict, state) is None
    assert app_refusal(malicious, strict, state) is not None

    # the trial (accept_any_app) installed the malicious bundle; Flower alone would reuse it
    trial_dir = install_from_fab(malicious, skip_prompt=True)
    assert install_from_fab(genuine, skip_prompt=True) == trial_dir

    app_dir = verified_install(genuine)
    assert app_dir == trial_dir
    load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        load("fedquorum-test/collide", "1.0.0", fab_sha256(genuine))
    finally:
        for name in [m for m in sys.modules if m == "collide_app" or m.startswith("collide_app.")]:
            del sys.modules[name]
    assert not marker.exists()
    assert (app_dir / "collide_app" / "app.py").read_text().startswith("from flwr.clientapp")

"""Hospital daemon start-up checks: clear errors naming the setting, 0700 state dir, 0600 keys, the
roster and this hospital's signing key."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import stat
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deploy_helpers import identity_args

from client import daemon, daemon_keys, daemon_start
from client import node_check as check
from client.approval import approved_hashes, fab_sha256
from client.policy import NODE_POLICY
from client.supernode_supervisor import supervise
from he.identity import SigningKey
from he.roster import NODE_HOSPITAL, NODE_ROSTER, NODE_SIGNING_KEY, Roster
from server import pki


@pytest.fixture(autouse=True)
def no_supernode(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that forgets --check-only must fail, not turn pytest into a SuperNode."""

    def refuse(*args: object) -> None:
        raise AssertionError(f"the daemon tried to run {args[0]}; pass --check-only or --print-command")

    monkeypatch.setattr(daemon, "supervise", refuse)


@pytest.fixture(autouse=True)
def no_superlink(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SuperLink here: ``--check-only``'s connection probe is tested against a real one in
    ``test_approved_apps.py``."""
    monkeypatch.setattr(check, "check_superlink", lambda *args: "SuperLink probe skipped in this test")


@pytest.fixture(scope="module")
def pilot(tmp_path_factory: pytest.TempPathFactory) -> pki.PilotLayout:
    return pki.init_pilot(tmp_path_factory.mktemp("pilot"), 2)


def write_csv(path: Path, features: int = 4, rows: int = 40) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(rows, features)), columns=[f"f{i}" for i in range(features)])
    frame["outcome"] = np.arange(rows) % 2
    frame.to_csv(path, index=False)
    return path


def test_check_data_reports_the_schema_and_names_the_mismatch(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "cohort.csv")
    summary = check.check_data(csv, "outcome", num_features=4, num_classes=2)
    assert summary.num_features == 4 and summary.train_examples + summary.test_examples == 40
    with pytest.raises(check.NodeCheckError, match=r"cohort.csv has 4 feature columns, expected 30"):
        check.check_data(csv, "outcome", num_features=30)
    with pytest.raises(check.NodeCheckError, match=r"missing column\(s\) \['target'\]"):
        check.check_data(csv, "target")
    with pytest.raises(check.NodeCheckError, match=r"nope.csv does not exist"):
        check.check_data(tmp_path / "nope.csv")
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(check.NodeCheckError, match=r"expected .csv or .npz"):
        check.check_data(tmp_path / "x.parquet")


def test_state_dir_is_created_0700_and_tightened(tmp_path: Path) -> None:
    created = check.check_state_dir(tmp_path / "a" / "state")
    assert stat.S_IMODE(created.stat().st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert stat.S_IMODE(check.check_state_dir(loose).stat().st_mode) == 0o700
    (tmp_path / "file").write_text("")
    with pytest.raises(check.NodeCheckError, match="not a directory"):
        check.check_state_dir(tmp_path / "file")


def test_flower_version_and_clock() -> None:
    assert check.pinned_flower_version() == check.check_flower_version()
    with pytest.raises(check.NodeCheckError, match=r"expected the pinned 0\.0\.1"):
        check.check_flower_version("0.0.1")
    assert check.check_clock(datetime(2020, 1, 1, tzinfo=UTC))
    assert check.check_clock() == []


def test_keys_and_certificates(tmp_path: Path, pilot: pki.PilotLayout) -> None:
    node_key = pilot.hospital_dir("hospital-1") / "node.key"
    assert check.check_auth_key(node_key) == node_key
    assert check.check_root_certificate(pilot.ca_cert) == pilot.ca_cert
    with pytest.raises(check.NodeCheckError, match="fix the system clock"):
        check.check_root_certificate(pilot.ca_cert, now=datetime(2020, 1, 1, tzinfo=UTC))
    with pytest.raises(check.NodeCheckError, match=r"not a PEM X\.509"):
        check.check_root_certificate(pilot.hospital_dir("hospital-1") / "node.pub")
    loose = tmp_path / "loose.key"
    loose.write_bytes(node_key.read_bytes())
    loose.chmod(0o644)
    with pytest.raises(check.NodeCheckError, match=r"mode 644: readable by others; expected 600"):
        check.check_auth_key(loose)
    pem = tmp_path / "server.key"
    pem.write_bytes(pilot.server_key.read_bytes())
    pem.chmod(0o600)
    with pytest.raises(check.NodeCheckError, match="not an unencrypted OpenSSH private key"):
        check.check_auth_key(pem)


def test_keygen_writes_0600_private_key_usable_by_flower(tmp_path: Path) -> None:
    private, public = daemon_keys.keygen(tmp_path / "keys")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert check.check_auth_key(private) == private
    from flwr.cli.supernode.register import try_load_public_key

    assert try_load_public_key(public)  # what `flwr supernode register` accepts
    with pytest.raises(check.NodeCheckError, match="already exists"):
        daemon_keys.keygen(tmp_path / "keys")


def secure_args(pilot: pki.PilotLayout, tmp_path: Path, data: Path) -> list[str]:
    return [
        "--superlink",
        "fl.example.org:9093",
        "--root-certificates",
        str(pilot.ca_cert),
        "--auth-key",
        str(pilot.hospital_dir("hospital-1") / "node.key"),
        "--data",
        str(data),
        "--target-column",
        "outcome",
        "--num-features",
        "4",
        "--state-dir",
        str(tmp_path / "state"),
        "--port",
        "19555",
        *identity_args(pilot.hospital_dir("hospital-1"), "hospital-1"),
    ]


def test_daemon_builds_the_supernode_command(
    tmp_path: Path, pilot: pki.PilotLayout, capsys: pytest.CaptureFixture
) -> None:
    data = write_csv(tmp_path / "my cohort.csv")  # a space in the path survives (TOML node config)
    assert (
        daemon.main([*secure_args(pilot, tmp_path, data), "--print-command", "--", "--max-retries", "3"]) == 0
    )
    cmd = capsys.readouterr().out.split()
    assert cmd[0].endswith("flower-supernode")
    flags = {flag: cmd[i + 1] for i, flag in enumerate(cmd[:-1]) if flag.startswith("--")}
    assert flags["--superlink"] == "fl.example.org:9093"
    assert flags["--root-certificates"] == str(pilot.ca_cert)
    assert flags["--auth-supernode-private-key"] == str(pilot.hospital_dir("hospital-1") / "node.key")
    assert flags["--port"] == "19555" and flags["--host"] == "127.0.0.1"
    assert "--insecure" not in cmd and cmd[-2:] == ["--max-retries", "3"]
    node_config = tmp_path / "state" / "node-config.toml"
    assert flags["--node-config"] == str(node_config)
    values = tomllib.loads(node_config.read_text())
    assert values == {
        "state-dir": str(tmp_path / "state"),
        "data-path": str(data),
        "target-column": "outcome",
        "task": "classification",  # pinned: a run for another task is refused
        "time-column": "time",
        "event-column": "event",
        NODE_ROSTER: str(pilot.hospital_dir("hospital-1") / "roster.json"),
        NODE_SIGNING_KEY: str(pilot.signing_key("hospital-1")),
        NODE_HOSPITAL: "hospital-1",
        NODE_POLICY: str(tmp_path / "state" / "policy.toml"),  # absent: the defaults
    }
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    launcher = tmp_path / "state" / "bin" / "flwr-clientapp"  # the app approval check
    assert "-m client.launcher" in launcher.read_text() and launcher.stat().st_mode & 0o100
    path = daemon_start.supernode_env(launcher.parent)["PATH"].split(os.pathsep)
    assert path[:2] == [str(launcher.parent), str(Path(sys.executable).parent)]


def test_daemon_refuses_to_start_with_a_clear_error(
    tmp_path: Path, pilot: pki.PilotLayout, caplog: pytest.LogCaptureFixture
) -> None:
    args = secure_args(pilot, tmp_path, tmp_path / "missing.csv")
    assert daemon.main([*args, "--check-only"]) == 2
    assert "not starting: data file" in caplog.text and "missing.csv does not exist" in caplog.text
    caplog.clear()
    no_ca = [a for a in args if a not in ("--root-certificates", str(pilot.ca_cert))]
    assert daemon.main([*no_ca, "--check-only"]) == 2
    assert "--root-certificates is required" in caplog.text


def test_insecure_needs_the_flag_and_warns_loudly(
    tmp_path: Path, pilot: pki.PilotLayout, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    args = ["--superlink", "127.0.0.1:9093", "--partition-id", "0", "--num-partitions", "3"]
    args += ["--state-dir", str(tmp_path / "s")]
    args += identity_args(pilot.hospital_dir("hospital-2"), "hospital-2")
    assert daemon.main(args) == 2
    assert "--root-certificates is required" in caplog.text
    assert daemon.main([*args, "--insecure", "--print-command"]) == 0
    assert "INSECURE MODE" in caplog.text
    cmd = capsys.readouterr().out.split()
    assert "--insecure" in cmd and "--auth-supernode-private-key" not in cmd


def test_config_file_gives_defaults_and_rejects_unknown_keys(tmp_path: Path, pilot: pki.PilotLayout) -> None:
    data = write_csv(tmp_path / "cohort.csv")
    config = tmp_path / "daemon.toml"
    config.write_text(
        f'superlink = "fl.example.org:9093"\nroot-certificates = "{pilot.ca_cert}"\n'
        f'auth-key = "{pilot.hospital_dir("hospital-1") / "node.key"}"\ndata = "{data}"\n'
        f'target-column = "outcome"\nstate-dir = "{tmp_path / "state"}"\n'
        f'roster = "{pilot.roster}"\nsigning-key = "{pilot.signing_key("hospital-1")}"\n'
        'hospital = "hospital-1"\n'
    )
    args, extra = daemon.parse(["--config", str(config), "--port", "19600"])
    assert args.superlink == "fl.example.org:9093" and args.port == 19600 and extra == []
    assert (args.roster, args.hospital) == (str(pilot.roster), "hospital-1")
    config.write_text('superlink = "x:1"\ndata_path = "typo"\n')
    with pytest.raises(check.NodeCheckError, match=r"unknown key\(s\) \['data_path'\]"):
        daemon.parse(["--config", str(config)])


# -- the roster and the signing key ------------------------------------------------------------------
def copy_key(source: Path, target: Path, file_mode: int = 0o600) -> Path:
    target.write_bytes(source.read_bytes())
    target.chmod(file_mode)
    return target


def test_roster_fingerprint_is_printed_and_the_name_derived_from_the_key(
    tmp_path: Path, pilot: pki.PilotLayout, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fedquorum.daemon")
    args = secure_args(pilot, tmp_path, write_csv(tmp_path / "cohort.csv"))
    assert daemon.main([*args, "--check-only"]) == 0
    roster = Roster.load(pilot.roster)
    assert f"roster fingerprint: {roster.short_fingerprint}" in caplog.text
    assert "this is 'hospital-1' (party 1)" in caplog.text
    assert "BEGIN" not in caplog.text  # never key material
    without_name = args[: args.index("--hospital")]  # --hospital is the last flag pair
    assert (
        daemon.main([*without_name, "--signing-key", str(pilot.signing_key("hospital-2")), "--check-only"])
        == 0
    )
    values = tomllib.loads((tmp_path / "state" / "node-config.toml").read_text())
    assert values[NODE_HOSPITAL] == "hospital-2"  # the roster entry whose key it is


def test_signing_key_of_another_hospital_is_refused_naming_the_file(
    tmp_path: Path, pilot: pki.PilotLayout, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = pilot.signing_key("hospital-2")
    args = secure_args(pilot, tmp_path, write_csv(tmp_path / "cohort.csv"))
    assert daemon.main([*args, "--signing-key", str(wrong), "--check-only"]) == 2
    assert f"not starting: signing key {wrong}" in caplog.text
    assert "does not match the key roster" in caplog.text and "'hospital-1'" in caplog.text
    stranger = tmp_path / "stranger.key"
    SigningKey.generate().save(stranger)
    with pytest.raises(check.NodeCheckError, match=r"stranger\.key .* is the key of no hospital in roster"):
        check.check_signing_key(stranger, Roster.load(pilot.roster), pilot.roster)


@pytest.mark.parametrize("file_mode", [0o640, 0o604])
def test_group_or_world_readable_signing_key_is_refused(
    tmp_path: Path, pilot: pki.PilotLayout, file_mode: int
) -> None:
    loose = copy_key(pilot.signing_key("hospital-1"), tmp_path / "signing.key", file_mode)
    with pytest.raises(check.NodeCheckError, match=rf"signing key {loose} has mode {file_mode:o}: readable"):
        check.check_signing_key(loose, Roster.load(pilot.roster), pilot.roster, "hospital-1")


def test_unknown_hospital_and_bad_roster_are_refused(
    tmp_path: Path, pilot: pki.PilotLayout, caplog: pytest.LogCaptureFixture
) -> None:
    args = secure_args(pilot, tmp_path, write_csv(tmp_path / "cohort.csv"))
    assert daemon.main([*args, "--hospital", "hospital-9", "--check-only"]) == 2
    assert "hospital 'hospital-9' is not in roster" in caplog.text
    assert "expected one of ['hospital-1', 'hospital-2']" in caplog.text
    with pytest.raises(check.NodeCheckError, match=r"roster .*nope\.json does not exist"):
        check.check_roster(tmp_path / "nope.json")
    broken = tmp_path / "roster.json"
    broken.write_text('{"format": "something-else"}')
    with pytest.raises(check.NodeCheckError, match=r"roster .*roster\.json: expected format"):
        check.check_roster(broken)
    no_roster = [
        a for a in args if a not in ("--roster", str(pilot.hospital_dir("hospital-1") / "roster.json"))
    ]
    caplog.clear()
    assert daemon.main([*no_roster, "--check-only"]) == 2
    assert "--roster is required" in caplog.text


def test_signing_keygen_writes_a_0600_key_and_prints_the_public_hex(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert daemon.main(["signing-keygen", "--out", str(tmp_path / "keys")]) == 0
    printed = capsys.readouterr().out
    private = tmp_path / "keys" / "signing.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    public = SigningKey.load(private).public_bytes().hex()
    assert public in printed and (tmp_path / "keys" / "signing.pub").read_text().strip() == public
    assert "BEGIN" not in printed
    assert daemon.main(["signing-keygen", "--out", str(tmp_path / "keys")]) == 2
    assert "already exists" in capsys.readouterr().err


# -- the hospital's policy and approved apps -------------------------------------------------------------
def test_policy_the_roster_breaks_stops_the_daemon_naming_the_key(
    tmp_path: Path, pilot: pki.PilotLayout, caplog: pytest.LogCaptureFixture
) -> None:
    args = secure_args(pilot, tmp_path, write_csv(tmp_path / "cohort.csv"))
    policy = tmp_path / "policy.toml"
    policy.write_text("min_threshold = 3\n")  # the 2-hospital roster lets 2 keyholders decrypt
    assert daemon.main([*args, "--policy", str(policy), "--check-only"]) == 2
    assert "not starting: policy min_threshold=3, but the roster lets 2 keyholder(s) decrypt" in caplog.text
    caplog.clear()
    policy.write_text('allowed_presets = ["precise"]\n')
    assert daemon.main([*args, "--policy", str(policy), "--check-only"]) == 2
    assert "does not include preset 'compact'" in caplog.text
    caplog.clear()
    policy.write_text("require_encrypted = 1\n")
    assert daemon.main([*args, "--policy", str(policy), "--check-only"]) == 2
    assert "require_encrypted must be true or false, got 1" in caplog.text
    caplog.clear()
    assert daemon.main([*args, "--policy", str(tmp_path / "nope.toml"), "--check-only"]) == 2
    assert "nope.toml does not exist" in caplog.text


def test_approve_records_the_apps_hash(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fab = tmp_path / "app.fab"
    fab.write_bytes(b"reviewed bundle")
    state = tmp_path / "state"
    assert daemon.main(["approve", str(fab), "--state-dir", str(state), "--note", "reviewed by IT"]) == 0
    assert daemon.main(["approve", str(fab), "--state-dir", str(state)]) == 0  # once only
    assert fab_sha256(b"reviewed bundle") in capsys.readouterr().out
    assert approved_hashes(state) == {fab_sha256(b"reviewed bundle")}
    assert (state / "approved-apps.txt").read_text().count("\n") == 1
    assert daemon.main(["approve", str(tmp_path / "nope.fab"), "--state-dir", str(state)]) == 2


# -- data traps ---------------------------------------------------------------------------------------
def labelled_csv(path: Path, labels: list) -> Path:
    frame = pd.DataFrame({"f0": np.arange(len(labels), dtype=float), "outcome": labels})
    frame.to_csv(path, index=False)
    return path


def test_text_labels_need_the_federations_classes_and_are_numbered_by_them(tmp_path: Path) -> None:
    from client.local_data import TaskConfig, load_hospital_data

    text = labelled_csv(tmp_path / "text.csv", ["benign", "malignant"] * 10)
    numbers = labelled_csv(tmp_path / "numbers.csv", [0, 1] * 10)
    with pytest.raises(
        check.NodeCheckError, match=r"text; give the federation's label values with --classes"
    ):
        check.check_data(text, "outcome")
    assert check.check_data(text, "outcome", classes=["malignant", "benign"]).num_classes == 2
    with pytest.raises(check.NodeCheckError, match=r"label\(s\) \['0', '1'\] of column 'outcome' are not in"):
        check.check_data(numbers, "outcome", classes=["benign", "malignant"])

    def site(path: Path, classes: str):  # what the ClientApp loads for a run
        task = TaskConfig.from_config({"dataset": "csv", "classes": classes, "target-column": "outcome"})
        return load_hospital_data(task, {"data-path": str(path)})

    with pytest.raises(ValueError, match=r"text; give the federation's label values with dataset\.classes"):
        site(text, "")
    mapped = site(text, "benign,malignant")
    assert mapped.class_names == ("benign", "malignant")
    with pytest.raises(ValueError, match=r"\['0', '1'\] of column 'outcome' are not in classes"):
        site(numbers, "benign,malignant")
    assert site(numbers, "").class_names == (0, 1)  # numbers sort the same way at every site


def test_header_only_csv_is_reported_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("f0,f1,outcome\n")
    with pytest.raises(check.NodeCheckError, match=r"header.csv is empty: a header row but no data rows"):
        check.check_data(path, "outcome")


FAKE_SUPERNODE = """
import subprocess, sys
from pathlib import Path
tries = Path(sys.argv[1])
tries.write_text(tries.read_text() + "x" if tries.exists() else "x")
if len(tries.read_text()) < int(sys.argv[2]):
    # like Flower's SuperExec: a child that outlives the SuperNode, holding its output open
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(sys.argv[1] + ".pids", "a") as pids:
        pids.write(f"{child.pid}\\n")
    print("ERROR :      Exit Code: 305", flush=True)
    print("Failed to activate SuperNode.", flush=True)
    sys.exit(1)
print("INFO :      SuperNode ID: 4242", flush=True)
"""


@pytest.fixture
def fake_supernode(tmp_path: Path) -> Iterator[Callable[[int], list[str]]]:
    """A ``flower-supernode`` refused activation (Exit Code: 305) until try ``succeeds_on_try``;
    the children it leaves behind are stopped by PID."""
    script = tmp_path / "supernode.py"
    script.write_text(FAKE_SUPERNODE)
    yield lambda succeeds_on_try: [sys.executable, str(script), str(tmp_path / "tries"), str(succeeds_on_try)]
    pids = tmp_path / "tries.pids"
    for pid in pids.read_text().split() if pids.exists() else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def test_a_restarted_node_waits_for_its_old_heartbeat_then_says_connected(
    tmp_path: Path, fake_supernode, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "fedquorum.daemon")
    started = time.monotonic()
    code = supervise(
        fake_supernode(3), dict(os.environ), "fl.example.org:9093", lambda: "registered", backoff=(0.01,)
    )
    assert code == 0
    assert time.monotonic() - started < 30  # not held up by the children still holding the output
    assert (tmp_path / "tries").read_text() == "xxx"
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert (
        retries
        == [
            "SuperLink fl.example.org:9093 did not activate this node: the previous node is still "
            "registered until its heartbeat expires; retrying in 0 s"
        ]
        * 2
    )
    assert "connected to SuperLink fl.example.org:9093 (node id 4242)" in caplog.text
    assert "Failed to activate SuperNode." in capsys.readouterr().err  # Flower's own lines, relayed


def test_an_unregistered_key_is_not_retried_and_says_why(
    tmp_path: Path, fake_supernode, caplog: pytest.LogCaptureFixture
) -> None:
    def not_registered() -> str:
        raise check.NodeCheckError("node authentication key node.key is not registered at SuperLink x")

    code = supervise(fake_supernode(2), dict(os.environ), "x", not_registered)
    assert code == 1  # Flower's exit status for an error (its own code, 305, is in its log)
    assert (tmp_path / "tries").read_text() == "x"
    assert "did not activate this node: node authentication key node.key is not registered" in caplog.text
    assert "retrying" not in caplog.text and "connected" not in caplog.text


# -- the data check's report, --training-seed, status ----------------------------------------------
def test_the_data_check_reports_missing_values_zero_codes_and_labels_to_the_console_only(
    tmp_path: Path, pilot: pki.PilotLayout, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    data = write_csv(tmp_path / "cohort.csv")
    frame = pd.read_csv(data)
    frame.loc[:24, "f0"] = np.nan  # 25 of 40 rows: mostly missing
    frame["f1"] = np.linspace(100.0, 140.0, len(frame)).round()
    frame.loc[[3, 7], "f1"] = 0.0  # a blood pressure of 0: "not measured"
    frame.to_csv(data, index=False)
    assert check.check_data(data, "outcome").quality.missing == {"f0": 25}
    caplog.set_level(logging.INFO)
    assert daemon.main([*secure_args(pilot, tmp_path, data), "--check-only"]) == 0
    assert "data check:   column 'f0': 25 missing (62.5 %), imputed" in caplog.text
    assert "data check:   label balance: '0': 20, '1': 20" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'f0' is 62.5 % missing" in w for w in warnings)
    assert any("'f1' holds 0 in 2 row(s)" in w for w in warnings)
    node_config = (tmp_path / "state" / "node-config.toml").read_text()
    assert "f0" not in node_config and "label balance" not in node_config  # nothing leaves in config
    assert capsys.readouterr().out == ""


def test_training_seed_goes_into_the_node_config_only_when_given(
    tmp_path: Path, pilot: pki.PilotLayout, capsys: pytest.CaptureFixture
) -> None:
    from client.local_data import TRAINING_SEED_KEY

    data = write_csv(tmp_path / "cohort.csv")
    node_config = tmp_path / "state" / "node-config.toml"
    assert daemon.main([*secure_args(pilot, tmp_path, data), "--training-seed", "17", "--print-command"]) == 0
    assert tomllib.loads(node_config.read_text())[TRAINING_SEED_KEY] == 17
    assert daemon.main([*secure_args(pilot, tmp_path, data), "--print-command"]) == 0
    assert TRAINING_SEED_KEY not in tomllib.loads(node_config.read_text())
    config = tmp_path / "daemon.toml"
    config.write_text("training-seed = 5\n")
    assert daemon.main(["--config", str(config), *secure_args(pilot, tmp_path, data), "--print-command"]) == 0
    assert tomllib.loads(node_config.read_text())[TRAINING_SEED_KEY] == 5
    capsys.readouterr()


def hospital_state(state: Path) -> Path:
    """A state dir as a hospital's daemon and ClientApp leave it: policy, an approved app, audit lines,
    a release ledger with one release and one DP spend."""
    from client.ledger import DP, ReleaseLedger

    state.mkdir(mode=0o700)
    (state / "policy.toml").write_text("lifetime_epsilon = 12.0\n")
    fab = state.parent / "app.fab"
    fab.write_bytes(b"reviewed bundle")
    assert daemon.main(["approve", str(fab), "--state-dir", str(state)]) == 0
    lines = [
        {"ts": f"2026-12-01T10:00:0{i}+00:00", "run_id": "42", "message_type": kind, "outcome": "replied"}
        for i, kind in enumerate(["query.hello", "query.deal", "train", "query.decrypt"])
    ]
    lines.append(
        {"ts": "2026-12-01T10:00:09+00:00", "run_id": "43", "message_type": "train", "outcome": "refused"}
    )
    (state / "audit.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    ledger = ReleaseLedger.in_state_dir(state)
    ledger.claim_release("fed/model:x", ["a", "b"], run="42", round=1)
    ledger.append(
        {"type": DP, "run": "42", "round": 1, "mechanism": "gaussian", "epsilon": 1.5, "delta": 1e-5}
    )
    return state


def test_status_shows_policy_apps_audit_and_ledger_from_the_state_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    state = hospital_state(tmp_path / "state")
    capsys.readouterr()
    assert daemon.main(["status", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert f"policy: {state / 'policy.toml'}: " in out and "lifetime_epsilon=12.0" in out
    assert f"approved apps (approved-apps.txt): {fab_sha256(b'reviewed bundle')}" in out
    assert "audit log" in out and "5 line(s); the last 5:" in out
    assert "run 42  query.hello  outcome replied" in out
    assert "run 43  train  outcome refused" in out
    assert "2 record(s), epsilon spent 1.5" in out
    assert "no daemon log in the state dir" in out


def test_status_of_an_empty_state_dir_says_defaults_and_none(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    assert daemon.main(["status", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "policy: defaults (" in out and "approved apps (approved-apps.txt): none" in out
    assert "0 line(s); the last 0:" in out and "0 record(s), epsilon spent 0" in out


def test_status_exits_1_naming_a_missing_state_dir_or_an_altered_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert daemon.main(["status", "--state-dir", str(tmp_path / "nope")]) == 1
    assert "does not exist (expected the daemon's --state-dir)" in capsys.readouterr().err
    state = hospital_state(tmp_path / "state")
    ledger = state / "ledger.jsonl"
    first, rest = ledger.read_text().split("\n", 1)
    record = json.loads(first)
    record["contributors"] = ["a"]  # a release edited by hand: the next line no longer chains
    ledger.write_text(json.dumps(record, sort_keys=True) + "\n" + rest)
    capsys.readouterr()
    assert daemon.main(["status", "--state-dir", str(state)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and str(ledger) in captured.err and captured.out == ""

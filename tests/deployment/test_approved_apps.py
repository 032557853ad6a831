"""A real SuperLink (TLS + node authentication) and two hospital daemons on 127.0.0.1:

* ``server.coordinator status`` lists the hospitals by name, online;
* ``client.daemon --check-only`` connects: it passes with the right CA and a registered key, and
  fails naming the fix with a wrong CA, an unregistered key and a closed port;
* the ML engineer's app (a custom model by import path, ``examples.tabular_net.TabularNet``, named
  in its run settings, and code the hospitals have not installed) is refused at every hospital
  before any of its code runs (its ClientApp would write a marker file: the file stays absent),
  and each refusal is in the hospital's audit log; the ServerApp's log names the refusals;
* the engineer builds the exact bundle (``flwr build``); each hospital ``review``s it (the hash it
  shows is the bundle's; the model code it names) and ``approve``s it (the hash recorded is the
  one shown);
* with the runner, an encrypted run of the approved app's custom model is refused by the hospital
  whose policy does not list it in ``allowed_models``: the engineer gets one error line naming
  that hospital (by node id) and the key, while the other hospital ran the approved code (the
  marker appears); once the first lists it too (no restart), the same bundle (by hash) runs
  encrypted for 2 rounds and MLflow has the model's class, its parameter count and a pooled
  accuracy well above chance; a plaintext run of it (``strategy=fedavg``), submitted alongside,
  is refused by the default policy, audited, naming ``require_encrypted``;
* (no SuperLink) a bundle installed in an ``accept_any_app`` trial whose hash shares its first 8 hex
  digits with an approved bundle's is not imported in the approved one's place.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from subprocess import PIPE

from deploy_helpers import (
    BIN,
    ROOT,
    daemon_args,
    engineer_command,
    hospital_csvs,
    mlflow_run_of,
    python,
    read_audit,
    run_captured,
)

from client.approval import approved_hashes
from client.policy import BUILT_IN_MODELS
from common.bundle import bundle_packages
from experiments.local_pilot import RUN_TIMEOUT, Processes, free_port, start_superlink, wait_until
from server.flower_cli import flower_env, flwr, json_output

HOSPITALS = 2
APP_PACKAGES = bundle_packages()
NET = "examples.tabular_net.TabularNet"  # the engineer's model, by import path
NET_ARGS = {"blocks": 1, "width": 16}
NET_OVERRIDES = ("model=custom", f"model._target_={NET}", *(f"+model.{k}={v}" for k, v in NET_ARGS.items()))


def started(args: list[str], env: dict) -> subprocess.Popen:
    """A command run alongside others (wall time, not CPU, is what a 2-core CI lacks most)."""
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=PIPE, stderr=PIPE, text=True)


def finished(proc: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def engineers_app(directory: Path, marker: Path) -> Path:
    """The ML engineer's copy of this checkout: its run settings name the custom model (what a
    reviewer reads), and its ClientApp writes ``marker`` as soon as it is imported (code the
    hospitals have not installed, so it runs only once approved)."""
    for package in APP_PACKAGES:
        if (ROOT / package).is_dir():
            shutil.copytree(ROOT / package, directory / package, ignore=shutil.ignore_patterns("__pycache__"))
    settings = (ROOT / "pyproject.toml").read_text()
    settings, models = re.subn(r"(?m)^model = .*$", f'model = "{NET}"', settings)
    settings, args = re.subn(r"(?m)^model-args = .*$", f"model-args = '{json.dumps(NET_ARGS)}'", settings)
    assert models == args == 1, "pyproject.toml: expected one model and one model-args setting"
    (directory / "pyproject.toml").write_text(settings)
    with (directory / "client" / "app.py").open("a") as f:
        f.write(f"\nimport pathlib\n\npathlib.Path({str(marker)!r}).touch()\n")
    return directory


def allow_model(state: Path) -> None:
    """The hospital's policy: the built-in models and the engineer's, by import path."""
    state.mkdir(parents=True, exist_ok=True)
    (state / "policy.toml").write_text(f"allowed_models = {json.dumps([*BUILT_IN_MODELS, NET])}\n")


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


def fab_hash(home: Path, run_id: int) -> str:
    """The SHA-256 of the bundle the SuperLink holds for a run (``flwr list``)."""
    (listed,) = json_output(
        flwr(home, "list", "pilot", "--run-id", str(run_id), "--format", "json"), "flwr list"
    )["runs"]
    return str(listed["fab-hash"])


def audited(state: Path, run_id: int, outcome: str) -> list[dict]:
    """The hospital's audit lines of a run with this outcome (``refused``, ``replied``)."""
    path = state / "audit.jsonl"
    entries = read_audit(path) if path.exists() else []
    return [e for e in entries if e["run_id"] == str(run_id) and e["outcome"] == outcome]


def test_check_only_connects_and_only_approved_apps_run(tmp_path: Path, procs: Processes) -> None:
    env = flower_env(tmp_path / "flwr-home")
    pilot, other = tmp_path / "pilot", tmp_path / "other"
    init = [
        started(
            python("server.coordinator", "init-pilot", "--hospitals", str(HOSPITALS), "--out", str(d)), env
        )
        for d in (pilot, other)
    ]
    for made in map(finished, init):
        assert made.returncode == 0, made.stderr
    link, port = start_superlink(procs, pilot, env, HOSPITALS)
    assert link.poll() is None, procs.log("superlink")
    states = [tmp_path / f"state-{i + 1}" for i in range(HOSPITALS)]
    csvs = hospital_csvs(tmp_path, HOSPITALS)

    def check_only(probe: str, at: int = port, **wrong: Path) -> subprocess.Popen:
        args = daemon_args(pilot, "hospital-1", at, csvs[0], tmp_path / "check" / probe, **wrong)
        return started([*args, "--check-only"], env)

    # --check-only reaches the SuperLink as the SuperNode will (the four probes at once)
    stranger = other / "hospitals" / "hospital-1" / "node.key"
    probes = [
        check_only("good"),
        check_only("wrong-ca", ca=other / "ca" / "ca.crt"),
        check_only("unregistered", key=stranger),
        check_only("closed", at=free_port()),
    ]
    good, wrong_ca, unregistered, closed = map(finished, probes)
    assert good.returncode == 0, good.stderr
    assert "TLS handshake passed" in good.stderr and "is registered" in good.stderr
    assert wrong_ca.returncode == 2
    assert "certificate is not signed by --root-certificates" in wrong_ca.stderr
    assert unregistered.returncode == 2
    assert f"node authentication key {stranger} is not registered at SuperLink" in unregistered.stderr
    assert (
        closed.returncode == 2 and "cannot connect" in closed.stderr and "Connection refused" in closed.stderr
    )

    allow_model(states[1])  # hospital-2 accepts the engineer's model from the start; hospital-1 not yet
    for i, state in enumerate(states):
        name = f"hospital-{i + 1}"
        procs.start(name, daemon_args(pilot, name, port, csvs[i], state), env)
    wait_until(
        lambda: all("SuperNode ID" in procs.log(f"hospital-{i + 1}") for i in range(HOSPITALS)),
        300,
        "SuperNodes",
    )

    # the coordinator sees them by name
    status = run_captured(
        python("server.coordinator", "status", "--pilot", str(pilot), "--superlink", f"127.0.0.1:{port}"),
        env,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    online = {row.split()[0] for row in status.stdout.splitlines() if " online " in row}
    assert online == {"hospital-1", "hospital-2"}, status.stdout

    # the engineer's app is not the installed code: refused everywhere, none of its code ran
    home = pilot / "superlink" / "flwr"  # the coordinator's CLI config (connection "pilot")
    marker = tmp_path / "marker"
    app = engineers_app(tmp_path / "app", marker)
    unapproved = submit(home, app, pilot)
    wait_until(
        lambda: all(audited(s, unapproved, "refused") for s in states),
        300,
        "every hospital to refuse the app",
    )
    for state in states:
        (entry,) = audited(state, unapproved, "refused")
        assert entry["message_type"] == "query.hello" and entry["sent"] == {}
        assert "refused: it is not this hospital's installed code (client/app.py differs" in entry["reason"]
    assert not marker.exists()

    # the engineer builds the exact bundle and sends it; each hospital reviews it, then approves it
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    built = run_captured([str(BIN / "flwr"), "build", "--app", str(app)], env, cwd=outbox)
    assert built.returncode == 0, built.stdout + built.stderr
    (fab,) = outbox.glob("*.fab")
    sha = hashlib.sha256(fab.read_bytes()).hexdigest()
    assert fab.name.endswith(f".{sha[:8]}.fab")
    reviews = [started(python("client.daemon", "review", str(fab)), env) for _ in states]
    for state, shown in zip(states, map(finished, reviews), strict=True):
        assert shown.returncode == 0, shown.stderr
        assert f"SHA-256: {sha}" in shown.stdout.splitlines()
        assert "Files changed (2): client/app.py, pyproject.toml" in shown.stdout
        assert f"  model = '{NET}'   (installed: 'mlp')" in shown.stdout
        assert f"  model = '{NET}': code from examples/tabular_net/__init__.py, as installed" in shown.stdout
        approved = run_captured(
            python("client.daemon", "approve", str(fab), "--state-dir", str(state), "--note", "reviewed"),
            env,
            timeout=120,
        )
        assert approved.returncode == 0, approved.stderr
        assert approved.stdout.startswith(f"approved app sha256 {sha} in ")
        assert approved_hashes(state) == {sha}  # what approve recorded is the hash review showed

    # the refused run's ServerApp log names the refusals
    def server_log() -> str:
        return flwr(home, "log", str(unapproved), "pilot", "--show").stdout

    wait_until(lambda: "failed" in server_log(), 120, "the refused run's ServerApp log")
    assert "not this hospital's installed code" in server_log()
    assert fab_hash(home, unapproved) == sha  # `flwr run` on the folder submits the bundle reviewed

    # the runner, encrypted, on the approved folder with the custom model
    db = tmp_path / "mlflow.db"

    def engineer_runs(out: str) -> subprocess.CompletedProcess:
        command = engineer_command(
            pilot, port, db, HOSPITALS, f"federation.app_dir={app}", *NET_OVERRIDES, "num_rounds=2"
        )
        return run_captured([*command, f"hydra.run.dir={tmp_path / out}"], env, timeout=RUN_TIMEOUT)

    # hospital-1's policy does not list the model: it refuses, and the engineer reads who and why
    refused = engineer_runs("out-refused")
    assert refused.returncode == 1, refused.stdout[-3000:] + refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
    (line,) = [ln for ln in refused.stderr.splitlines() if ln.startswith("error: ")]
    not_allowed = f"policy allowed_models={list(BUILT_IN_MODELS)} does not include model {NET!r}; refused"
    # set-up has not yet matched nodes to the roster: the hospital's own name, beside the node id it logged
    node = re.search(r"connected to SuperLink \S+ \(node id (\d+)\)", procs.log("hospital-1")).group(1)
    refusal = f"hospital-1 (node {node}, by its own account) ({not_allowed})"
    assert f"set-up failed: 1 of {HOSPITALS} hospitals refused: {refusal}" in line
    assert "missing keyholders: hospital-1" in line
    refused_id = int(re.search(r"submitted Flower run (\d+)", refused.stdout).group(1))
    (entry,) = audited(states[0], refused_id, "refused")
    assert entry["message_type"] == "query.hello" and entry["reason"] == f"[hospital-1] {not_allowed}"
    assert not audited(states[1], refused_id, "refused")
    assert marker.exists()  # hospital-2 ran the approved app's code (its hello)

    # once it lists the model (read at every message: no restart), the reviewed bundle runs; a
    # plaintext run of it, submitted alongside, is still refused by the default policy
    allow_model(states[0])
    plaintext = submit(home, app, pilot, " strategy='fedavg'")
    done = engineer_runs("out")
    for i, state in enumerate(states):  # the approved app refused the plaintext run at its first message
        (entry,) = audited(state, plaintext, "refused")
        assert entry["message_type"] == "query.statistics"
        assert entry["reason"].startswith(f"[hospital-{i + 1}] policy require_encrypted=true")
    logs = "".join(
        f"\n--- hospital-{i + 1}:\n" + procs.log(f"hospital-{i + 1}")[-2000:] for i in range(HOSPITALS)
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:] + logs
    assert "status finished:completed" in done.stdout
    flower_run_id = int(re.search(r"submitted Flower run (\d+)", done.stdout).group(1))
    assert fab_hash(home, flower_run_id) == sha
    client, mlrun = mlflow_run_of(db, flower_run_id)
    params = mlrun.data.params
    assert (params["strategy"], params["model"], json.loads(params["model-args"])) == (
        "encrypted_fedavg",
        NET,
        NET_ARGS,
    )
    assert (params["model_class"], params["model_parameters"]) == (NET, str(tabular_net_values()))
    for metric in ("eval_accuracy", "decrypt_seconds"):
        assert sorted(m.step for m in client.get_metric_history(mlrun.info.run_id, metric)) == [1, 2], metric
    assert mlrun.data.metrics["contributors"] == HOSPITALS
    assert mlrun.data.metrics["final_eval_accuracy"] > 0.8  # pooled; the majority class is 63 %
    for state in states:
        assert not audited(state, flower_run_id, "refused")
        trains = [e for e in audited(state, flower_run_id, "replied") if e["message_type"] == "train"]
        assert [e["group_id"] for e in trains] == ["1", "2"]


def tabular_net_values() -> int:
    """The values the engineer's model sends per round, counted from the model itself."""
    from examples.tabular_net import TabularNet

    model = TabularNet(num_features=30, num_outputs=2, **NET_ARGS)
    return sum(value.numel() for value in model.state_dict().values())


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

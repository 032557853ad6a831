"""The hospital decides what runs: its policy refuses plaintext runs (audited, naming the key), and
only its installed code or an approved app hash is accepted; the audit log reads well."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from deploy_helpers import ROOT
from flower_messages import message_for
from flwr.app import Context, Message, RecordDict

from client.app import app
from client.approval import app_refusal, approve, fab_sha256, installed_mismatch
from client.audit import AUDIT_FILE
from client.audit_summary import read_entries, summarize
from client.policy import NODE_POLICY, Policy, PolicyError
from client.refusals import PolicyRefusal
from common import protocol as p
from common.settings import RunSettings
from he.roster import NODE_HOSPITAL
from models.registry import MODEL_NAMES, build_model
from privacy.config import KEYS as DP_KEYS


def statistics_message(encrypted: bool) -> Message:
    """The first message of a plaintext (``strategy=fedavg``) run: feature moments in the clear."""
    config = {"dataset": "breast_cancer", p.STATISTICS_PASS: "moments", p.ENCRYPTED: encrypted, p.ROUND: -2}
    config["feature-mean"] = [0.5] * 30  # long vectors are logged as length + digest
    # a 64-bit run id: jq 1.6 would round it as a number
    return message_for(p.STATISTICS, config, run_id=18446744073709551557, group_id="setup")


def hospital_context(state: Path, policy: Path) -> Context:
    node_config = {
        "state-dir": str(state),
        NODE_POLICY: str(policy),
        NODE_HOSPITAL: "charite",
        "partition-id": 0,
        "num-partitions": 3,
    }
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})


def test_default_policy_refuses_a_plaintext_run_and_the_audit_log_says_why(tmp_path: Path) -> None:
    ctx = hospital_context(tmp_path, tmp_path / "policy.toml")  # no file: the defaults
    with pytest.raises(PolicyRefusal, match="require_encrypted=true"):
        app(statistics_message(encrypted=False), ctx)
    (line,) = (tmp_path / AUDIT_FILE).read_text().splitlines()
    entry = json.loads(line)
    assert entry["outcome"] == "refused" and "policy require_encrypted=true" in entry["reason"]
    assert entry["sent"] == {}
    assert entry["run_id"] == "18446744073709551557" and entry["node_id"] == "7"
    assert entry["hospital"] == "charite"
    logged_mean = entry["received"]["config"]["config"]["feature-mean"]
    assert logged_mean["values"] == 30 and len(logged_mean["sha256"]) == 64
    assert len(line) < 1000


def test_a_policy_that_allows_plaintext_lets_it_through(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("require_encrypted = false\n")
    reply = app(statistics_message(encrypted=False), hospital_context(tmp_path, policy))
    assert not reply.has_error() and p.ARRAYS in reply.content.array_records
    (entry,) = read_entries(tmp_path / AUDIT_FILE)
    assert entry["outcome"] == "replied"
    report = summarize([entry])
    # the two serialized float64[30] arrays of the moments pass, as the audit line counts them
    assert "IN THE CLEAR: this hospital's feature statistics, in 1 message(s), 736 B." in report
    assert "IN THE CLEAR: this hospital's training-set size (num-examples)" in report
    assert "PLAINTEXT run" in report and "feature statistics: means" in report


def test_policy_file_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("require_encryption = true\n")
    with pytest.raises(PolicyError, match=r"unknown key\(s\) \['require_encryption'\]"):
        Policy.load(path)
    path.write_text("min_contributors = 1\n")
    with pytest.raises(PolicyError, match="min_contributors must be an integer >= 2, got 1"):
        Policy.load(path)
    path.write_text("min_threshold = [\n")
    with pytest.raises(PolicyError, match="cannot be read as TOML"):
        Policy.load(path)
    assert Policy.load(tmp_path / "absent.toml") == Policy()
    assert Policy(allowed_presets=("precise",)).request_violation(p.HELLO, {p.PRESET: "compact"}) is not None
    dp_required = Policy(require_dp=True)
    assert dp_required.request_violation(p.TRAIN, {"dp": "off"}).startswith("policy require_dp=true")
    assert dp_required.request_violation(p.TRAIN, {}) is not None  # no DP settings: no DP
    assert dp_required.request_violation(p.TRAIN, {"dp": "distributed"}) is None
    assert dp_required.request_violation(p.DECRYPT, {}) is None  # only training releases updates


# -- which apps run ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def installed_fab() -> bytes:
    """The FAB ``flwr run`` builds from this checkout: the hospital's installed code."""
    from flwr.cli.build import build_fab_from_disk

    return build_fab_from_disk(ROOT)


def with_file(fab: bytes, name: str, extra: bytes) -> bytes:
    """``fab`` with ``extra`` appended to the file ``name``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(fab)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info, data + extra if info.filename == name else data)
    return out.getvalue()


def test_installed_code_is_accepted_and_a_changed_app_refused(installed_fab: bytes, tmp_path: Path) -> None:
    assert installed_mismatch(installed_fab) is None
    assert app_refusal(installed_fab, Policy(), tmp_path) is None
    changed = with_file(installed_fab, "client/app.py", b"\nimport os  # anything at all\n")
    assert installed_mismatch(changed) == f"client/app.py differs from the installed {ROOT / 'client/app.py'}"
    refusal = app_refusal(changed, Policy(), tmp_path)
    assert refusal.startswith(f"app sha256 {fab_sha256(changed)} refused: it is not this hospital's")
    assert "client.daemon approve" in refusal
    extra = io.BytesIO(installed_fab)  # the same files, plus one of its own
    with zipfile.ZipFile(extra, "a") as archive:
        archive.writestr("client/extra.py", b"print('not installed')\n")
    assert installed_mismatch(extra.getvalue()) == "client/extra.py is not part of the installed fedquorum"
    assert app_refusal(installed_fab, Policy(accept_installed_app=False), tmp_path) is not None
    fab = tmp_path / "changed.fab"
    fab.write_bytes(changed)
    assert approve(tmp_path, fab) == fab_sha256(changed)
    assert app_refusal(changed, Policy(), tmp_path) is None  # approved after review
    assert app_refusal(b"not a zip", Policy(accept_any_app=True), tmp_path) is None


# -- what a run may ask of the hospital ------------------------------------------------------------------
def train_message(config: dict, weights: list[np.ndarray]) -> Message:
    """A training round as the coordinator sends it: the run's config and the global model."""
    return message_for(p.TRAIN, config, arrays=weights, group_id="1")


def mlp_weights(hidden: int) -> list[np.ndarray]:
    """The global model of the run's MLP on the 30 breast-cancer features, as the server sends it."""
    return [w.detach().numpy() for w in build_model("mlp", 30, 2, hidden=(hidden,)).state_dict().values()]


@pytest.mark.parametrize(
    ("asked", "weights", "refusal"),
    [
        ({"hidden": 4096}, 4096, "policy max_model_parameters=100000: the model this run sends has 135170"),
        ({"local-epochs": "99999999"}, 32, "policy max_local_epochs=100: this run asks for 99999999 local"),
        ({p.EVAL_BINS: 10_000}, 32, "policy max_eval_bins=100: this run asks for 10000 evaluation"),
        ({"time-bins": 1000}, 32, "policy max_time_bins=100: this run asks for 1000 survival time bins"),
        ({p.ROUND: 1001}, 32, "policy max_rounds=1000: this run asks for 1001 as its training round"),
        ({DP_KEYS["num_rounds"]: 5000}, 32, "policy max_rounds=1000: this run asks for 5000 DP-accounted"),
        (
            {"model": "resnet152"},
            32,
            "policy allowed_models=\\['logreg', 'mlp', 'cnn', 'resnet18'\\] does not",
        ),
        ({p.PER_HOSPITAL_PLAINTEXT: True}, 32, "policy allow_per_hospital_plaintext=false"),
        ({"local-epochs": "forever"}, 32, "config 'local-epochs': expected an integer, got 'forever'"),
    ],
)
def test_default_policy_refuses_what_a_run_may_not_ask(tmp_path: Path, asked, weights, refusal) -> None:
    config = {**RunSettings().task_config(), p.ROUND: 1, **asked}
    ctx = hospital_context(tmp_path, tmp_path / "policy.toml")  # no file: the defaults
    with pytest.raises(PolicyRefusal, match=refusal):
        app(train_message(config, mlp_weights(weights)), ctx)
    (entry,) = read_entries(tmp_path / AUDIT_FILE)
    assert entry["outcome"] == "refused" and entry["sent"] == {}  # refused before the handler ran


def test_the_run_defaults_and_the_built_in_models_pass_the_default_policy() -> None:
    policy = Policy()
    assert policy.allowed_models == MODEL_NAMES
    config = {**RunSettings().task_config(), p.ROUND: 1000}
    assert policy.request_violation(p.TRAIN, config, sum(w.size for w in mlp_weights(32))) is None
    final = {**config, p.ROUND: 1001}  # the final evaluation of a 1000-round run, and its decryption
    assert policy.request_violation(p.EVALUATE, final) is None
    assert policy.request_violation(p.DECRYPT, final) is None
    cnn = build_model("cnn", (3, 28, 28), 11)  # the largest MedMNIST task (organ, 11 classes)
    assert policy.request_violation(p.TRAIN, config, sum(w.numel() for w in cnn.parameters())) is None


def test_allowed_models_names_import_paths_the_hospital_accepts(tmp_path: Path) -> None:
    """A model by import path runs only where the policy lists that path; the default policy
    (the built-in presets) refuses it before the handler runs, and a ResNet-18 also needs a
    raised max_model_parameters."""
    net = "examples.tabular_net.TabularNet"
    settings = RunSettings(model=net, model_args='{"width": 8}')
    config = {**settings.task_config(), p.ROUND: 1}
    ctx = hospital_context(tmp_path, tmp_path / "policy.toml")  # no file: the defaults
    with pytest.raises(PolicyRefusal, match=f"does not include model '{net}'"):
        app(train_message(config, mlp_weights(32)), ctx)
    policy = tmp_path / "policy.toml"
    policy.write_text(f'allowed_models = ["mlp", "{net}"]\n')
    listed = Policy.load(policy)
    assert listed.request_violation(p.TRAIN, config, 1714) is None
    other = {**config, "model": "tests.models.byo_models.SeesEverything"}
    assert "does not include model 'tests.models.byo_models.SeesEverything'" in listed.request_violation(
        p.TRAIN, other, 10
    )
    resnet = {**config, "model": "resnet18"}
    assert "max_model_parameters=100000" in Policy().request_violation(p.TRAIN, resnet, 11_182_025)
    assert Policy(max_model_parameters=12_000_000).request_violation(p.TRAIN, resnet, 11_182_025) is None


def test_a_policy_that_allows_per_hospital_plaintext_lets_the_run_ask_for_it() -> None:
    config = {p.PER_HOSPITAL_PLAINTEXT: True}
    assert Policy(allow_per_hospital_plaintext=True).request_violation(p.EVALUATE, config) is None
    assert Policy().request_violation(p.EVALUATE, config).startswith("policy allow_per_hospital_plaintext")


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("allow_per_hospital_plaintext = 1", "allow_per_hospital_plaintext must be true or false, got 1"),
        ('allowed_models = "mlp"', "allowed_models must be a list of names, got 'mlp'"),
        ("max_model_parameters = 0", "max_model_parameters must be a positive integer, got 0"),
        ("max_local_epochs = 2.5", "max_local_epochs must be a positive integer, got 2.5"),
        ("max_rounds = true", "max_rounds must be a positive integer, got True"),
        ('max_eval_bins = "100"', "max_eval_bins must be a positive integer, got '100'"),
        ("min_dp_noise_multiplier = -1.0", "min_dp_noise_multiplier must be a finite number >= 0, got -1.0"),
        ("max_dp_delta = 1", "max_dp_delta must be a number in \\(0, 1\\), got 1"),
        ("max_epsilon_per_run = 0", "max_epsilon_per_run must be a positive finite number, got 0"),
        ("lifetime_epsilon = inf", "lifetime_epsilon must be a positive finite number, got inf"),
    ],
)
def test_each_new_policy_key_with_a_malformed_value_is_an_error_naming_it(
    tmp_path: Path, line: str, error: str
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(line + "\n")
    with pytest.raises(PolicyError, match=error):
        Policy.load(path)

"""The experiment runner's deployment branch, without a SuperLink: config checks and files it writes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from common.settings import RunSettings
from common.simulated_federation import write_simulated_federation
from experiments import run_deployment as runner
from experiments.run_config import ConfigError, is_deployment, to_settings
from experiments.run_report import RunFailedError

CONF = Path(__file__).resolve().parents[2] / "conf"


def deployment_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("config", overrides=["federation=deployment", *overrides])


def test_deployment_config_composes_and_validates() -> None:
    cfg = deployment_cfg("federation.num_hospitals=3", "he.threshold=2")
    assert is_deployment(cfg)
    settings, n = to_settings(cfg)
    assert n == 3 and settings.threshold == 2
    # in deployment the roster pins the threshold: checked against it (test_roster_is_required_...)
    # CSV data are fine in deployment: each hospital's daemon points at its own file
    cfg = deployment_cfg("dataset=csv", "dataset.num_features=8", "dataset.num_classes=2")
    assert to_settings(cfg)[0].dataset == "csv"
    assert settings.round_timeout == 600  # a Hydra key (strategy.round_timeout), for both strategies
    for strategy in ("encrypted_fedavg", "fedavg"):
        cfg = deployment_cfg(
            f"strategy={strategy}", "strategy.round_timeout=45", "strategy.max_failed_rounds=2"
        )
        assert (to_settings(cfg)[0].round_timeout, to_settings(cfg)[0].max_failed_rounds) == (
            45,
            2,
        )
    cfg = deployment_cfg(
        "dataset=csv", "dataset.num_features=8", "dataset.num_classes=2", "dataset.classes=[b,a]"
    )
    assert to_settings(cfg)[0].task_config()["classes"] == "b,a"  # what hospitals number labels by


def test_flwr_home_needs_the_ca_unless_insecure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"federation\.root_certificates is required"):
        runner.write_flwr_home(deployment_cfg(), tmp_path / "a")
    with pytest.raises(ConfigError, match=r"nope\.crt does not exist"):
        runner.write_flwr_home(
            deployment_cfg(f"federation.root_certificates={tmp_path / 'nope.crt'}"), tmp_path
        )
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    home = runner.write_flwr_home(
        deployment_cfg("federation.superlink=fl.example.org:9093", f"federation.root_certificates={ca}"),
        tmp_path / "home",
    )
    config = tomllib.loads((home / "config.toml").read_text())
    assert config["superlink"]["default"] == runner.CONNECTION
    assert config["superlink"][runner.CONNECTION] == {
        "address": "fl.example.org:9093",
        "root-certificates": str(ca),
    }
    home = runner.write_flwr_home(deployment_cfg("federation.insecure=true"), tmp_path / "insecure")
    assert (
        tomllib.loads((home / "config.toml").read_text())["superlink"][runner.CONNECTION]["insecure"] is True
    )


def test_tracking_uri_is_made_absolute_and_run_config_round_trips(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert runner.absolute_tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert runner.absolute_tracking_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert runner.absolute_tracking_uri("http://mlflow:5000") == "http://mlflow:5000"
    settings = RunSettings(num_rounds=2, mlflow_tracking_uri='sqlite:////tmp/a "b".db')
    text = "".join(f"{k} = {runner.toml_value(v)}\n" for k, v in settings.to_run_config().items())
    assert RunSettings.from_run_config(tomllib.loads(text)) == settings


def test_roster_is_required_checked_and_passed_as_an_absolute_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    fed = tmp_path / "fed"
    fed.mkdir()
    write_simulated_federation(fed, 3)

    def roster(*overrides: str):
        cfg = deployment_cfg("federation.num_hospitals=3", *overrides)
        settings, n = to_settings(cfg)
        return runner.deployment_roster(cfg, settings, n)

    with pytest.raises(ConfigError, match=r"federation\.roster is required in deployment"):
        roster()
    with pytest.raises(ConfigError, match=r"federation\.roster=.*nope\.json does not exist"):
        roster("federation.roster=nope.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"federation\.roster: roster .*bad\.json: expected format"):
        roster("federation.roster=bad.json")
    with pytest.raises(ConfigError, match=r"federation\.num_hospitals=4 but roster .* names 3"):
        roster("federation.roster=fed/roster.json", "federation.num_hospitals=4")
    with pytest.raises(ConfigError, match=r"he\.preset='precise' but roster .* pins preset 'compact'"):
        roster("federation.roster=fed/roster.json", "he=precise")
    with pytest.raises(ConfigError, match=r"he\.threshold=2 but roster .* pins threshold 3"):
        roster("federation.roster=fed/roster.json", "he.threshold=2")
    assert roster("federation.roster=fed/roster.json", "he.threshold=3").is_absolute()
    path = roster("federation.roster=fed/roster.json")  # relative to the runner's cwd
    assert path == fed / "roster.json" and path.is_absolute()
    settings = RunSettings(roster=str(path))
    assert settings.to_run_config()["roster"] == str(path)  # the run-config key the ServerApp reads


def test_progress_is_read_only_once_the_server_app_run_exists(tmp_path: Path) -> None:
    """The runner's progress bar: nothing (and no MLflow client on a half-made store) until the
    ServerApp's run is recorded; then its rounds and latest contributors and accuracy."""
    import mlflow

    from server.app import FLOWER_RUN_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert runner.progress_logged(uri, "fedquorum", 7, 3) == (0, {}, "")
    assert not (tmp_path / "mlflow.db").exists()  # the runner did not create the store
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.create_experiment("fedquorum"), tags={FLOWER_RUN_TAG: "7"})
    assert runner.progress_logged(uri, "fedquorum", 7, 3) == (0, {}, "")
    client.set_tag(run.info.run_id, "phase", "key set-up: query.deal")  # what the ServerApp does now
    assert runner.progress_logged(uri, "fedquorum", 7, 3) == (0, {}, "key set-up: query.deal")
    for step, contributors in ((1, 3), (2, 2)):
        client.log_metric(run.info.run_id, "round_seconds", 0.5, step=step)
        client.log_metric(run.info.run_id, "contributors", contributors, step=step)
    client.log_metric(run.info.run_id, "bytes_up", 10.0, step=2)
    client.set_tag(run.info.run_id, "phase", "round 3/3")
    assert runner.progress_logged(uri, "fedquorum", 7, 3) == (2, {"contributors": 2.0}, "round 3/3")
    assert runner.progress_logged(uri, "fedquorum", 8, 3) == (0, {}, "")  # another Flower run


def test_a_stopped_deployment_run_keeps_its_config_and_is_reported_by_its_recorded_reason(
    tmp_path: Path,
) -> None:
    """A failed run gets the Hydra config too (``resume=<id>`` needs it) and the runner's one line
    is the ServerApp's ``failure_reason`` with the resume command; a run the ServerApp never
    recorded (or recorded no reason for) gets the log tail."""
    import mlflow

    from server.app import FLOWER_RUN_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_path = tmp_path / "flower.log"
    log_path.write_text("INFO fedquorum: set-up ...\nERROR fedquorum: run stopped: the last line\n")
    cfg = deployment_cfg("num_rounds=4")
    failed = "finished:failed"
    with pytest.raises(
        RuntimeError, match=r"(?s)ended with status 'finished:failed'.*run stopped: the last line"
    ):
        runner.attach_config(cfg, uri, "fedquorum", 7, failed, log_path)
    assert not (tmp_path / "mlflow.db").exists()  # nothing recorded: the runner made no store
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("fedquorum", artifact_location=(tmp_path / "artifacts").as_uri())
    reason = "RoundFailedError: round 3: keyholder(s) hospital-3 (restarted, lost this run's keys) missing"
    run = client.create_run(experiment, tags={FLOWER_RUN_TAG: "7", "failure_reason": reason})
    with pytest.raises(RunFailedError) as stopped:
        runner.attach_config(cfg, uri, "fedquorum", 7, failed, log_path)
    assert str(stopped.value).startswith(f"Flower run 7 stopped: {reason} (ServerApp log: {log_path}; ")
    assert (
        f"resume with: python -m experiments.run resume={run.info.run_id} mlflow.tracking_uri={uri})"
        in str(stopped.value)
    )
    config = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    assert "num_rounds: 4" in Path(config).read_text()  # what resume=<id> composes from
    client.create_run(experiment, tags={FLOWER_RUN_TAG: "8"})
    with pytest.raises(RuntimeError, match="ended with status"):  # failed, no reason recorded
        runner.attach_config(cfg, uri, "fedquorum", 8, failed, log_path)
    done = runner.attach_config(cfg, uri, "fedquorum", 7, "finished:completed", log_path)
    assert done.info.run_id == run.info.run_id

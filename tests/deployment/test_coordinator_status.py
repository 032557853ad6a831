"""``coordinator status`` with no SuperLink listening: one clear line and a nonzero exit (an empty
table would read "no hospitals registered"), and the pilot's CLI config is never rewritten."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from experiments.local_pilot import free_port
from server import coordinator, flower_cli, pki


def pilot_home(tmp_path: Path) -> Path:
    return flower_cli.flwr_home(pki.PilotLayout(tmp_path / "pilot"))


def test_status_fails_loudly_against_a_dead_address_and_keeps_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    home = pilot_home(tmp_path)
    served = f"127.0.0.1:{free_port()}"  # the address `superlink` last served; nothing listens now
    config = flower_cli.write_cli_config(home, served, None)
    before = config.read_bytes()

    dead = f"127.0.0.1:{free_port()}"
    assert coordinator.main(["status", "--pilot", str(tmp_path / "pilot"), "--superlink", dead]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot list hospitals: no answer from a SuperLink at {dead} (")
    assert len(err.strip().splitlines()) == 1
    assert config.read_bytes() == before  # not repointed at the address asked about

    assert coordinator.main(["status", "--pilot", str(tmp_path / "pilot")]) == 1  # the configured one
    assert f"no answer from a SuperLink at {served}" in capsys.readouterr().err
    assert config.read_bytes() == before


def test_status_without_an_address_says_where_it_looks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert coordinator.main(["status", "--pilot", str(tmp_path / "pilot")]) == 1
    err = capsys.readouterr().err
    assert "no SuperLink address: pass --superlink HOST:PORT" in err
    assert str(pilot_home(tmp_path) / "config.toml") in err
    assert not (pilot_home(tmp_path) / "config.toml").exists()


def test_a_flwr_answer_without_json_is_an_error_naming_the_command_and_its_output() -> None:
    done = subprocess.CompletedProcess(["flwr", "list"], 1, stdout="Usage: flwr list", stderr="no such run")
    with pytest.raises(RuntimeError, match=r"flwr list gave no JSON \(exit 1\): Usage: flwr listno such run"):
        flower_cli.json_output(done, "flwr list")
    ok = subprocess.CompletedProcess(["flwr", "run"], 0, stdout='log line\n{"success": true, "run-id": 7}\n')
    assert flower_cli.json_output(ok, "flwr run") == {"success": True, "run-id": 7}

"""The systemd units in docs/deployment.md work for a dedicated non-root user: they wait for the
network, do not restart on a configuration error (exit 2), let systemd make the state dir, keep
Flower's apps there, and pass ``systemd-analyze verify`` where it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_helpers import ROOT

UNITS = dict(
    (re.search(r"# /etc/systemd/system/(\S+)", block).group(1), block)
    for block in re.findall(r"```ini\n(.*?)```", (ROOT / "docs" / "deployment.md").read_text(), re.S)
)


def test_the_units_are_ready_for_a_service_user() -> None:
    assert set(UNITS) == {"fedquorum-superlink.service", "fedquorum-node.service"}
    for unit in UNITS.values():
        assert "After=network-online.target" in unit and "Wants=network-online.target" in unit
        assert "RestartPreventExitStatus=2" in unit and "User=fedquorum" in unit
    node = UNITS["fedquorum-node.service"]
    assert "StateDirectory=fedquorum" in node and "Environment=FLWR_HOME=/var/lib/fedquorum/flwr" in node


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_analyze_verifies_the_unit(name: str, tmp_path: Path) -> None:
    # this machine's interpreter and an existing user stand in for /opt/fedquorum and fedquorum
    unit = UNITS[name].replace("/opt/fedquorum/.venv/bin/python", sys.executable)
    unit = (
        unit.replace("User=fedquorum\n", "User=root\n")
        .replace("Group=fedquorum\n", "Group=root\n")
        .replace("WorkingDirectory=/opt/fedquorum", f"WorkingDirectory={ROOT}")
    )
    path = tmp_path / name
    path.write_text(unit)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and name not in done.stderr, done.stderr

"""Pilot PKI: a CA, the SuperLink certificate, node keys in Flower's formats, signing keys and the
roster, 0600 secrets."""

from __future__ import annotations

import ipaddress
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_ssh_private_key

from client import daemon_keys
from experiments.local_pilot import free_port
from he.identity import SigningKey
from he.roster import Roster
from server import coordinator, flower_cli, pki, registration, superlink


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_pilot_layout_formats_and_modes(tmp_path: Path) -> None:
    layout = pki.init_pilot(tmp_path / "pilot", 3, hostnames=["fl.example.org", "10.0.0.5"])
    assert layout.hospital_names() == ["hospital-1", "hospital-2", "hospital-3"]
    for secret in (
        layout.ca_key,
        layout.server_key,
        *(p.with_name("node.key") for p in layout.public_keys()),
        *(layout.signing_key(name) for name in layout.hospital_names()),
    ):
        assert mode(secret) == 0o600, secret
    for folder in (layout.root, layout.ca_dir, layout.superlink_dir, layout.hospital_dir("hospital-2")):
        assert mode(folder) == 0o700, folder

    ca = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(layout.server_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "fl.example.org"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.5"),
    }
    assert isinstance(load_pem_private_key(layout.server_key.read_bytes(), None), ec.EllipticCurvePrivateKey)
    assert layout.superlink_ca.read_bytes() == layout.ca_cert.read_bytes()

    # node keys: what flower-supernode --auth-supernode-private-key and `flwr supernode register` load
    from flwr.cli.supernode.register import try_load_public_key

    folder = layout.hospital_dir("hospital-1")
    private = load_ssh_private_key((folder / "node.key").read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert try_load_public_key(folder / "node.pub")
    assert (folder / "ca.crt").read_bytes() == layout.ca_cert.read_bytes()
    assert "PRIVATE" not in (folder / "node.pub").read_text()
    pki.load_node_public_key(folder / "node.pub")
    with pytest.raises(pki.PKIError, match="never the private key") as refused:
        pki.load_node_public_key(folder / "node.key")  # the private key by mistake
    assert "BEGIN" not in str(refused.value) and refused.value.__cause__ is None


def test_init_pilot_writes_signing_keys_and_the_roster(tmp_path: Path) -> None:
    layout = pki.init_pilot(tmp_path / "pilot", 3, hostnames=["fl.example.org"], min_contributors=3)
    roster = Roster.load(layout.roster)
    assert roster.federation_id == "pilot@fl.example.org"  # default: <dir name>@<first hostname>
    assert [h.name for h in roster.hospitals] == layout.hospital_names()  # party order = node keys
    assert roster.committee == tuple(layout.hospital_names()) and roster.threshold == 3
    assert roster.min_contributors == 3 and roster.preset == "compact"
    for party, name in enumerate(layout.hospital_names(), start=1):
        folder = layout.hospital_dir(name)
        public = SigningKey.load(layout.signing_key(name)).public_bytes()
        assert roster.hospital(party).signing_key == public
        assert (folder / "signing.pub").read_text().strip() == public.hex()
        assert (folder / "roster.json").read_bytes() == layout.roster.read_bytes()  # its pinned copy
    assert mode(layout.roster) == 0o644


def test_init_pilot_refuses_to_overwrite_and_bad_names(tmp_path: Path) -> None:
    pki.init_pilot(tmp_path / "p", 2)
    with pytest.raises(pki.PKIError, match="already exists; refusing to overwrite"):
        pki.init_pilot(tmp_path / "p", 2)
    layout = pki.PilotLayout(tmp_path / "p")
    before = layout.roster.read_bytes()
    layout.signing_key("hospital-1").chmod(0o644)
    pki.init_pilot(tmp_path / "p", 2, force=True)
    assert layout.roster.read_bytes() != before  # new signing keys, new roster
    assert mode(layout.signing_key("hospital-1")) == 0o600  # a new file, not the loose one reused
    with pytest.raises(pki.PKIError, match="not a valid DNS name"):
        pki.init_pilot(tmp_path / "q", 2, hostnames=["bad host!"])
    with pytest.raises(pki.PKIError, match=r"hospital name '\.\./x'"):
        pki.init_pilot(tmp_path / "r", ["../x", "y"])
    with pytest.raises(pki.PKIError, match="at least two hospitals"):
        pki.init_pilot(tmp_path / "s", 1)
    with pytest.raises(pki.PKIError, match="distinct"):
        pki.init_pilot(tmp_path / "t", ["a", "a"])
    with pytest.raises(ValueError, match=r"min_contributors must be in \[2, 2\]"):
        pki.init_pilot(tmp_path / "u", 2, min_contributors=3)
    assert not (tmp_path / "u").exists()  # the roster is checked before any file is written


def test_coordinator_cli_init_and_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "pilot"
    argv = ["init-pilot", "--names", "charite,hug,karolinska", "--out", str(out)]
    argv += ["--federation-id", "onco-2026", "--threshold", "2", "--min-contributors", "3"]
    argv += ["--min-setup-keyholders", "3"]
    assert coordinator.main(argv) == 0
    printed = capsys.readouterr().out
    assert "charite" in printed and "BEGIN" not in printed  # paths only, never key material
    layout = pki.PilotLayout(out)
    assert layout.hospital_names() == ["charite", "hug", "karolinska"]
    roster = Roster.load(layout.roster)
    assert (roster.federation_id, roster.threshold, roster.min_contributors) == ("onco-2026", 2, 3)
    assert roster.min_setup_keyholders == 3 and "set-up needs 3 keyholders online" in printed
    assert f"roster fingerprint: {roster.short_fingerprint}" in printed and "by phone" in printed
    assert (
        coordinator.main(["init-pilot", "--hospitals", "2", "--out", str(tmp_path / "x"), "--preset", "x"])
        == 2
    )
    assert "--preset x: unknown HE preset" in capsys.readouterr().err
    assert coordinator.main(["init-pilot", "--hospitals", "2", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err

    args = coordinator.parser().parse_args(["superlink", "--pilot", str(out), "--port", "19999"])
    cmd = superlink.superlink_command(args, layout)
    flags = {flag: cmd[i + 1] for i, flag in enumerate(cmd[:-1]) if flag.startswith("--")}
    assert flags["--ssl-certfile"] == str(layout.server_cert)
    assert flags["--ssl-keyfile"] == str(layout.server_key)
    assert flags["--ssl-ca-certfile"] == str(layout.superlink_ca)
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "19999"
    assert "--enable-supernode-auth" in cmd and "--insecure" not in cmd
    assert "--disable-runtime-dependency-installation" in cmd
    insecure = coordinator.parser().parse_args(["superlink", "--pilot", str(out), "--insecure"])
    assert "--insecure" in superlink.superlink_command(insecure, layout)
    assert flower_cli.client_address("0.0.0.0", 9093) == "127.0.0.1:9093"


def test_a_superlink_without_its_certificates_exits_2_naming_them_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Exit 2 is what the systemd unit does not restart on (``RestartPreventExitStatus=2``): a
    missing file is not fixed by restarting; a mistyped ``--pilot`` gets no directories."""
    mistyped = tmp_path / "pilto"
    assert coordinator.main(["superlink", "--pilot", str(mistyped), "--port", "19998"]) == 2
    err = capsys.readouterr().err
    assert f"error: CA certificate {mistyped}" in err and "run `init-pilot --out" in err
    assert not mistyped.exists()


def test_register_name_with_several_keys_exits_2_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "pilot"
    assert coordinator.main(["init-pilot", "--hospitals", "2", "--out", str(out)]) == 0
    layout = pki.PilotLayout(out)
    keys = [str(p) for p in sorted(layout.hospitals_dir.rglob("node.pub"))]
    argv = ["register", "--pilot", str(out), "--name", "x", *keys]
    assert coordinator.main(argv) == 2
    assert "--name applies to a single public key" in capsys.readouterr().err
    assert not (flower_cli.flwr_home(layout) / "config.toml").exists()


def test_roster_from_public_keys_the_hospitals_made(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    publics = {}
    for name in ("hug", "charite"):
        _, _, publics[name] = daemon_keys.signing_keygen(tmp_path / name)
    capsys.readouterr()
    out = tmp_path / "roster.json"
    argv = ["roster", "--out", str(out), "--federation-id", "onco-2026"]
    argv += [f"--hospital={name}={public}" for name, public in publics.items()]
    assert coordinator.main(argv) == 0
    roster = Roster.load(out)
    assert [h.name for h in roster.hospitals] == ["hug", "charite"]  # --hospital order: party indices
    assert (
        roster.hospital(2).signing_key == SigningKey.load(tmp_path / "charite" / "signing.key").public_bytes()
    )
    assert f"roster fingerprint: {roster.short_fingerprint}" in capsys.readouterr().out

    assert coordinator.main(argv) == 2
    assert "already exists; refusing to overwrite a roster" in capsys.readouterr().err
    assert coordinator.main([*argv, "--force", "--min-contributors", "3"]) == 2
    assert "min_contributors must be in [2, 2]" in capsys.readouterr().err
    pem = (tmp_path / "hug" / "signing.key").read_text()
    bad = ["roster", "--out", str(tmp_path / "b.json"), "--federation-id", "x", "--hospital", f"hug={pem}"]
    assert coordinator.main([*bad, "--hospital", f"charite={publics['charite']}"]) == 2
    err = capsys.readouterr().err
    assert "signing key of 'hug' must be 64 hex digits" in err and "BEGIN" not in err  # nothing echoed
    twice = ["roster", "--out", str(tmp_path / "c.json"), "--federation-id", "x"]
    twice += ["--hospital", f"hug={publics['hug']}", "--hospital", f"hug={publics['charite']}"]
    assert coordinator.main(twice) == 2
    assert "'hug' is given twice" in capsys.readouterr().err
    assert (
        coordinator.main(
            ["roster", "--out", str(tmp_path / "d.json"), "--federation-id", "x", "--hospital", "hug"]
        )
        == 2
    )
    assert "expected NAME=HEXKEY" in capsys.readouterr().err


def test_status_names_the_hospitals(tmp_path: Path) -> None:
    registration.remember_name(tmp_path, "111", "charite")
    registration.remember_name(tmp_path, "222", "hug")
    names = json.loads((tmp_path / registration.NAMES_FILE).read_text())
    nodes = [
        {"node-id": "111", "status": "online", "online-at": "2026-11-28 06:00:00Z"},
        {"node-id": "222", "status": "offline", "offline-at": "2026-11-28 05:00:00Z"},
        {"node-id": "333", "status": "registered"},
    ]
    lines = registration.format_status(nodes, names).splitlines()
    assert lines[0].split() == ["hospital", "node", "id", "status", "since"]
    assert lines[1].split() == ["charite", "111", "online", "2026-11-28", "06:00:00Z"]
    assert lines[2].split() == ["hug", "222", "offline", "2026-11-28", "05:00:00Z"]
    assert lines[3].split() == ["(unknown", "name)", "333", "registered", "never"]


def test_register_keeps_the_cli_config_superlink_wrote_unless_given_an_address(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``status`` and ``flwr ls`` read the pilot's CLI config: registering a key must not point it
    at a default address, nor turn an insecure trial's config into TLS."""
    out = tmp_path / "pilot"
    assert coordinator.main(["init-pilot", "--hospitals", "2", "--out", str(out)]) == 0
    layout = pki.PilotLayout(out)
    home = flower_cli.flwr_home(layout)
    dead = f"127.0.0.1:{free_port()}"
    flower_cli.write_cli_config(home, dead, None)  # as `superlink --insecure` leaves it
    written = (home / "config.toml").read_text()
    key = str(sorted(layout.hospitals_dir.rglob("node.pub"))[0])
    assert coordinator.main(["register", "--pilot", str(out), "--timeout", "0.1", key]) == 1
    assert "registering" in capsys.readouterr().err
    assert (home / "config.toml").read_text() == written
    other = f"127.0.0.1:{free_port()}"
    assert (
        coordinator.main(["register", "--pilot", str(out), "--superlink", other, "--timeout", "0.1", key])
        == 1
    )
    assert registration.configured_address(home) == other  # given an address, it is written

"""Pilot PKI: a CA, the SuperLink certificate, node keys in Flower's formats, 0600 secrets."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_ssh_private_key

from server import coordinator, pki


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_pilot_layout_formats_and_modes(tmp_path: Path) -> None:
    layout = pki.init_pilot(tmp_path / "pilot", 3, hostnames=["fl.example.org", "10.0.0.5"])
    assert layout.hospital_names() == ["hospital-1", "hospital-2", "hospital-3"]
    for secret in (
        layout.ca_key,
        layout.server_key,
        *(p.with_name("node.key") for p in layout.public_keys()),
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


def test_init_pilot_refuses_to_overwrite_and_bad_names(tmp_path: Path) -> None:
    pki.init_pilot(tmp_path / "p", 1)
    with pytest.raises(pki.PKIError, match="already exists; refusing to overwrite"):
        pki.init_pilot(tmp_path / "p", 1)
    pki.init_pilot(tmp_path / "p", 1, force=True)
    with pytest.raises(pki.PKIError, match="not a valid DNS name"):
        pki.init_pilot(tmp_path / "q", 1, hostnames=["bad host!"])
    with pytest.raises(pki.PKIError, match=r"hospital name '\.\./x'"):
        pki.init_pilot(tmp_path / "r", ["../x"])
    with pytest.raises(pki.PKIError, match="at least one hospital"):
        pki.init_pilot(tmp_path / "s", 0)


def test_coordinator_cli_init_and_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "pilot"
    assert coordinator.main(["init-pilot", "--names", "charite,hug", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "charite" in printed and "BEGIN" not in printed  # paths only, never key material
    layout = pki.PilotLayout(out)
    assert layout.hospital_names() == ["charite", "hug"]
    assert coordinator.main(["init-pilot", "--hospitals", "1", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err

    args = coordinator.parser().parse_args(["superlink", "--pilot", str(out), "--port", "19999"])
    cmd = coordinator.superlink_command(args, layout)
    flags = {flag: cmd[i + 1] for i, flag in enumerate(cmd[:-1]) if flag.startswith("--")}
    assert flags["--ssl-certfile"] == str(layout.server_cert)
    assert flags["--ssl-keyfile"] == str(layout.server_key)
    assert flags["--ssl-ca-certfile"] == str(layout.superlink_ca)
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "19999"
    assert "--enable-supernode-auth" in cmd and "--insecure" not in cmd
    assert "--disable-runtime-dependency-installation" in cmd
    insecure = coordinator.parser().parse_args(["superlink", "--pilot", str(out), "--insecure"])
    assert "--insecure" in coordinator.superlink_command(insecure, layout)
    assert coordinator.client_address("0.0.0.0", 9093) == "127.0.0.1:9093"

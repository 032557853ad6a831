"""Hospitals report their software versions in the hello reply; the coordinator logs, never trusts, them."""

from __future__ import annotations

import json

from client.app import software_versions
from strategies.setup_stages import software_of


def test_a_hospital_reports_its_fedquorum_and_flower_versions():
    reported = software_of(software_versions())
    assert reported.startswith("fedquorum ") and ", flwr 1.42" in reported


def test_anything_else_is_unreported_and_bounded():
    for blob in (b"", b"not json", b"[1, 2]", json.dumps({"flwr": "1"}).encode(), b"{" * 5000):
        assert software_of(blob) == "unreported versions"
    long = json.dumps({"fedquorum": "x" * 50, "flwr": "1"}).encode()
    assert software_of(long) == "unreported versions" or len(software_of(long)) < 80

"""A hospital whose node restarted after the set-up says so, in words the server reads."""

from __future__ import annotations

import pytest
from flwr.app import Context, RecordDict

from client import app as hospital
from client.refusals import KeysLost, RefusedRequest
from common import protocol as p


def test_a_node_without_this_runs_keys_refuses_as_restarted() -> None:
    fresh = Context(run_id=7, node_id=1, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(KeysLost) as lost:
        hospital.load_keyholder(fresh)
    assert str(lost.value).startswith(f"{p.KEYS_LOST}: this hospital holds no key set-up for this run")
    assert isinstance(lost.value, RefusedRequest)  # sent as written (client.error_boundary)

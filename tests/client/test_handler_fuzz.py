"""10,000 malformed messages through the hospital's real ClientApp (its mods and handlers).

A hospital that has done a real key set-up and round 1 (``test_malicious_coordinator``'s
federation) holds a CSV with its own label values and a marked feature value. Each message
starts from one of the honest requests and is mutated (config keys dropped or given wrong
types, huge values, NaN; blobs dropped, cut, renamed or replaced; arrays dropped or misshapen;
wrong message types), against a fresh copy of the hospital's set-up state. Every exception must
be typed (a ``RefusedRequest`` or a ``client.error_boundary.RequestError``), and no error text,
as Flower would send it, may hold the hospital's data path, a label value the request did not
name, a data value or secret bytes of its state. (Set-up messages meet a hospital that has already
dealt: a full deal costs ~0.1 s, so they test the parsing and the refusal of a second set-up; so
do statistics messages that relay dealings, as the strategy's first one does.)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from collections import Counter

import numpy as np
import pytest
from flower_messages import message_for
from flwr.app import ConfigRecord, Context, Message, RecordDict
from lying_coordinator import check_blob
from test_malicious_coordinator import FLOWER_RUN, PARTIES, contributions, decrypt_config
from test_malicious_coordinator import federation as federation  # the shared set-up fixture

from client import app as hospital
from client.error_boundary import (
    DATA_MISMATCH,
    EXPECTED_FORM,
    PROTOCOL_NAMES,
    DataMismatch,
    InvalidRequest,
    RequestError,
)
from client.local_data import TaskConfig
from client.policy import NODE_POLICY
from client.refusals import RefusedRequest
from common import protocol as p

SEED = 18
LABELS = ("benign-qz7", "carcinoma-qz7")  # this hospital's label values
MARKED_VALUE = "73519.25"  # a feature value of this hospital's data
DATA_DIR = "hospital-data-qz7"
ROWS = 40
WITH_DEALINGS = f"{p.STATISTICS} with dealings"  # the first statistics message relays the dealings
MESSAGES = {  # per message type: the cheap handlers fail early, train and evaluate compute more
    p.HELLO: 1800,
    p.DEAL: 1800,
    p.DEALINGS: 1500,
    p.DECRYPT: 1900,
    p.STATISTICS: 1000,
    WITH_DEALINGS: 500,
    p.TRAIN: 500,
    p.EVALUATE: 500,
    "wrong type": 1000,
}
WRONG_TYPES = ("query", "query.nope", "train.other", "evaluate.decrypt")  # Flower builds no other Message
READ_KEYS = PROTOCOL_NAMES.union(field.name.replace("_", "-") for field in dataclasses.fields(TaskConfig))
BAD_VALUES = (
    "",
    "x",
    "1,2,x",
    "../../etc/passwd",
    "moments",
    "spread",
    "statistics",
    "train",
    "a" * 5000,
    -1,
    0,
    1,
    2**62,
    -(2**62),
    0.5,
    -0.0,
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    True,
    False,
    b"",
    b"\x00\xff" * 8,
    [1.0, math.nan],
    [0.0] * 3,
    ["a", "b"],
    [2**40],
)


def write_csv(path, rng: np.random.Generator, features: int) -> None:
    values = rng.normal(size=(ROWS, features))
    values[:, 0] = float(MARKED_VALUE)
    labels = [LABELS[i % 2] for i in range(ROWS)]
    header = ",".join([f"x{j}" for j in range(features)] + ["diagnosis"])
    rows = [
        ",".join(f"{v:.5f}" for v in row) + f",{label}" for row, label in zip(values, labels, strict=True)
    ]
    path.write_text("\n".join([header, *rows]) + "\n")


@pytest.fixture(scope="module")
def hospital_one(federation, tmp_path_factory):
    """Party 1 of the federation, now with a CSV of its own: its node config, state and honest
    requests (message type -> config, blobs, arrays)."""
    server, hellos, train_config, weights, replies = federation
    path = tmp_path_factory.mktemp(DATA_DIR) / "patients.csv"
    write_csv(path, np.random.default_rng(SEED), server.settings.num_features)
    # the default policy, as every daemon runs with: its limits (e.g. max_local_epochs) stop a
    # fuzzed request from asking for 2^62 epochs of training
    policy = path.with_name("policy.toml")
    policy.write_text("")
    node_config = {
        "partition-id": 0,
        "num-partitions": len(PARTIES),
        "data-path": str(path),
        NODE_POLICY: str(policy),
    }
    task = {**server.config, "classes": ",".join(LABELS), "target-column": "diagnosis"}
    params = hospital.load_keyholder(server.contexts[1]).ctx.params
    honest = {
        p.HELLO: (task, {}, None),
        p.DEAL: (task, {f"{p.HELLO_BLOB}-{q}": h for q, h in hellos.items()}, None),
        p.DEALINGS: (task, {p.per_party(p.SEALED_SHARE, 2): b"\x01" * 64, f"{p.DEALING}-2": b"{}"}, None),
        p.STATISTICS: (
            {**task, p.STATISTICS_PASS: "moments", p.ROUND: -2, p.WEIGHT_SCALE: params.default_weight_scale},
            {},
            None,
        ),
        WITH_DEALINGS: (
            {**task, p.STATISTICS_PASS: "moments", p.ROUND: -2, p.WEIGHT_SCALE: params.default_weight_scale}
            | {p.WITH_DEALINGS: True},
            {p.per_party(p.SEALED_SHARE, 2): b"\x01" * 64, f"{p.DEALING}-2": b"{}"},
            None,
        ),
        p.TRAIN: ({**task, **train_config, p.ROUND: 3, p.PARTY: 1}, {}, weights),
        p.DECRYPT: (
            {**task, **decrypt_config(attempt=3)},
            contributions(replies) | check_blob(server.contexts[1], decrypt_config(attempt=3)),
            None,
        ),
        p.EVALUATE: ({**task, p.ROUND: 3, p.CLIP: params.clip}, {}, weights),
    }
    # answered once, honestly: the fuzz's near-honest requests are then retries, answered from the
    # stored ciphertexts and shares instead of encrypting anew (seconds for 10,000 messages)
    context = context_of(node_config, server.state(1))
    for message_type in (p.DECRYPT, p.STATISTICS, p.EVALUATE, p.TRAIN):
        hospital.app(message_of(message_type, *honest[message_type]), context)
    return node_config, dict(context.state[hospital.STATE]), honest, str(path)


class Mutator:
    """Malformed variants of honest requests, drawn from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def pick(self, items):
        return items[int(self.rng.integers(len(items)))]

    def config(self, config: dict) -> dict:
        read = sorted(READ_KEYS.intersection(config))  # mostly keys the handlers read: fewer full answers
        config = dict(config)
        for _ in range(int(self.rng.integers(1, 4))):
            chance = self.rng.random()
            key = self.pick(read) if chance < 0.8 else self.pick(sorted(config)) if chance < 0.95 else "junk"
            if self.rng.random() < 0.25:
                config.pop(key, None)
            else:
                config[key] = self.pick(BAD_VALUES)
        return config

    def blobs(self, blobs: dict[str, bytes]) -> dict[str, bytes]:
        blobs = dict(blobs)
        action = self.pick(("drop", "cut", "random", "rename", "add", "empty"))
        name = self.pick(sorted(blobs)) if blobs else f"{p.CONTRIBUTION}-1"
        value = blobs.pop(name, b"")
        if action == "cut":
            blobs[name] = value[: int(self.rng.integers(len(value) + 1))]
        elif action == "random":
            blobs[name] = self.rng.bytes(int(self.rng.integers(1, 300)))
        elif action == "rename":
            blobs[self.pick((f"{name}x", f"{p.CONTRIBUTION}-99999", f"{p.HELLO_BLOB}-0", "blob-é"))] = value
        elif action == "add":
            blobs[name], blobs[f"{name.rstrip('0123456789')}{self.rng.integers(5, 50)}"] = value, value
        elif action == "empty":
            blobs[name] = b""
        return blobs

    def arrays(self, arrays):
        if arrays is None or self.rng.random() < 0.3:
            return self.pick((None, [np.zeros(3)], [np.full((2, 2), np.nan)]))
        return arrays

    def request(self, honest: tuple) -> tuple:
        config, blobs, arrays = honest
        what = self.rng.random()
        if what < 0.6:
            return self.config(config), blobs, arrays
        if what < 0.85:
            return config, self.blobs(blobs), arrays
        return self.config(config), blobs, self.arrays(arrays)


def message_of(message_type: str, config: dict, blobs: dict[str, bytes], arrays) -> Message:
    return message_for(message_type, config, blobs=blobs, arrays=arrays, run_id=FLOWER_RUN, dst_node_id=1)


def context_of(node_config: dict, state: dict) -> Context:
    """A fresh copy of the hospital's stored set-up, so no message sees another's changes."""
    return Context(
        FLOWER_RUN, 1, dict(node_config), RecordDict({hospital.STATE: ConfigRecord(dict(state))}), {}
    )


def flower_reason(error: Exception) -> str:
    """The reason text Flower 1.42 sends for an exception (``flwr.supernode.runtime.run_clientapp``)."""
    return str(type(error)) + ":<'" + str(error) + "'>"


def leaks(reason: str, config: dict, data_path: str, state: dict) -> list[str]:
    """What of the hospital's own the reason gives away."""
    sent = json.dumps(config, default=str)
    secrets = [v for k, v in state.items() if k.startswith("secret:") and k != "secret:own-hello"]
    found = [s for s in (data_path, DATA_DIR, MARKED_VALUE) if s in reason]
    found += [label for label in LABELS if label in reason and label not in sent]
    found += [
        f"secret {v[:4].hex()}" for v in secrets if v[:16].hex() in reason or repr(v[:16])[2:-1] in reason
    ]
    return found


def test_ten_thousand_malformed_messages_get_typed_replies_that_leak_nothing(hospital_one):
    node_config, state, honest, data_path = hospital_one
    mutator = Mutator(SEED)
    outcomes: Counter[str] = Counter()
    untyped: list[str] = []
    leaked: list[str] = []
    started = time.perf_counter()
    for kind, count in MESSAGES.items():
        for _ in range(count):
            if kind == "wrong type":
                message_type = mutator.pick(WRONG_TYPES)
                config, blobs, arrays = honest[mutator.pick(sorted(honest))]
            else:
                message_type = p.STATISTICS if kind == WITH_DEALINGS else kind
                config, blobs, arrays = mutator.request(honest[kind])
            try:
                hospital.app(message_of(message_type, config, blobs, arrays), context_of(node_config, state))
            except (RefusedRequest, RequestError) as error:
                outcomes[type(error).__name__] += 1
                reason = flower_reason(error)
                leaked += [
                    f"{message_type}: {what} in {reason[:300]}"
                    for what in leaks(reason, config, data_path, state)
                ]
            except Exception as error:  # counted: the test's subject
                untyped.append(f"{message_type}: {type(error).__name__}: {str(error)[:200]}")
            else:
                outcomes["replied"] += 1
    seconds = time.perf_counter() - started
    assert sum(outcomes.values()) + len(untyped) == sum(MESSAGES.values())
    assert not untyped, f"{len(untyped)} untyped, e.g. {untyped[:5]}"
    assert not leaked, f"{len(leaked)} leaks, e.g. {leaked[:5]}"
    # the mutations reach every kind of answer: refusals, invalid requests, data mismatches, replies
    assert {"RefusedRequest", "InvalidRequest", "DataMismatch", "replied"} <= set(outcomes), outcomes
    print(f"{sum(MESSAGES.values())} messages in {seconds:.1f} s: {dict(outcomes)}")


SENT_BY = "[hospital-1] "  # every error text a hospital sends names it (common.sender_name)


def test_a_label_mismatch_reaches_the_coordinator_generic_and_the_hospital_log_in_full(
    hospital_one, tmp_path, caplog
):
    node_config, state, honest, data_path = hospital_one
    config = {**honest[p.HELLO][0], "classes": f"{LABELS[0]},unknown-label"}
    audited = {**node_config, "state-dir": str(tmp_path)}
    with caplog.at_level(logging.WARNING, "client.error_boundary"), pytest.raises(DataMismatch) as refused:
        hospital.app(message_of(p.HELLO, config, {}, None), context_of(audited, state))
    assert str(refused.value) == f"{SENT_BY}{p.HELLO}: {DATA_MISMATCH}"
    assert data_path in caplog.text and LABELS[1] in caplog.text  # the detail stays at the hospital
    (entry,) = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert (
        entry["outcome"] == "error"
        and entry["reason"] == f"DataMismatch: {SENT_BY}{p.HELLO}: {DATA_MISMATCH}"
    )


def test_a_malformed_request_is_named_by_its_key_and_expected_form(hospital_one):
    node_config, state, honest, _ = hospital_one
    config = {k: v for k, v in honest[p.STATISTICS][0].items() if k != p.STATISTICS_PASS}
    with pytest.raises(InvalidRequest) as invalid:
        hospital.app(message_of(p.STATISTICS, config, {}, None), context_of(node_config, state))
    assert str(invalid.value) == (
        f"{SENT_BY}{p.STATISTICS}: the request is malformed (KeyError about '{p.STATISTICS_PASS}'); "
        f"expected {EXPECTED_FORM[p.STATISTICS]}; see the hospital's log"
    )


def test_a_refusal_keeps_its_reason_through_the_app(hospital_one):
    node_config, state, honest, _ = hospital_one
    config, blobs, _ = honest[p.DECRYPT]
    with pytest.raises(RefusedRequest, match=rf"^{re.escape(SENT_BY)}attempt 99 is outside \[1, "):
        hospital.app(
            message_of(p.DECRYPT, {**config, p.ATTEMPT: 99}, blobs, None), context_of(node_config, state)
        )


def test_an_unknown_message_type_is_refused_by_name():
    with pytest.raises(InvalidRequest, match=r"^message type 'query\.nope': expected one of evaluate, "):
        hospital.app(message_of("query.nope", {}, {}, None), Context(FLOWER_RUN, 1, {}, RecordDict(), {}))


def test_the_expected_forms_cover_exactly_the_handled_message_types():
    handled = {name.removesuffix(".default") for name in hospital.app._registered_funcs}
    assert handled == set(EXPECTED_FORM)


def test_untyped_errors_are_wrapped_and_arrays_are_read(hospital_one):
    """A model of the wrong shape reaches the handler (not only the parsers) and is an invalid request."""
    node_config, state, honest, _ = hospital_one
    config, _, _ = honest[p.TRAIN]
    with pytest.raises(InvalidRequest, match=rf"^{re.escape(SENT_BY)}{p.TRAIN}: the request is malformed \("):
        hospital.app(message_of(p.TRAIN, config, {}, [np.zeros(3)]), context_of(node_config, state))

"""The hospital's Flower ClientApp: key setup, local training, encrypted updates, partial decryption.

Only ciphertexts, public key material, sealed Shamir shares, decryption shares and plaintext
evaluation metrics leave the hospital. Every request that could reveal more than the round's
aggregate is checked by ``client.keyholder.KeyHolder`` first.
"""

from __future__ import annotations

import importlib
import logging
import time

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.audit import audit_mod
from client.keyholder import KeyHolder
from he import protocol as p
from he.ciphertext import c1_from_bytes

log = logging.getLogger(__name__)
STATE = "fedquorum"


def local_task():
    """``client.task``, imported on first use: in deployment every message starts a fresh
    ClientApp process, and torch plus the data stack cost ~5 s to import, which key-setup and
    decryption messages do not need."""
    return importlib.import_module("client.task")


app = ClientApp(mods=[audit_mod])


# -- record helpers ------------------------------------------------------------------------------
def blob_array(data: bytes) -> Array:
    return Array(dtype="uint8", shape=(len(data),), stype="raw-bytes", data=data)


def blobs_of(message: Message) -> dict[str, bytes]:
    record = message.content.array_records.get(p.BLOBS)
    return {} if record is None else {name: bytes(array.data) for name, array in record.items()}


def reply(
    message: Message,
    blobs: dict[str, bytes] | None = None,
    metrics: dict | None = None,
    arrays: list[np.ndarray] | None = None,
) -> Message:
    content = RecordDict()
    if blobs:
        content[p.BLOBS] = ArrayRecord({name: blob_array(b) for name, b in blobs.items()})
    if arrays is not None:
        content[p.ARRAYS] = ArrayRecord([np.ascontiguousarray(a, dtype=np.float64) for a in arrays])
    if metrics:
        content[p.METRICS] = MetricRecord(metrics)
    return Message(content=content, reply_to=message)


def config_of(message: Message) -> dict:
    record = message.content.config_records.get(p.CONFIG)
    return {} if record is None else dict(record)


# -- key holder state ------------------------------------------------------------------------------
def load_keyholder(context: Context) -> KeyHolder:
    state = context.state.config_records.get(STATE)
    if state is None:
        raise RuntimeError("no key setup for this run on this hospital: the server skipped query.hello")
    secrets = {k[len("secret:") :]: bytes(v) for k, v in state.items() if k.startswith("secret:")}
    return KeyHolder(
        preset_name=str(state["preset"]),
        party=int(state["party"]),
        num_parties=int(state["n"]),
        threshold=int(state["t"]),
        run_id=int(state["run"]),
        secrets=secrets,
        trained_round=int(state["trained"]),
        decrypted_rounds=[int(r) for r in state["decrypted"]][1:],
        statistics_rounds=[int(r) for r in state["statistics-rounds"]][1:],
    )


def store_keyholder(context: Context, holder: KeyHolder) -> None:
    record = ConfigRecord(
        {
            "preset": holder.preset_name,
            "party": holder.party,
            "n": holder.num_parties,
            "t": holder.threshold,
            "run": holder.run_id,
            "trained": holder.trained_round,
            "decrypted": [1, *holder.decrypted_rounds],
            "statistics-rounds": [1, *holder.statistics_rounds],  # 1 pads: lists may not be empty
        }
    )
    for name, value in holder.secrets.items():
        record[f"secret:{name}"] = value
    context.state[STATE] = record


def party_keys(blobs: dict[str, bytes], prefix: str) -> dict[int, bytes]:
    return {int(name[len(prefix) :]): value for name, value in blobs.items() if name.startswith(prefix)}


# -- handlers --------------------------------------------------------------------------------------
@app.query("hello")
def hello(message: Message, context: Context) -> Message:
    config = config_of(message)
    holder = KeyHolder(
        preset_name=str(config[p.PRESET]),
        party=int(config[p.PARTY]),
        num_parties=int(config[p.NUM_PARTIES]),
        threshold=int(config[p.THRESHOLD]),
        run_id=int(context.run_id),
    )
    local = local_task()
    local.raw_hospital_data(local.TaskConfig.from_config(config), dict(context.node_config))  # fail early
    contribution, channel_key = holder.hello()
    store_keyholder(context, holder)
    return reply(message, {p.CONTRIBUTION: contribution, p.CHANNEL_KEY: channel_key})


@app.query("keygen")
def keygen(message: Message, context: Context) -> Message:
    holder = load_keyholder(context)
    blobs = blobs_of(message)
    contributions = list(party_keys(blobs, p.CONTRIBUTION + "-").values())
    channel_keys = party_keys(blobs, p.CHANNEL_KEY + "-")
    share, sealed = holder.keygen(contributions, channel_keys)
    store_keyholder(context, holder)
    out = {p.KEY_SHARE: share} | {f"{p.SEALED_SHARE_PREFIX}{j}": b for j, b in sealed.items()}
    return reply(message, out)


@app.query("keyshares")
def keyshares(message: Message, context: Context) -> Message:
    holder = load_keyholder(context)
    blobs = blobs_of(message)
    holder.receive_key_shares(
        party_keys(blobs, p.SEALED_SHARE_PREFIX), party_keys(blobs, p.CHANNEL_KEY + "-")
    )
    holder.secrets["public-key"] = blobs[p.PUBLIC_KEY]
    store_keyholder(context, holder)
    return reply(message, metrics={"ready": 1})


@app.train()
def train(message: Message, context: Context) -> Message:
    config = config_of(message)
    local = local_task()
    task = local.TaskConfig.from_config(config)
    data = local.hospital_data(task, dict(context.node_config))
    server_round = int(config[p.ROUND])
    global_weights = [a.numpy() for a in message.content[p.ARRAYS].values()]
    party = int(config.get(p.PARTY, 0))
    delta, metrics = local.run_local_round(task, data, global_weights, server_round, party)
    num_examples = len(data.y_train)
    if not bool(config.get(p.ENCRYPTED, True)):
        metrics[p.NUM_EXAMPLES] = num_examples
        return reply(message, arrays=delta, metrics=metrics)
    holder = load_keyholder(context)
    start = time.perf_counter()
    clip = float(config[p.CLIP]) if p.CLIP in config else None
    blob, clipped = holder.encrypt_update(server_round, delta, num_examples, clip)
    metrics |= {"encrypt_seconds": time.perf_counter() - start, "clipped_values": clipped}
    store_keyholder(context, holder)
    return reply(message, {p.UPDATE: blob}, metrics=metrics)


@app.query("statistics")
def statistics(message: Message, context: Context) -> Message:
    """One pass of feature statistics for the federation's standardization (see client.task)."""
    config = config_of(message)
    local = local_task()
    data = local.raw_hospital_data(local.TaskConfig.from_config(config), dict(context.node_config))
    if not local.is_tabular(data):
        return reply(message, metrics={"tabular": 0})
    pass_name = str(config[p.STATISTICS_PASS])
    values = local.feature_statistics(
        data, pass_name, config.get(p.FEATURE_MEAN), config.get(p.FEATURE_SCALE)
    )
    count = len(data.y_train)
    if not bool(config.get(p.ENCRYPTED, True)):
        return reply(message, arrays=values, metrics={p.NUM_EXAMPLES: count, "tabular": 1})
    holder = load_keyholder(context)
    blob = holder.encrypt_feature_statistics(p.STATISTICS_PASSES[pass_name], values, count)
    store_keyholder(context, holder)
    return reply(message, {p.UPDATE: blob}, metrics={"tabular": 1})


@app.query("decrypt")
def decrypt(message: Message, context: Context) -> Message:
    config = config_of(message)
    holder = load_keyholder(context)
    c1 = c1_from_bytes(holder.ctx, blobs_of(message)[p.AGGREGATE_C1], "the server")
    contributors = [int(x) for x in str(config[p.CONTRIBUTORS]).split(",") if x]
    start = time.perf_counter()
    share = holder.partial_decrypt(int(config[p.ROUND]), c1, contributors, int(config[p.MIN_CONTRIBUTORS]))
    store_keyholder(context, holder)
    return reply(
        message, {p.DECRYPTION_SHARE: share}, metrics={"decrypt_seconds": time.perf_counter() - start}
    )


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    local = local_task()
    task = local.TaskConfig.from_config(config_of(message))
    data = local.hospital_data(task, dict(context.node_config))
    weights = [a.numpy() for a in message.content[p.ARRAYS].values()]
    return reply(message, metrics=local.evaluate_global(task, data, weights))

"""The hospital's Flower ClientApp: key setup, local training, encrypted updates, partial decryption.

Only signed hellos (a random contribution and a channel public key), sealed Shamir shares,
ciphertext halves ``c0`` with their signed digests, masked decryption shares and plaintext
evaluation metrics leave the hospital. Every request that could reveal more than the round's
aggregate is checked by ``client.keyholder.KeyHolder`` first.
"""

from __future__ import annotations

import importlib
import json
import logging
import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from client.audit import OWN_METRICS, STATE_DIR_KEY, audit_mod
from client.error_boundary import HospitalClientApp, error_boundary_mod
from client.identity import hospital_identity
from client.keyholder import KeyHolder
from client.ledger import ReleaseLedger
from client.policy import policy_mod
from client.privacy_budget import charge_round, distributed_spend, record_spend
from client.refusals import KeysLost, RefusedRequest
from common import protocol as p
from common.records import blob_array, blobs_of
from he.transcript import model_release, statistics_release
from models.pooled_metrics import DEFAULT_BINS
from privacy import hospital as dp_hospital
from privacy.config import PRESET_KEY as DP_PRESET
from privacy.mechanism import plan_from_config

log = logging.getLogger(__name__)
STATE = "fedquorum"
PRESET_KEY = "preset"  # read by experiments._simulate to register preset variants


def hospital_side(module: str):
    """``client.local_data`` or ``client.local_training``, imported on first use: in deployment
    every message starts a fresh ClientApp process, and the data stack (~1 s) and torch (~3 s
    more) are not needed by the key set-up and decryption messages (docs/architecture.md)."""
    return importlib.import_module(module)


# the policy check and the error boundary run inside the audit mod: each refusal or error is an audit line
app = HospitalClientApp(mods=[audit_mod, error_boundary_mod, policy_mod])


# -- record helpers ------------------------------------------------------------------------------


def reply(
    message: Message,
    blobs: dict[str, bytes] | None = None,
    metrics: dict | None = None,
    arrays: list[np.ndarray] | None = None,
    evaluation: list[int] | None = None,
) -> Message:
    """The reply; ``evaluation``: plaintext FedAvg's evaluation sums (encrypted runs carry them
    inside the update)."""
    content = RecordDict()
    if blobs:
        content[p.BLOBS] = ArrayRecord({name: blob_array(b) for name, b in blobs.items()})
    if arrays is not None:
        content[p.ARRAYS] = ArrayRecord([np.ascontiguousarray(a, dtype=np.float64) for a in arrays])
    if metrics:
        content[p.METRICS] = MetricRecord(metrics)
    if evaluation is not None:
        content[p.EVALUATION] = ArrayRecord([np.array(evaluation, dtype=np.int64)])
    return Message(content=content, reply_to=message)


def config_of(message: Message) -> dict:
    record = message.content.config_records.get(p.CONFIG)
    return {} if record is None else dict(record)


# -- key holder state ------------------------------------------------------------------------------
def load_keyholder(context: Context) -> KeyHolder:
    state = context.state.config_records.get(STATE)
    if state is None:
        raise KeysLost(
            f"{p.KEYS_LOST}: this hospital holds no key set-up for this run (its node restarted "
            "after the set-up); it sits the rest of this run out, a new or resumed run sets up afresh"
        )
    holder = KeyHolder.from_state({k: bytes(v) for k, v in state.items() if k != PRESET_KEY})
    holder.ledger = release_ledger(dict(context.node_config))
    return holder


_warned_no_ledger = False


def release_ledger(node_config: dict) -> ReleaseLedger | None:
    """The hospital's release ledger in its ``state-dir``; without one (plain simulation) there is
    none, and nothing stops a coordinator from differencing two runs (said once in the log)."""
    global _warned_no_ledger
    state_dir = node_config.get(STATE_DIR_KEY)
    if state_dir not in (None, ""):
        return ReleaseLedger.in_state_dir(str(state_dir))
    if not _warned_no_ledger:
        _warned_no_ledger = True
        log.warning(
            "no '%s' in the node config: no release ledger, so decryptions are not checked across runs "
            "(acceptable in simulation only)",
            STATE_DIR_KEY,
        )
    return None


def store_keyholder(context: Context, holder: KeyHolder) -> None:
    """Write the holder to the node's run state (before any reply leaves: a share is recorded
    before it is sent)."""
    record = ConfigRecord(holder.to_state())
    record[PRESET_KEY] = holder.roster.preset
    context.state[STATE] = record


def party_number(text: str, what: str) -> int:
    """A roster position sent by the server, refused by name unless it is a plain small number."""
    if not (text.isascii() and text.isdigit() and len(text) <= 6):
        raise RefusedRequest(f"{what}: expected a party number, got {text[:40]!r}")
    return int(text)


def party_keys(blobs: dict[str, bytes], name: str) -> dict[int, bytes]:
    """The blobs named ``p.per_party(name, party)``, by party number (refused unless a number)."""
    found = {}
    for blob_name, value in blobs.items():
        party = p.party_of_blob(blob_name, name)
        if party is not None:
            found[party_number(party, f"blob {blob_name[:60]!r}")] = value
    return found


def config_int(config: dict, key: str) -> int:
    """An integer of the server's config; anything else (text, a float, a bool) is refused by name."""
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RefusedRequest(f"config {key!r}: expected an integer, got {str(value)[:40]!r}")
    return value


def config_float(config: dict, key: str) -> float:
    value = config.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RefusedRequest(f"config {key!r}: expected a number, got {str(value)[:40]!r}")
    return float(value)


# -- handlers --------------------------------------------------------------------------------------
@app.query("hello")
def hello(message: Message, context: Context) -> Message:
    config = config_of(message)
    roster, name, key_path = hospital_identity(dict(context.node_config), config)
    holder = KeyHolder(roster, name, int(context.run_id), str(key_path))
    local = hospital_side("client.local_data")
    local.raw_hospital_data(local.TaskConfig.from_config(config), dict(context.node_config))  # fail early
    signed = holder.hello()
    store_keyholder(context, holder)
    return reply(message, {p.HELLO_BLOB: signed, p.SOFTWARE: software_versions()})


def software_versions() -> bytes:
    """This hospital's fedquorum and Flower versions, so the coordinator's log shows who runs what."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("fedquorum", "flwr"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "unknown"
    return json.dumps(versions).encode()


@app.query("deal")
def deal(message: Message, context: Context) -> Message:
    holder = load_keyholder(context)
    sealed, statement, public_key = holder.deal(party_keys(blobs_of(message), p.HELLO_BLOB))
    store_keyholder(context, holder)
    out = {p.DEALING: statement, p.PUBLIC_KEY_SHARE: public_key}
    out |= {p.per_party(p.SEALED_SHARE, k): b for k, b in sealed.items()}
    return reply(message, out)


def accept_dealings(message: Message, context: Context) -> dict[str, bytes]:
    """The dealings a message relays (each dealer's sealed share and signed DEALING statement),
    checked and kept by ``KeyHolder.receive_dealings`` and stored before any reply leaves; the
    reply's COMPLAINTS blob (the dealers whose share failed). Both the ``query.dealings`` handler
    and the first ``query.statistics`` message (``p.WITH_DEALINGS``) accept dealings here."""
    holder = load_keyholder(context)
    blobs = blobs_of(message)
    failed = holder.receive_dealings(party_keys(blobs, p.SEALED_SHARE), party_keys(blobs, p.DEALING))
    store_keyholder(context, holder)
    return {p.COMPLAINTS: json.dumps(failed).encode()}


@app.query("dealings")
def dealings(message: Message, context: Context) -> Message:
    return reply(message, accept_dealings(message, context), metrics={"ready": 1})


@app.train()
def train(message: Message, context: Context) -> Message:
    config = config_of(message)
    local, training = hospital_side("client.local_data"), hospital_side("client.local_training")
    task = local.TaskConfig.from_config(config)
    data = local.hospital_data(task, dict(context.node_config))
    server_round = config_int(config, p.ROUND)
    global_weights = [a.numpy() for a in message.content[p.ARRAYS].values()]
    num_examples = len(data.y_train)
    record_dp = record_spend(config, num_examples)
    if record_dp:  # DP-SGD: the hospital's policy and budget decide before it trains
        charge_round(record_dp, context, server_round)
    randomness = local.hospital_randomness(task, dict(context.node_config))
    delta, train_loss, evaluation = training.run_local_round(
        task, data, global_weights, server_round, randomness
    )
    own = {"train_loss": train_loss, **evaluation.metrics}
    shared = own_metrics(context, config, f"round {server_round}", own)
    bins = evaluation_bins(config)
    encrypted = bool(config.get(p.ENCRYPTED, True))
    holder = load_keyholder(context) if encrypted else None
    plan = plan_from_config(config, delta, holder.roster.preset if holder else str(config.get(DP_PRESET)))
    if plan:  # the hospital's own epsilon: its policy and budget decide, the ledger records it first
        charge_round(distributed_spend(plan, config), context, server_round)
    private = bool(plan or record_dp)
    if private:  # DP covers the update, not the exact record count or training loss: weight 1
        num_examples, train_loss = 1, 0.0
    if not encrypted:
        if plan:  # the same integers as the encrypted path, each update with weight 1
            delta = plan.plain(delta, np.random.default_rng())
        sums = evaluation.sums(bins, 0 if private else num_examples, train_loss)
        return reply(message, arrays=delta, metrics={**shared, p.NUM_EXAMPLES: num_examples}, evaluation=sums)
    if plan:  # the hospital's own range, scale and noise: weight 1, no example count released
        try:
            dp_hospital.require_contributors(plan, holder.roster.min_contributors)
        except dp_hospital.TooFewContributors as err:
            raise RefusedRequest(str(err)) from None
        delta, quantizer = plan.clip(delta), plan.privatize
        clip, scale, clipped = plan.layout_clip, plan.weight_scale, 0
        sums = evaluation.sums(bins)  # no training count or loss: DP releases no real count
    else:
        clip = config_float(config, p.CLIP) if p.CLIP in config else holder.ctx.params.clip
        scale = config_int(config, p.WEIGHT_SCALE) if p.WEIGHT_SCALE in config else None
        quantizer = None
        clipped = sum(int(np.count_nonzero(np.abs(d) > clip)) for d in delta)
        sums = evaluation.sums(bins) if private else evaluation.sums(bins, num_examples, train_loss, clipped)
    start = time.perf_counter()
    release = model_release(global_weights)  # computed here, from the model received
    blob, statement, _ = holder.encrypt(
        "train", server_round, delta, num_examples, clip, scale, quantizer, sums, release=release
    )
    store_keyholder(context, holder)
    metrics = {**shared, "encrypt_seconds": time.perf_counter() - start}
    return reply(message, {p.UPDATE: blob, p.CONTRIBUTION: statement}, metrics=metrics)


def evaluation_bins(config: dict) -> int:
    return config_int(config, p.EVAL_BINS) if p.EVAL_BINS in config else DEFAULT_BINS


def own_metrics(context: Context, config: dict, what: str, metrics: dict) -> dict:
    """Keep this hospital's own metrics for its staff (its log and its audit line); return them
    to send only if the run opted into per-hospital plaintext (otherwise only the pooled sums
    leave, encrypted)."""
    shared = bool(config.get(p.PER_HOSPITAL_PLAINTEXT, False))
    where = "also sent in plaintext (per_hospital_plaintext)" if shared else "they never leave this hospital"
    log.info("%s, this hospital's own metrics (%s): %s", what, where, metrics)
    context.state[OWN_METRICS] = MetricRecord({**metrics, "left_site": int(shared)})
    return dict(metrics) if shared else {}


@app.query("statistics")
def statistics(message: Message, context: Context) -> Message:
    """One pass of feature statistics for the federation's standardization (see client.local_data).

    The run's first statistics message also relays this keyholder's dealings (``p.WITH_DEALINGS``):
    accepted first, exactly as ``query.dealings`` accepts them, and the reply carries the complaints."""
    config = config_of(message)
    with_dealings = config.get(p.WITH_DEALINGS, False)
    if not isinstance(with_dealings, bool):
        raise RefusedRequest(f"config {p.WITH_DEALINGS!r}: expected a bool, got {str(with_dealings)[:40]!r}")
    complaints = accept_dealings(message, context) if with_dealings else {}
    local = hospital_side("client.local_data")
    data = local.raw_hospital_data(local.TaskConfig.from_config(config), dict(context.node_config))
    if not local.is_tabular(data):
        return reply(message, complaints, metrics={"tabular": 0})
    pass_name = str(config[p.STATISTICS_PASS])
    values = local.feature_statistics(
        data, pass_name, config.get(p.FEATURE_MEAN), config.get(p.FEATURE_SCALE)
    )
    count = len(data.y_train)
    if not bool(config.get(p.ENCRYPTED, True)):
        return reply(message, complaints, arrays=values, metrics={p.NUM_EXAMPLES: count, "tabular": 1})
    holder = load_keyholder(context)
    scale = config_int(config, p.WEIGHT_SCALE) if p.WEIGHT_SCALE in config else None
    blob, statement, clipped = holder.encrypt(
        "statistics",
        config_int(config, p.ROUND),
        values,
        count,
        None,
        scale,
        release=statistics_release(pass_name),
    )
    if clipped:
        log.warning("%d feature statistics exceed 2^20 and were clipped: rescale those features", clipped)
    store_keyholder(context, holder)
    return reply(message, complaints | {p.UPDATE: blob, p.CONTRIBUTION: statement}, metrics={"tabular": 1})


@app.query("decrypt")
def decrypt(message: Message, context: Context) -> Message:
    """First phase: the decryption share and a commitment to the check share; second phase (the
    message carries the server's seed): the check share, opened if the seed derives its polynomial."""
    config, blobs = config_of(message), blobs_of(message)
    holder = load_keyholder(context)
    kind, round_id, attempt = (
        str(config.get(p.KIND)),
        config_int(config, p.ROUND),
        config_int(config, p.ATTEMPT),
    )
    start = time.perf_counter()
    if p.CHECK_SEED in blobs:
        out = {p.CHECK_SHARE: holder.open_check(kind, round_id, attempt, blobs[p.CHECK_SEED])}
    else:
        keyholders = [
            party_number(x, "config 'keyholders'") for x in str(config.get(p.KEYHOLDERS, "")).split(",")
        ]
        contributions = party_keys(blobs, p.CONTRIBUTION)
        check_polynomial = blobs.get(p.CHECK_POLYNOMIAL, b"")  # parsed after the request's checks
        share, commitment = holder.partial_decrypt(
            kind, round_id, attempt, keyholders, contributions, check_polynomial
        )
        out = {p.DECRYPTION_SHARE: share, p.CHECK_COMMITMENT: commitment}
    store_keyholder(context, holder)
    return reply(message, out, metrics={"decrypt_seconds": time.perf_counter() - start})


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """The final model on this hospital's test split: its evaluation sums, encrypted like an
    update (kind ``train``, the round after the last) unless the run is plaintext."""
    config = config_of(message)
    local, training = hospital_side("client.local_data"), hospital_side("client.local_training")
    task = local.TaskConfig.from_config(config)
    data = local.hospital_data(task, dict(context.node_config))
    weights = [a.numpy() for a in message.content[p.ARRAYS].values()]
    evaluation = training.evaluate_local(task, data, weights, task.seed)
    shared = own_metrics(context, config, "final evaluation", evaluation.metrics)
    sums = evaluation.sums(evaluation_bins(config))
    if not bool(config.get(p.ENCRYPTED, True)):
        return reply(message, metrics=shared, evaluation=sums)
    holder = load_keyholder(context)
    clip = config_float(config, p.CLIP) if p.CLIP in config else None
    scale = config_int(config, p.WEIGHT_SCALE) if p.WEIGHT_SCALE in config else None
    round_id = config_int(config, p.ROUND)
    blob, statement, _ = holder.encrypt(
        "train", round_id, [], 1, clip, scale, None, sums, release=model_release(weights)
    )
    store_keyholder(context, holder)
    return reply(message, {p.UPDATE: blob, p.CONTRIBUTION: statement}, metrics=shared)

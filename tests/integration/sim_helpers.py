"""Shared by the simulation tests: run a federation, and hospital apps that fail on cue."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation
from tampering import shifted_share

from client import app as hospital
from common import protocol as p
from common.settings import RunSettings
from he.decrypt import DecryptionShare
from server.app import RunStoppedError, make_server_app, run_federation
from strategies.run_record import FederationResult

os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
BACKEND = {"client_resources": {"num_cpus": 1}}
Outage = Callable[[Message, Context], bool]
# Quantization step of the precise preset (2^-53 relative) accumulates over 3 rounds of SGD:
# weights agree far below float32 resolution of what training changes.
WEIGHT_TOLERANCE = 1e-5


def simulate(settings: RunSettings, client_app: ClientApp, num_hospitals: int) -> FederationResult:
    results: list[FederationResult] = []
    rounds: list[dict] = []
    app = make_server_app(settings, lambda r, m: rounds.append(m), results.append)
    run_simulation(app, client_app, num_supernodes=num_hospitals, backend_config=BACKEND)
    assert results, "the ServerApp did not finish"
    assert len(rounds) == settings.num_rounds
    return results[0]


def stopped_runs(
    settings: RunSettings, num_hospitals: int, client_app: ClientApp = hospital.app
) -> list[RunStoppedError]:
    """Run a federation (of real hospitals, unless ``client_app`` says otherwise) that is expected
    to stop early: the errors it stopped with."""
    errors: list[RunStoppedError] = []
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            run_federation(grid, settings)
        except RunStoppedError as err:
            errors.append(err)

    run_simulation(app, client_app, num_supernodes=num_hospitals, backend_config=BACKEND)
    return errors


def write_hospital_tables(directory, rng, hospitals: int, rows: tuple[int, int], features: int) -> str:
    """One CSV per hospital (a shared linear rule with noise, ``rows`` = (fewest, most) patients);
    returns the comma-separated paths for ``RunSettings.data_paths``."""
    rule = rng.normal(size=features)
    paths = []
    for index in range(hospitals):
        count = int(rng.integers(rows[0], rows[1] + 1))
        values = rng.normal(size=(count, features))
        target = (values @ rule + rng.normal(scale=0.5, size=count) > 0).astype(int)
        path = directory / f"hospital-{index}.csv"
        header = ",".join([f"x{j}" for j in range(features)] + ["target"])
        body = [",".join(f"{v:.5f}" for v in row) + f",{t}" for row, t in zip(values, target, strict=True)]
        path.write_text("\n".join([header, *body]) + "\n")
        paths.append(str(path))
    return ",".join(paths)


def partition(context: Context) -> int:
    return int(context.node_config["partition-id"])


def asked_to_decrypt(record: Path, message, context) -> bool:
    """Note (in a file: ClientApps run in Ray workers) each train round this keyholder is asked in."""
    if message.content["config"]["kind"] == "train":
        with record.open("a") as out:
            out.write(f"{message.content['config']['server-round']}\n")
    return True


HANDLERS = {  # message type -> the hospital's real handler (client.app)
    "query.hello": hospital.hello,
    "query.deal": hospital.deal,
    "query.dealings": hospital.dealings,
    "query.statistics": hospital.statistics,
    "query.decrypt": hospital.decrypt,
    "train": hospital.train,
    "evaluate": hospital.evaluate,
}
Handler = Callable[[Message, Context], Message]


def hospital_app(replaced: dict[str, Handler] | None = None) -> ClientApp:
    """The hospital ClientApp with the handlers of ``replaced`` (by message type) swapped in."""
    app = ClientApp()
    for message_type, handler in (HANDLERS | (replaced or {})).items():
        kind, _, name = message_type.partition(".")
        register = app.query(name) if kind == "query" else getattr(app, kind)()
        register(handler)
    return app


def unreliable_hospitals(
    train_down: Outage | None = None,
    decrypt_down: Outage | None = None,
    tamper: Callable[[Context], bool] | None = None,
    shift_field: Callable[[Message, Context], tuple[int, int] | None] | None = None,
) -> ClientApp:
    """The hospital ClientApp, except that training or decryption fails when the outage says so,
    and a keyholder for which ``tamper`` says so adds 1 to one coefficient of each share it sends
    (a keyholder that cheats: its share still parses, the combined noise leaves its bound).
    ``shift_field`` may name a (packed field, delta) for a decryption request: the keyholder
    adds delta to that field of its share on a payload row only, so the noise check passes (the
    share check does not: ``he.share_check``). Its check share is the honest one it committed to:
    a cheater that does not know the server's gain cannot fit it to the shift."""

    def train(message: Message, context: Context) -> Message:
        if train_down and train_down(message, context):
            raise RuntimeError("simulated hospital outage during training")
        return hospital.train(message, context)

    def decrypt(message: Message, context: Context) -> Message:
        if decrypt_down and decrypt_down(message, context):
            raise RuntimeError("simulated keyholder outage during decryption")
        reply = hospital.decrypt(message, context)
        if p.DECRYPTION_SHARE not in hospital.blobs_of(reply):
            return reply  # the second phase: its check share is opened as committed
        shift = shift_field(message, context) if shift_field else None
        if (tamper and tamper(context)) or shift:
            blobs = hospital.blobs_of(reply)
            ctx = hospital.load_keyholder(context).frame_context()  # shares of every kind
            if shift:
                blobs[p.DECRYPTION_SHARE] = shifted_share(ctx, blobs[p.DECRYPTION_SHARE], *shift)
            else:  # 1 on the first coefficient of the first noise prime
                share = DecryptionShare.from_bytes(ctx, blobs[p.DECRYPTION_SHARE], "this keyholder")
                polys, row = share.polys.copy(), ctx.num_payload
                polys[0, row, 0] = (int(polys[0, row, 0]) + 1) % int(ctx.data_moduli[row])
                blobs[p.DECRYPTION_SHARE] = DecryptionShare(
                    share.party, share.round_id, share.attempt, polys
                ).to_bytes(ctx)
            reply = hospital.reply(message, blobs, metrics=dict(reply.content[p.METRICS]))
        return reply

    return hospital_app({"train": train, "query.decrypt": decrypt})


def offline_at_set_up(offline: set[int], decrypted_by: Path | None = None) -> ClientApp:
    """The hospital ClientApp, except that the hospitals of partitions ``offline`` fail their
    hello (no valid hello: the set-up goes on without them, or stops); with ``decrypted_by``,
    each partition asked to decrypt appends its number to that file."""

    def hello(message: Message, context: Context) -> Message:
        if partition(context) in offline:
            raise RuntimeError("simulated hospital offline at set-up")
        return hospital.hello(message, context)

    def decrypt(message: Message, context: Context) -> Message:
        if decrypted_by is not None:
            with decrypted_by.open("a") as out:
                out.write(f"{partition(context)}\n")
        return hospital.decrypt(message, context)

    return hospital_app({"query.hello": hello, "query.decrypt": decrypt})

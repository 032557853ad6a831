"""One keyholder cannot bend the decrypted result (issue 19), against the hospitals' real
``query.decrypt`` handlers and the server's own ``strategies.reveal.Reveal``.

The cheater shifts one packed field of its decryption share on a payload row, so the noise bound
passes: a model value, the example count, the offset sum, a pooled evaluation sum, or a feature
moment of the statistics pass. It does so at every position of the committee, in three shapes of
four hospitals. Its check share is the honest one it committed to before the server revealed its
gains (``he.share_check``), so every decryption set it is in fails the check:

* 2-of-4 (decryption sets of 3): a set without it decrypts, in the same call, exactly what an
  honest committee decrypts, and it alone is named (elimination needs up to 4 attempts here: the
  first set holds the cheater and each next one can leave out only one of its members);
* 3-of-4 and 4-of-4 (every set needs all four): nothing is decoded, the round is skipped (its
  caller keeps the model) and the cheater is among those named.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.supercore.task_identity import TaskIdentity
from lying_coordinator import PARTIES, Coordinator, federation_of
from tampering import shifted_share

from client import app as hospital
from common import protocol as p
from common.records import blobs_of
from he import wire
from he.ciphertext import CiphertextSum, EncryptedUpdate
from he.context import HEContext
from he.encoding import UpdateEncoder
from he.params import preset
from he.share_check import polynomial_from_bytes
from models.pooled_metrics import EvaluationLayout
from server.app import initial_weights
from strategies.decryption_sets import DecryptionSets
from strategies.plausibility import AggregateChecks
from strategies.reachability import Reachability
from strategies.reveal import Decryption, Reveal, Skipped

FLOWER_RUN = 91
ATTEMPTS = 4  # 2-of-4 with sets of 3: each failed set leaves out one suspect, the 4th attempt the last
TAMPERINGS = ("model value", "example count", "offset sum", "pooled evaluation sum", "feature moment")


@pytest.fixture(scope="module", autouse=True)
def inside_a_server_app():
    with pytest.MonkeyPatch.context() as patch:
        for field in ("_run_id", "_node_id", "_task_id"):  # messages are built as inside a ServerApp
            patch.setattr(TaskIdentity, field, 1)
        yield


@pytest.fixture(scope="module", params=[2, 3, 4], ids=lambda t: f"{t}-of-4")
def federation(request, tmp_path_factory):
    """Set-up (its first statistics pass encrypted with the dealings), round 1 trained; the
    hospitals' states after it, to start every decryption from."""
    directory = tmp_path_factory.mktemp(f"integrity-{request.param}")
    settings, roster = federation_of(directory, threshold=request.param, max_attempts=ATTEMPTS)
    server = Coordinator(directory, settings, roster, FLOWER_RUN)
    server.set_up(relay=p.STATISTICS)
    replies = server.train(1, initial_weights(settings))
    return server, replies, {q: server.state(q) for q in PARTIES}


class Handlers:
    """The exchange of ``Reveal``: each message goes to the hospital's real handler; ``cheater``
    shifts ``field`` of every decryption share it sends by ``delta`` (its check share is honest)."""

    def __init__(self, server: Coordinator, cheater: int | None = None, field: int = 0, delta: int = 0):
        self.server, self.cheater, self.field, self.delta = server, cheater, field, delta

    def __call__(self, messages, what, refusals=None):
        for message in messages:
            party = message.metadata.dst_node_id
            context = self.server.contexts[party]
            reply = hospital.decrypt(message, context)
            blobs = blobs_of(reply)
            if party == self.cheater and p.DECRYPTION_SHARE in blobs:
                ctx = hospital.load_keyholder(context).frame_context()
                blobs[p.DECRYPTION_SHARE] = shifted_share(
                    ctx, blobs[p.DECRYPTION_SHARE], self.field, self.delta
                )
                reply = hospital.reply(message, blobs)
            yield reply


def decrypt(server: Coordinator, replies, states, kind: str, exchange: Handlers):
    """One ``Reveal.decrypt`` of round 1 (``train``) or the moments pass (``statistics``), from
    the hospitals' states after round 1; the result and the keyholders named. The first set
    leaves out a keyholder other than the cheater (where a set leaves one out), so the cheater is
    in it."""
    for q in PARTIES:
        server.contexts[q].state[hospital.STATE] = ConfigRecord(copy.deepcopy(states[q]))
    holder = hospital.load_keyholder(server.contexts[1])
    ctx = HEContext(preset("precise")).bound(holder.run_id)
    encoding = holder.frame_context(statistics=kind == "statistics")
    grid = SimpleNamespace(get_node_ids=lambda: list(PARTIES))
    reachability = Reachability(server.roster, {q: q for q in PARTIES}, set(), grid=grid)
    reachability.committee = tuple(server.roster.quorum.committee)
    sets = DecryptionSets(server.roster.quorum.min_decryption_set, seed=0)
    sets.silences[next(q for q in PARTIES if q != exchange.cheater)] = 1  # left out first
    settings = server.settings
    checks = AggregateChecks(EvaluationLayout(settings.num_classes, settings.eval_bins), dp=False)
    public_keys = {
        q: polynomial_from_bytes(ctx, wire.Kind.PUBLIC_KEY_SHARE, server.deals[q][p.PUBLIC_KEY_SHARE], "pk")
        for q in PARTIES
    }
    reveal = Reveal(server.roster, holder.run_id, ctx, reachability, sets, checks, exchange, public_keys)
    sent = server.statistics_replies if kind == "statistics" else replies
    first = EncryptedUpdate.from_bytes(encoding, sent[1][p.UPDATE], "hospital 1")
    total = CiphertextSum(encoding, first.layout)
    for q in PARTIES:
        total.add(q, sent[q][p.UPDATE])
    statements = {q: sent[q][p.CONTRIBUTION] for q in PARTIES}
    round_id = p.STATISTICS_PASSES["moments"] if kind == "statistics" else 1
    result = reveal.decrypt(kind, round_id, total.result, statements, encoding)
    return result, sorted(sets.named)


def tampered_field(tampering: str, server: Coordinator, replies) -> tuple[str, int, int]:
    """(kind of decryption, packed field, delta) of one tampering (``he.encoding``'s layout:
    the values, the count's chunks, the offset's chunks, then the exact sums)."""
    ctx = hospital.load_keyholder(server.contexts[1]).frame_context()
    layout = EncryptedUpdate.from_bytes(ctx, replies[1][p.UPDATE], "hospital 1").layout
    encoder = UpdateEncoder(ctx.params, ctx.num_payload)
    values, chunks = layout.num_values, encoder.count_chunks
    return {
        "model value": ("train", 0, 1),
        "example count": ("train", values, 1),
        "offset sum": ("train", values + chunks, 1 << 20),
        "pooled evaluation sum": ("train", values + 2 * chunks + encoder.sum_chunks, 3),
        "feature moment": ("statistics", 0, 1 << 30),
    }[tampering]


@pytest.fixture(scope="module")
def honest_results(federation):
    """What an honest committee decrypts, per kind of decryption (computed once per shape)."""
    server, replies, states = federation
    results = {
        kind: decrypt(server, replies, states, kind, Handlers(server)) for kind in ("train", "statistics")
    }
    assert all(isinstance(result, Decryption) and named == [] for result, named in results.values())
    return {kind: result for kind, (result, _) in results.items()}


@pytest.mark.parametrize("tampering", TAMPERINGS)
@pytest.mark.parametrize("position", range(len(PARTIES)))
def test_a_keyholder_that_shifts_a_field_is_caught_and_named_in_that_decryption(
    federation, honest_results, position, tampering
):
    server, replies, states = federation
    cheater = PARTIES[position]
    kind, field, delta = tampered_field(tampering, server, replies)
    honest = honest_results[kind]
    result, named = decrypt(server, replies, states, kind, Handlers(server, cheater, field, delta))
    if server.roster.threshold == 2:  # a set of three leaves the cheater out
        assert isinstance(result, Decryption)
        assert result.suspects == [server.roster.hospital(cheater).name]
        assert cheater not in result.keyholders
        assert all(np.array_equal(a, b) for a, b in zip(result.average, honest.average, strict=True))
        assert (result.total_examples, result.sums) == (honest.total_examples, honest.sums)
    else:  # every set needs the cheater: nothing decoded, the round skipped, the cheater named
        assert isinstance(result, Skipped)
        assert cheater in named

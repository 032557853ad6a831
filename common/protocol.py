"""Message types and record keys shared by the hospital (``client``) and the server.

Plain strings only (no Flower import), so neither side imports the other. One round is three
message phases: ``train``, then ``query.decrypt`` twice (the decryption shares with a commitment
to each check share, then the check shares once the server reveals its seed, ``he.share_check``).
Set-up is two key phases (hello, deal) plus the feature statistics (two ``query.statistics``
passes, each decrypted once) once per run: the first statistics message relays each keyholder's
dealings (``WITH_DEALINGS``) and its reply carries the complaints. A run without a statistics
pass relays them in a third key phase, ``query.dealings``.
"""

# Message types (Flower categories: train / evaluate / query.<action>)
HELLO = "query.hello"  # hospital: signed hello (CRS contribution + channel public key)
DEAL = "query.deal"  # hospital: verify the hellos, deal its per-run secret to the committee
DEALINGS = "query.dealings"  # keyholder: receive the sealed shares dealt to it (no statistics pass)
STATISTICS = "query.statistics"  # hospital: (encrypted) feature moments, two passes per run
TRAIN = "train"  # hospital: evaluate global model, train, return (encrypted) update
DECRYPT = "query.decrypt"  # keyholder: masked partial decryption (commit, then open its check share)
EVALUATE = "evaluate"  # hospital: evaluate the final global model

# Round ids of the two statistics passes (training rounds count from 1): the first sums each
# feature's mean and mean square, the second the spread around the global mean, scaled by the
# global root mean square so that features of every magnitude keep their precision.
STATISTICS_PASSES = {"moments": -2, "spread": 0}
MOMENTS_RESCALED_ROUND = -1  # the moments pass again, if the federation outgrew its weight scale
STATISTICS_ROUNDS = (-2, -1, 0)  # every statistics round id a run may use (the flooding counts 3)
# the round ids each pass may be encrypted and decrypted under (hospitals refuse any other pairing,
# so the coordinator cannot ask one pass twice under two ids, e.g. moments at -2 and at -1)
STATISTICS_PASS_ROUNDS = {"moments": (-2, MOMENTS_RESCALED_ROUND), "spread": (0,)}
STATISTICS_PASS = "statistics-pass"
FEATURE_SCALE = "feature-scale"

# Record keys
ARRAYS = "arrays"  # ArrayRecord: global model (server -> hospital) or plaintext delta
BLOBS = "blobs"  # ArrayRecord of raw-bytes arrays (ciphertexts, shares, keys)
CONFIG = "config"  # ConfigRecord
METRICS = "metrics"  # MetricRecord
EVALUATION = "evaluation"  # ArrayRecord: plaintext FedAvg's evaluation sums (models.pooled_metrics)

# Blob names inside BLOBS
UPDATE = "update"  # encrypted update (c0 only)
CONTRIBUTION = "contribution"  # signed contribution statement; "contribution-<party>" relayed
HELLO_BLOB = "hello"  # signed hello; "hello-<party>" relayed
DEALING = "dealing"  # signed dealing statement; "dealing-<dealer>" relayed
SEALED_SHARE = "sealed-share"  # "sealed-share-<keyholder>" in a deal reply, "-<dealer>" relayed
COMPLAINTS = "complaints"  # keyholder: JSON list of dealers whose share failed
DECRYPTION_SHARE = "decryption-share"
PUBLIC_KEY_SHARE = "public-key-share"  # deal reply: pk_i for the share checks (he.share_check)
CHECK_POLYNOMIAL = "check-polynomial"  # query.decrypt, first phase: the server's check polynomial
CHECK_COMMITMENT = "check-commitment"  # its reply: the hash of the keyholder's check share
CHECK_SEED = "check-seed"  # query.decrypt, second phase: the seed the check polynomial came from
CHECK_SHARE = "check-share"  # its reply: the check share, opened
SOFTWARE = "software"  # hello reply: JSON {"fedquorum": version, "flwr": version}, for operators


def per_party(name: str, party: int) -> str:
    """The blob name of ``name`` for one party (a relayed statement, a sealed share): both sides
    build it here; the hospital reads the party number back and refuses anything else."""
    return f"{name}-{party}"


def party_of_blob(blob_name: str, name: str) -> str | None:
    """The party part of a ``per_party(name, ...)`` blob name, as unchecked text; None for a blob
    of another name."""
    prefix = f"{name}-"
    return blob_name[len(prefix) :] if blob_name.startswith(prefix) else None


# Config keys
ROUND = "server-round"
KIND = "kind"  # "train" or "statistics": the domain of a ciphertext label
ATTEMPT = "attempt"
KEYHOLDERS = "keyholders"  # comma-separated party indices of the decryption set T
PARTY = "party"
PRESET = "he-preset"
ENCRYPTED = "encrypted"
NUM_EXAMPLES = "num-examples"
CLIP = "clip"  # the round's quantization range for encrypted updates
WEIGHT_SCALE = "weight-scale"  # the round's FedAvg weight scale S (he.encoding)
EVAL_BINS = "eval-bins"  # score bins of the evaluation histograms (models.pooled_metrics)
PER_HOSPITAL_PLAINTEXT = "per-hospital-plaintext"  # opt-in: per-hospital metrics also in the clear
FEATURE_MEAN = "feature-mean"
FEATURE_STD = "feature-std"
ROSTER_FINGERPRINT = "roster-fingerprint"  # the roster the server runs; hospitals compare
WITH_DEALINGS = "with-dealings"  # True: this statistics message also relays the keyholder's dealings
SIMULATED_FEDERATION = "simulated-federation"  # simulation only: directory of roster and keys

# How a hospital whose node restarted after the set-up begins its refusal (run state lives in the
# SuperNode's memory, so the restart lost this run's keys); the server reads it to name the
# hospital and leave it out of the rest of the run instead of waiting for it.
KEYS_LOST = "restarted, lost this run's keys"

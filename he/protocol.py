"""Message types and record keys shared by the hospital (``client``) and the server.

Plain strings only (no Flower import), so neither side imports the other. One round is two
message phases, ``train`` and ``query.decrypt``; set-up is three key phases plus the feature
statistics (two ``query.statistics`` passes, each decrypted once) once per run.
"""

# Message types (Flower categories: train / evaluate / query.<action>)
HELLO = "query.hello"  # hospital: CRS contribution + channel public key
KEYGEN = "query.keygen"  # hospital: public key share + sealed Shamir shares for the others
KEYSHARES = "query.keyshares"  # hospital: receive collective pk and its Shamir shares
STATISTICS = "query.statistics"  # hospital: (encrypted) feature moments, two passes per run
TRAIN = "train"  # hospital: evaluate global model, train, return (encrypted) update
DECRYPT = "query.decrypt"  # hospital: partial decryption of the round's aggregate
EVALUATE = "evaluate"  # hospital: evaluate the final global model

# Round ids of the two statistics passes (training rounds count from 1): the first sums each
# feature's mean and mean square, the second the spread around the global mean, scaled by the
# global root mean square so that features of every magnitude keep their precision.
STATISTICS_PASSES = {"moments": -1, "spread": 0}
STATISTICS_PASS = "statistics-pass"
FEATURE_SCALE = "feature-scale"

# Record keys
ARRAYS = "arrays"  # ArrayRecord: global model (server -> hospital) or plaintext delta
BLOBS = "blobs"  # ArrayRecord of raw-bytes arrays (ciphertexts, shares, keys)
CONFIG = "config"  # ConfigRecord
METRICS = "metrics"  # MetricRecord

# Blob names inside BLOBS
UPDATE = "update"
CONTRIBUTION = "contribution"
CHANNEL_KEY = "channel-public-key"
KEY_SHARE = "public-key-share"
PUBLIC_KEY = "collective-public-key"
AGGREGATE_C1 = "aggregate-c1"
DECRYPTION_SHARE = "decryption-share"
SEALED_SHARE_PREFIX = "sealed-share-"  # + party index of the recipient (keygen) or sender

# Config keys
ROUND = "server-round"
PARTY = "party"
NUM_PARTIES = "num-parties"
THRESHOLD = "threshold"
PRESET = "he-preset"
ENCRYPTED = "encrypted"
CONTRIBUTORS = "contributors"  # comma-separated party indices
MIN_CONTRIBUTORS = "min-train-nodes"
NUM_EXAMPLES = "num-examples"
CLIP = "clip"  # the round's quantization range for encrypted updates
FEATURE_MEAN = "feature-mean"
FEATURE_STD = "feature-std"

"""Load one hospital's data: a partition of a public benchmark, its own CSV table, or MedMNIST.

Every loader returns a :class:`HospitalData` with float32 features and int64 labels in
``0..num_classes-1``. Loaders never standardise: global statistics are computed federatedly
from :func:`feature_moments` (whose sums are encrypted and added by the server, so they never
leave a site in the clear) and applied with :func:`standardize`.

One module per source (``breast_cancer``, ``csv_table`` with its data check ``quality``,
``npz``), the shared splits (``split``) and standardisation (``moments``); the package is the
one import path the rest of the code uses (``client.error_boundary`` recognises
:class:`HospitalDataError` by it).
"""

from client.data.breast_cancer import load_breast_cancer_partition
from client.data.csv_table import load_csv, require_named_classes
from client.data.hospital import HospitalData, HospitalDataError, MissingHospitalData
from client.data.moments import feature_moments, mean_std_from_moments, standardize
from client.data.npz import load_npz
from client.data.quality import CsvQuality, csv_quality, zero_looks_missing
from client.data.split import PARTITIONINGS, partition_indices

__all__ = [
    "PARTITIONINGS",
    "CsvQuality",
    "HospitalData",
    "HospitalDataError",
    "MissingHospitalData",
    "csv_quality",
    "feature_moments",
    "load_breast_cancer_partition",
    "load_csv",
    "load_npz",
    "mean_std_from_moments",
    "partition_indices",
    "require_named_classes",
    "standardize",
    "zero_looks_missing",
]

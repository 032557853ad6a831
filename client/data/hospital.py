"""What every loader returns: one hospital's checked, read-only train/test split, and the errors a
hospital's own file raises (kept apart from the loaders so each source module shares them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from client.targets import TASKS_WITH_VALUES

if TYPE_CHECKING:
    from torch.utils.data import DataLoader


class HospitalDataError(ValueError):
    """This hospital's file does not fit the run's dataset settings (``classes``, target column,
    features). The message names local paths and label values, so it stays in the hospital's log:
    the coordinator gets a generic reason (``client.error_boundary``)."""


class MissingHospitalData(HospitalDataError, FileNotFoundError):
    """The hospital's data file does not exist."""


@dataclass(frozen=True, eq=False)
class HospitalData:
    """One hospital's train/test split.

    Arrays are converted to float32 features and int64 labels, checked for consistency and
    made read-only, so a ``HospitalData`` can be shared without defensive copies.

    Attributes
    ----------
    x_train, y_train, x_test, y_test
        Features ``(N, *feature_shape)`` and labels ``(N,)`` in ``0..num_classes-1``.
    num_features
        Number of features for tabular data, ``(C, H, W)`` for images.
    num_classes
        Number of classes of the federation (a site may hold fewer); 1 for regression and survival.
    class_names
        Original label value of each class index (e.g. ``("malignant", "benign")``).
    task
        ``classification`` (labels as above), ``regression`` (float targets ``(N,)``) or
        ``survival`` (float ``(N, 2)``: time, event).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_features: int | tuple[int, ...]
    num_classes: int
    class_names: tuple[object, ...] = ()
    task: str = "classification"

    def __post_init__(self) -> None:
        classification = self.task == "classification"
        if self.num_classes < 2 if classification else self.num_classes != 1:
            raise ValueError(f"num_classes must be >= 2 (1 for {TASKS_WITH_VALUES}), got {self.num_classes}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} entries, expected num_classes={self.num_classes}"
            )
        for split in ("train", "test"):
            x = np.array(getattr(self, f"x_{split}"), dtype=np.float32)
            y = np.array(getattr(self, f"y_{split}"), dtype=np.int64 if classification else np.float64)
            if x.shape[1:] != self.feature_shape:
                raise ValueError(
                    f"x_{split} has per-example shape {x.shape[1:]}, expected {self.feature_shape}"
                )
            target_shape = (len(x), 2) if self.task == "survival" else (len(x),)
            if y.shape != target_shape:
                raise ValueError(f"y_{split} has shape {y.shape}, expected {target_shape}")
            if classification and len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(
                    f"y_{split} has labels outside 0..{self.num_classes - 1}: min {y.min()}, max {y.max()}"
                )
            x.flags.writeable = False
            y.flags.writeable = False
            object.__setattr__(self, f"x_{split}", x)
            object.__setattr__(self, f"y_{split}", y)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one example: ``(num_features,)`` or ``(C, H, W)``."""
        if isinstance(self.num_features, int):
            return (self.num_features,)
        return tuple(self.num_features)

    def loaders(self, batch_size: int, seed: int) -> tuple[DataLoader, DataLoader]:
        """Return ``(train_loader, test_loader)``.

        The train loader shuffles with its own generator seeded by ``seed`` (reproducible and
        independent of torch's global RNG); the test loader keeps the stored order. Torch is
        imported here, not with the module: a hospital's set-up and statistics messages load
        data in a fresh process each and never train (~2 s saved per message).
        """
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        train = TensorDataset(torch.tensor(self.x_train), torch.tensor(self.y_train))
        test = TensorDataset(torch.tensor(self.x_test), torch.tensor(self.y_test))
        generator = torch.Generator().manual_seed(seed)
        return (
            DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator),
            DataLoader(test, batch_size=batch_size, shuffle=False),
        )

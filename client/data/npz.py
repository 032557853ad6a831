"""MedMNIST-format images from a hospital's ``.npz`` archive (loaded without pickle), scaled to
[0, 1] and channels first."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from client.data.hospital import HospitalData, HospitalDataError, MissingHospitalData

NPZ_KEYS: tuple[str, str, str, str] = ("train_images", "train_labels", "test_images", "test_labels")


def _images(array: np.ndarray, path: Path, key: str) -> np.ndarray:
    """``(N,H,W)`` or ``(N,H,W,C)`` uint8 -> ``(N,C,H,W)`` float32 in [0, 1]."""
    if array.dtype != np.uint8:
        raise HospitalDataError(f"{path}: {key!r} has dtype {array.dtype}, expected uint8 pixels")
    if array.ndim == 3:
        array = array[:, None, :, :]
    elif array.ndim == 4 and array.shape[-1] in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    else:
        raise HospitalDataError(
            f"{path}: {key!r} has shape {array.shape}, expected (N, H, W) or (N, H, W, C) with C = 1 or 3"
        )
    return array.astype(np.float32) / np.float32(255.0)


def _labels(array: np.ndarray, num_images: int, path: Path, key: str) -> np.ndarray:
    """``(N,)`` or ``(N,1)`` non-negative integers -> ``(N,)`` int64."""
    shape = array.shape
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.shape != (num_images,):
        raise HospitalDataError(
            f"{path}: {key!r} has shape {shape}, expected ({num_images},) or "
            f"({num_images}, 1) to match its images (multi-label data is not supported)"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise HospitalDataError(f"{path}: {key!r} has dtype {array.dtype}, expected integer labels")
    if num_images and array.min() < 0:
        raise HospitalDataError(f"{path}: {key!r} has negative label {array.min()}")
    return array.astype(np.int64)


def load_npz(
    path: str | PathLike[str],
    split_keys: Sequence[str] = NPZ_KEYS,
    num_classes: int | None = None,
) -> HospitalData:
    """Load MedMNIST-style images from an ``.npz`` file.

    Parameters
    ----------
    path
        ``.npz`` archive (loaded without pickle).
    split_keys
        Keys of train images, train labels, test images and test labels. Images are uint8
        ``(N, H, W)`` (grey) or ``(N, H, W, C)``; labels are ``(N, 1)`` or ``(N,)`` ints.
    num_classes
        Classes of the federation; default ``max(label) + 1`` over both splits, which is
        too small if this site lacks the highest classes, so federations should pass it.

    Returns
    -------
    HospitalData
        Images scaled to [0, 1], channels first ``(N, C, H, W)``; ``num_features = (C, H, W)``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingHospitalData(f"image archive {path} does not exist")
    keys = tuple(split_keys)
    if len(keys) != 4:
        raise ValueError(f"split_keys must name 4 arrays {NPZ_KEYS}, got {keys!r}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise HospitalDataError(f"{path} is not a readable .npz archive: {err}") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise HospitalDataError(f"{path} holds a single array, expected an .npz archive with {keys}")
    with archive:
        missing = [k for k in keys if k not in archive.files]
        if missing:
            raise HospitalDataError(f"{path}: missing key(s) {missing}; keys present: {archive.files}")
        train_key, train_label_key, test_key, test_label_key = keys
        x_train = _images(archive[train_key], path, train_key)
        x_test = _images(archive[test_key], path, test_key)
        y_train = _labels(archive[train_label_key], len(x_train), path, train_label_key)
        y_test = _labels(archive[test_label_key], len(x_test), path, test_label_key)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise HospitalDataError(
            f"{path}: {train_key!r} images are {x_train.shape[1:]} (C, H, W) but {test_key!r} "
            f"images are {x_test.shape[1:]}"
        )
    for key, images in ((train_key, x_train), (test_key, x_test)):
        if len(images) == 0:
            raise HospitalDataError(f"{path}: {key!r} holds no images")
    largest = int(max(y_train.max(), y_test.max()))
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        key = train_label_key if y_train.max() == largest else test_label_key
        raise HospitalDataError(
            f"{path}: {key!r} has label {largest}, expected labels below num_classes={num_classes}"
        )
    return HospitalData(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_features=tuple(int(d) for d in x_train.shape[1:]),
        num_classes=num_classes,
        class_names=tuple(range(num_classes)),
    )

"""Build a model from its configuration: a built-in preset name, or an import path in the app.

A run names its model in one string, which travels in the run config to every hospital:

* a **preset**, one of ``MODEL_NAMES`` (``logreg``, ``mlp``, ``cnn``, ``resnet18``);
* an **import path** ``package.module.Class`` (Hydra's ``_target_``) of a ``torch.nn.Module``
  subclass shipped inside the app bundle (e.g. ``examples.tabular_net.TabularNet``), with its
  arguments as a JSON object. Only classes whose top-level package sits in the app's own root
  are accepted: the hospital runs the bundle it approved, so a run config can name code from
  that bundle only, never e.g. ``os.system`` or a class of an installed library.

The run passes what it knows from the data by keyword, to those of ``input_shape`` (one
example's shape), ``num_features`` (tabular), ``in_channels`` and ``image_size`` (square
images) and ``num_outputs`` (output logits) that the class's ``__init__`` names; its own
arguments may not repeat them. Every model is checked for the encoder (``models.compat``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import re
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from models.cnn import SmallCNN
from models.compat import check_encodable
from models.tabular import MLP, LogisticRegression

MODEL_NAMES: tuple[str, ...] = ("logreg", "mlp", "cnn", "resnet18")
IMAGE_MODELS: tuple[str, ...] = ("cnn", "resnet18")
PRESET_CLASSES = {  # preset -> the import path of what it builds (MLflow's model_class)
    "logreg": "models.tabular.LogisticRegression",
    "mlp": "models.tabular.MLP",
    "cnn": "models.cnn.SmallCNN",
    "resnet18": "monai.networks.nets.ResNet",
}
RUN_ARGUMENTS = ("input_shape", "num_features", "in_channels", "image_size", "num_outputs")
APP_ROOT = Path(__file__).resolve().parents[1]  # the app bundle's root: models/ sits in it
_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def is_import_path(name: str) -> bool:
    """Whether ``name`` has the form of an import path (``package.Class``), not a preset name."""
    return bool(_IMPORT_PATH.fullmatch(name))


def model_kwargs(name: str, hidden: int, model_args: str) -> dict[str, Any]:
    """The keyword arguments of the model ``name``, from the run's plain settings.

    ``hidden`` is the width of the ``mlp`` preset's hidden layer; ``model_args`` is the JSON
    object of an import-path model's own arguments (empty: none).
    """
    if not is_import_path(name):
        if model_args:
            raise ValueError(f"model-args is for import-path models; preset {name!r} takes none")
        return {"hidden": (hidden,)} if name == "mlp" else {}
    try:
        kwargs = json.loads(model_args) if model_args else {}
    except json.JSONDecodeError as err:
        raise ValueError(
            f"model-args of {name!r} must be a JSON object, got {model_args[:80]!r}: {err}"
        ) from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"model-args of {name!r} must be a JSON object, got {model_args[:80]!r}")
    return kwargs


def resolve_model_class(target: str) -> type[nn.Module]:
    """The ``nn.Module`` subclass named by the import path ``target``, inside the app bundle.

    The top-level package is located without running it; only a package whose directory sits
    in ``APP_ROOT`` is imported.

    Raises
    ------
    ValueError
        ``target`` is not an import path, names no module or attribute, or lies outside the app.
    TypeError
        ``target`` names something other than a ``torch.nn.Module`` subclass.
    """
    if not is_import_path(target):
        raise ValueError(
            f"model {target!r} is neither a preset ({', '.join(MODEL_NAMES)}) nor an import path "
            "such as 'examples.tabular_net.TabularNet'"
        )
    if APP_ROOT in _library_directories():
        raise ValueError(
            f"model {target!r}: this app is installed among the Python libraries, where its packages "
            "cannot be told from any other; run it from its own directory (a Flower app bundle or a "
            "checkout) to name models by import path"
        )
    top = target.split(".", 1)[0]
    if not any(directory == APP_ROOT for directory in _parent_directories(top)):
        raise ValueError(
            f"model {target!r} is outside the app bundle: {top!r} is not a package in the app's "
            f"root; ship the model's package inside the app (like examples/) and name it there"
        )
    module_name, _, attribute = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:  # its message may hold a local path: a hospital's reply must not
        missing = f"no module {err.name!r}" if isinstance(err, ModuleNotFoundError) else type(err).__name__
        raise ValueError(f"model {target!r}: cannot import {module_name!r} ({missing})") from None
    found = getattr(module, attribute, None)
    if found is None:
        raise ValueError(f"model {target!r}: module {module_name!r} has no attribute {attribute!r}")
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise TypeError(f"model {target!r} must name a torch.nn.Module subclass, got {type(found).__name__}")
    return found


def _library_directories() -> set[Path]:
    """Where the standard library and installed distributions live: an app installed there shares
    its root with every library, so "a package in the app's root" would admit them all."""
    paths = sysconfig.get_paths()
    return {
        Path(paths[key]).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths
    }


def _parent_directories(top: str) -> list[Path]:
    """The directories the top-level module ``top`` is found in, located without importing it;
    none for a built-in or frozen module (``sys``, ``os``), which has no file of its own."""
    spec = importlib.util.find_spec(top)
    if spec is None:
        return []
    if spec.submodule_search_locations:  # a package (or a namespace package)
        return [Path(location).resolve().parent for location in spec.submodule_search_locations]
    if spec.has_location and spec.origin and Path(spec.origin).is_absolute():
        return [Path(spec.origin).resolve().parent]  # a single-file module
    return []


def model_class_path(name: str) -> str:
    """The import path of the class the model ``name`` is (MLflow's ``model_class``)."""
    return PRESET_CLASSES.get(name, name)


def _tabular_features(name: str, num_features_or_shape: int | Sequence[int]) -> int:
    if isinstance(num_features_or_shape, int) and not isinstance(num_features_or_shape, bool):
        return num_features_or_shape
    shape = tuple(num_features_or_shape)
    if len(shape) == 1:
        return int(shape[0])
    raise ValueError(f"model {name!r} needs a number of features (int), got shape {num_features_or_shape!r}")


def _image_shape(name: str, num_features_or_shape: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(num_features_or_shape, int):
        raise ValueError(f"model {name!r} needs an image shape (C, H, W), got {num_features_or_shape!r}")
    shape = tuple(int(d) for d in num_features_or_shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"model {name!r} needs a square image shape (C, H, H), got {shape!r}")
    return shape[0], shape[1]


def _run_arguments(num_features_or_shape: int | Sequence[int], num_outputs: int) -> dict[str, Any]:
    """What the run knows from the data, by the names of ``RUN_ARGUMENTS``."""
    if isinstance(num_features_or_shape, int):
        shape: tuple[int, ...] = (num_features_or_shape,)
    else:
        shape = tuple(int(d) for d in num_features_or_shape)
    known: dict[str, Any] = {"input_shape": shape, "num_outputs": num_outputs}
    if len(shape) == 1:
        known["num_features"] = shape[0]
    elif len(shape) == 3 and shape[1] == shape[2]:
        known |= {"in_channels": shape[0], "image_size": shape[1]}
    return known


def _build_import_path(
    target: str, num_features_or_shape: int | Sequence[int], num_outputs: int, kwargs: dict[str, Any]
) -> nn.Module:
    model_class = resolve_model_class(target)
    clash = sorted(set(kwargs) & set(RUN_ARGUMENTS))
    if clash:
        raise ValueError(f"model {target!r}: arguments {clash} are set by the run from the data; remove them")
    accepted = inspect.signature(model_class).parameters
    known = _run_arguments(num_features_or_shape, num_outputs)
    passed = {key: value for key, value in known.items() if key in accepted}
    try:
        return model_class(**kwargs, **passed)
    except TypeError as err:
        raise ValueError(
            f"model {target!r} cannot be built with arguments {sorted(kwargs) + sorted(passed)}: {err}"
        ) from None


def _build_preset(
    name: str, num_features_or_shape: int | Sequence[int], num_outputs: int, kwargs: dict[str, Any]
) -> nn.Module:
    if name == "logreg":
        return LogisticRegression(_tabular_features(name, num_features_or_shape), num_outputs, **kwargs)
    if name == "mlp":
        features = _tabular_features(name, num_features_or_shape)
        return MLP(features, num_classes=num_outputs, **kwargs)
    channels, size = _image_shape(name, num_features_or_shape)
    if name == "cnn":
        return SmallCNN(channels, num_outputs, image_size=size, **kwargs)
    from models.resnet import resnet18  # MONAI is imported only by runs that use it

    return resnet18(channels, num_outputs, **kwargs)


def build_model(
    name: str, num_features_or_shape: int | Sequence[int], num_outputs: int, /, **kwargs: Any
) -> nn.Module:
    """Instantiate the model ``name`` and check that the encoder can carry it.

    Parameters
    ----------
    name : str
        A preset of ``MODEL_NAMES``, or the import path of an ``nn.Module`` subclass in the app.
    num_features_or_shape : int | Sequence[int]
        ``HospitalData.num_features``: an int for tabular models, ``(C, H, W)`` for images.
    num_outputs : int
        Number of output logits (classes).
    **kwargs
        Passed to the model class (e.g. ``hidden``/``dropout`` for ``"mlp"``); the three
        parameters above are positional-only, so a model argument that repeats a run argument
        (``num_outputs``) reaches the check that names it.

    Raises
    ------
    ValueError
        An unknown name, a target outside the app, arguments the class refuses, or a model
        with entries the encoder cannot average (``models.compat.IncompatibleModelError``).
    TypeError
        A target that is not a ``torch.nn.Module`` subclass.
    """
    if name in MODEL_NAMES:
        model = _build_preset(name, num_features_or_shape, num_outputs, kwargs)
    elif is_import_path(name):
        model = _build_import_path(name, num_features_or_shape, num_outputs, kwargs)
    else:
        raise ValueError(
            f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)} or the import path "
            "of a torch.nn.Module in the app (e.g. examples.tabular_net.TabularNet)"
        )
    check_encodable(model, name)
    return model

"""Models by import path, the encoder-compatibility rule, pretrained weights and the ResNet-18 preset."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from torch.utils.data import DataLoader, TensorDataset

from examples.tabular_net import TabularNet
from models.compat import IncompatibleModelError, check_encodable, model_values
from models.pretrained import load_pretrained
from models.registry import build_model, model_class_path, model_kwargs
from models.training import evaluate, get_weights, set_weights, train

TABULAR_NET = "examples.tabular_net.TabularNet"
BYO = "tests.models.byo_models"


def cancer_loader(shuffle_seed: int | None) -> DataLoader:
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    data = TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    if shuffle_seed is None:
        return DataLoader(data, batch_size=64)
    return DataLoader(
        data, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(shuffle_seed)
    )


def test_a_model_by_import_path_gets_the_run_arguments_it_names_and_trains() -> None:
    torch.manual_seed(0)
    model = build_model(TABULAR_NET, 30, 2, width=16, blocks=1)
    assert isinstance(model, TabularNet) and model.project.in_features == 30
    assert model.head[-1].out_features == 2 and model.project.out_features == 16
    before = evaluate(model, cancer_loader(None))
    train(model, cancer_loader(0), epochs=3, lr=0.05, seed=0)
    after = evaluate(model, cancer_loader(None))
    assert after["loss"] < before["loss"] and after["accuracy"] > 0.95


def test_image_models_by_import_path_get_shape_channels_size_and_outputs() -> None:
    model = build_model(f"{BYO}.SeesEverything", (3, 8, 8), 4, scale=2.0)
    assert model.given == {
        "input_shape": (3, 8, 8),
        "in_channels": 3,
        "image_size": 8,
        "num_outputs": 4,
        "scale": 2.0,
    }


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        ("os.system", ValueError, "'os' is not a package in the app's root"),
        ("torch.nn.Linear", ValueError, "'torch' is not a package in the app's root"),
        ("models.training.train", TypeError, "must name a torch.nn.Module subclass, got function"),
        (f"{BYO}.NOT_A_MODEL", TypeError, "must name a torch.nn.Module subclass, got int"),
        (f"{BYO}.Missing", ValueError, "has no attribute 'Missing'"),
        ("examples.missing.Net", ValueError, "cannot import 'examples.missing'"),
        ("resnet152", ValueError, "unknown model 'resnet152'"),
    ],
)
def test_invalid_targets_are_refused_with_what_was_expected(target, error, message) -> None:
    with pytest.raises(error, match=message):
        build_model(target, 30, 2)


def test_an_app_installed_among_the_libraries_refuses_import_paths(monkeypatch) -> None:
    """Installed into site-packages, the app's root is every library's: torch would pass as 'in the app'."""
    import sysconfig

    import models.registry

    libraries = Path(sysconfig.get_paths()["purelib"]).resolve()
    monkeypatch.setattr(models.registry, "APP_ROOT", libraries)
    with pytest.raises(ValueError, match="installed among the Python libraries") as err:
        build_model("torch.nn.Linear", 30, 2)
    assert str(libraries) not in str(err.value)  # a hospital's reply names no local path
    assert isinstance(build_model("mlp", 30, 2), torch.nn.Module)  # presets need no import path


def test_invalid_arguments_name_the_model_and_what_to_change() -> None:
    with pytest.raises(ValueError, match=r"arguments \['num_outputs'\] are set by the run"):
        build_model(TABULAR_NET, 30, 2, num_outputs=3)
    with pytest.raises(ValueError, match=r"'examples.tabular_net.TabularNet' cannot be built with arguments"):
        build_model(TABULAR_NET, 30, 2, depth=3)
    with pytest.raises(ValueError, match=r"model-args of 'x.Net' must be a JSON object"):
        model_kwargs("x.Net", 32, "[1, 2]")
    with pytest.raises(ValueError, match="model-args is for import-path models; preset 'cnn' takes none"):
        model_kwargs("cnn", 32, '{"width": 2}')
    assert model_kwargs(TABULAR_NET, 32, '{"width": 8}') == {"width": 8}
    assert model_kwargs("mlp", 16, "") == {"hidden": (16,)}


def test_a_model_with_an_integer_buffer_is_refused_naming_the_entry_and_the_fix() -> None:
    with pytest.raises(
        IncompatibleModelError, match=r"non-float entries norm.num_batches_tracked \(torch.int64\)"
    ):
        build_model(f"{BYO}.WithBatchNorm", 30, 2)
    with pytest.raises(
        IncompatibleModelError, match="GroupNorm/LayerNorm, or BatchNorm with track_running_stats"
    ):
        check_encodable(torch.nn.BatchNorm2d(4), "bn")
    check_encodable(torch.nn.BatchNorm2d(4, track_running_stats=False), "bn")  # no counters: accepted
    with pytest.raises(IncompatibleModelError, match="has no parameters or buffers"):
        check_encodable(torch.nn.ReLU(), "relu")


def test_resnet18_preset_is_monai_with_group_norm_and_fits_the_encoder() -> None:
    model = build_model("resnet18", (3, 28, 28), 9)
    assert model_values(model) == sum(p.numel() for p in model.parameters()) == 11_182_025
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert (
        type(model).__module__.startswith("monai.")
        and model_class_path("resnet18") == "monai.networks.nets.ResNet"
    )
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 9)
    weights = get_weights(model)
    set_weights(build_model("resnet18", (3, 28, 28), 9), weights)  # round-trips as float32 arrays


def test_pretrained_weights_load_exactly(tmp_path) -> None:
    torch.manual_seed(1)
    source = build_model(TABULAR_NET, 30, 2, width=8)
    path = tmp_path / "pretrained.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(2)
    target = build_model(TABULAR_NET, 30, 2, width=8)
    load_pretrained(target, path)
    for a, b in zip(get_weights(target), get_weights(source), strict=True):
        np.testing.assert_array_equal(a, b)


def test_invalid_weights_files_are_refused_naming_the_file_and_the_entry(tmp_path) -> None:
    model = build_model(TABULAR_NET, 30, 2, width=8)
    with pytest.raises(FileNotFoundError, match=r"model.weights=.*missing.pt: no such file"):
        load_pretrained(model, tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"not a state_dict torch.load"):
        load_pretrained(model, garbage)
    not_a_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], not_a_dict)
    with pytest.raises(ValueError, match=r"expected a state_dict .* got list"):
        load_pretrained(model, not_a_dict)
    wider = tmp_path / "wider.pt"
    torch.save(build_model(TABULAR_NET, 30, 2, width=16).state_dict(), wider)
    with pytest.raises(
        ValueError, match=r"entry 'project.weight' has shape \(16, 30\), the model expects \(8, 30\)"
    ):
        load_pretrained(model, wider)
    other = tmp_path / "other.pt"
    torch.save(build_model("mlp", 30, 2).state_dict(), other)
    with pytest.raises(
        ValueError, match=r"entries missing project.weight, project.bias.*; not in the model net"
    ):
        load_pretrained(model, other)


def test_an_object_pickled_into_a_weights_file_is_not_run(tmp_path) -> None:
    class Payload:
        def __reduce__(self):
            return (math.factorial, (5,))

    path = tmp_path / "evil.pt"
    torch.save({"project.weight": Payload()}, path)
    with pytest.raises(ValueError, match=r"not a state_dict torch.load\(weights_only=True\) can read"):
        load_pretrained(build_model(TABULAR_NET, 30, 2), path)

"""Behaviour of the models package: shapes, weight exchange, seeded training, evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, TensorDataset

from models.cnn import SmallCNN
from models.registry import MODEL_NAMES, build_model
from models.tabular import MLP, LogisticRegression
from models.training import evaluate, get_weights, set_weights, train


@pytest.fixture(scope="module")
def cancer() -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised breast cancer features (569 x 30) and labels."""
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def make_loader(x: torch.Tensor, y: torch.Tensor, seed: int = 0, batch: int = 32) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, generator=generator)


def fixed_loader(x: torch.Tensor, y: torch.Tensor, batch: int = 64) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


# ----------------------------------------------------------------------------- architectures


@pytest.mark.parametrize(
    ("model", "batch"),
    [
        (LogisticRegression(30), torch.zeros(4, 30)),
        (LogisticRegression(5, num_classes=4), torch.zeros(4, 5)),
        (MLP(30), torch.zeros(4, 30)),
        (MLP(30, hidden=(16, 8), num_classes=3, dropout=0.2), torch.zeros(4, 30)),
        (MLP(30, hidden=()), torch.zeros(4, 30)),
        (SmallCNN(1, 9), torch.zeros(4, 1, 28, 28)),
        (SmallCNN(3, 7), torch.zeros(4, 3, 28, 28)),
        (SmallCNN(1, 2, image_size=32), torch.zeros(4, 1, 32, 32)),
    ],
)
def test_models_output_logits_per_class(model: torch.nn.Module, batch: torch.Tensor) -> None:
    out = model(batch)
    num_classes = list(model.parameters())[-1].shape[0]
    assert out.shape == (4, num_classes)


def test_mlp_hidden_layers_have_requested_widths() -> None:
    model = MLP(10, hidden=(16, 8), num_classes=3)
    linear_shapes = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear_shapes == [(16, 10), (8, 16), (3, 8)]


def test_models_have_only_float_state() -> None:
    """Every state entry must be encodable as floats for homomorphic aggregation."""
    for model in (LogisticRegression(3), MLP(3, dropout=0.5), SmallCNN(3, 4)):
        assert all(t.dtype == torch.float32 for t in model.state_dict().values())


@pytest.mark.parametrize(
    "make",
    [
        lambda: LogisticRegression(0),
        lambda: LogisticRegression(3, num_classes=0),
        lambda: MLP(3, hidden=(0,)),
        lambda: MLP(3, dropout=1.0),
        lambda: SmallCNN(0, 2),
        lambda: SmallCNN(1, 2, image_size=2),
    ],
)
def test_invalid_sizes_are_rejected(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_build_model_by_name() -> None:
    assert MODEL_NAMES == ("logreg", "mlp", "cnn", "resnet18")
    assert isinstance(build_model("logreg", 30, 2), LogisticRegression)
    mlp = build_model("mlp", 30, 3, hidden=(8,), dropout=0.1)
    assert isinstance(mlp, MLP)
    assert mlp(torch.zeros(2, 30)).shape == (2, 3)
    cnn = build_model("cnn", (3, 28, 28), 5)
    assert isinstance(cnn, SmallCNN)
    assert cnn(torch.zeros(2, 3, 28, 28)).shape == (2, 5)
    assert isinstance(build_model("logreg", (30,), 2), LogisticRegression)


def test_build_model_unknown_name_lists_allowed_names() -> None:
    with pytest.raises(ValueError, match="'resnet'") as err:
        build_model("resnet", 30, 2)
    for name in MODEL_NAMES:
        assert name in str(err.value)


def test_build_model_rejects_mismatched_input_kind() -> None:
    with pytest.raises(ValueError, match="cnn"):
        build_model("cnn", 30, 2)
    with pytest.raises(ValueError, match="square"):
        build_model("cnn", (1, 28, 32), 2)
    with pytest.raises(ValueError, match="mlp"):
        build_model("mlp", (1, 28, 28), 2)
    with pytest.raises(TypeError):
        build_model("logreg", 30, 2, hidden=(8,))


# ----------------------------------------------------------------------------- weights


def test_get_weights_returns_float32_copies_in_state_dict_order() -> None:
    model = MLP(6, hidden=(4,), num_classes=3)
    weights = get_weights(model)
    state = model.state_dict()
    assert [w.shape for w in weights] == [tuple(t.shape) for t in state.values()]
    assert all(w.dtype == np.float32 for w in weights)
    for w, t in zip(weights, state.values(), strict=True):
        np.testing.assert_array_equal(w, t.numpy())
    weights[0][...] = 123.0  # a copy: editing it must not touch the model
    assert not torch.any(model.state_dict()[next(iter(state))] == 123.0)


def test_set_weights_round_trip_reproduces_outputs() -> None:
    torch.manual_seed(1)
    source, target = SmallCNN(1, 3), SmallCNN(1, 3)
    batch = torch.rand(5, 1, 28, 28)
    assert not torch.allclose(source(batch), target(batch))
    set_weights(target, get_weights(source))
    torch.testing.assert_close(source(batch), target(batch))
    for a, b in zip(get_weights(source), get_weights(target), strict=True):
        np.testing.assert_array_equal(a, b)


def test_set_weights_accepts_float64_arrays() -> None:
    model = LogisticRegression(3)
    weights = [w.astype(np.float64) + 1.0 for w in get_weights(model)]
    set_weights(model, weights)
    np.testing.assert_allclose(get_weights(model)[1], weights[1])


def test_set_weights_count_mismatch_names_parameters() -> None:
    model = LogisticRegression(3)
    with pytest.raises(ValueError, match=r"2 weight tensors \(linear.weight, linear.bias\), got 1"):
        set_weights(model, get_weights(model)[:1])


def test_set_weights_shape_mismatch_names_parameter_and_leaves_model_unchanged() -> None:
    model = LogisticRegression(3)
    before = get_weights(model)
    bad = [np.zeros((2, 3), np.float32), np.zeros(3, np.float32)]
    with pytest.raises(ValueError, match=r"'linear.bias' expects shape \(2,\), got \(3,\)"):
        set_weights(model, bad)
    for a, b in zip(before, get_weights(model), strict=True):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- training


def test_training_reduces_loss_on_breast_cancer(cancer) -> None:
    x, y = cancer
    model = LogisticRegression(30)
    before = evaluate(model, fixed_loader(x, y))
    last_epoch_loss = train(model, make_loader(x, y), epochs=5, lr=0.1, seed=0)
    after = evaluate(model, fixed_loader(x, y))
    assert after["loss"] < before["loss"] / 2
    assert last_epoch_loss < before["loss"] / 2
    assert after["accuracy"] > 0.95
    assert after["auc"] > 0.98


@pytest.mark.parametrize(("optimizer", "momentum"), [("sgd", 0.9), ("adam", 0.0)])
def test_optimizers_train(cancer, optimizer: str, momentum: float) -> None:
    x, y = cancer
    model = MLP(30, hidden=(16,))
    before = evaluate(model, fixed_loader(x, y))["loss"]
    train(model, make_loader(x, y), epochs=3, lr=0.01, seed=0, optimizer=optimizer, momentum=momentum)
    assert evaluate(model, fixed_loader(x, y))["loss"] < before


def trained_weights(x, y, seed: int, loader: DataLoader | None = None) -> list[np.ndarray]:
    torch.manual_seed(0)  # same initial weights for every run
    model = MLP(30, hidden=(16,), dropout=0.3)
    train(model, loader or make_loader(x, y, seed=99), epochs=2, lr=0.05, seed=seed)
    return get_weights(model)


def test_training_is_deterministic_given_seed(cancer) -> None:
    x, y = cancer
    first, second = trained_weights(x, y, seed=7), trained_weights(x, y, seed=7)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    other = trained_weights(x, y, seed=8)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_training_is_deterministic_when_a_loader_is_reused(cancer) -> None:
    x, y = cancer
    loader = make_loader(x, y, seed=3)
    first = trained_weights(x, y, seed=7, loader=loader)
    second = trained_weights(x, y, seed=7, loader=loader)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_training_leaves_global_rng_and_mode_alone(cancer) -> None:
    x, y = cancer
    model = MLP(30, dropout=0.5)
    model.eval()
    state = torch.get_rng_state()
    train(model, make_loader(x, y), epochs=1, lr=0.01, seed=5)
    assert torch.equal(state, torch.get_rng_state())
    assert not model.training


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"optimizer": "rmsprop"}, "sgd, adam"),
        ({"optimizer": "adam", "momentum": 0.9}, "momentum"),
    ],
)
def test_training_rejects_bad_arguments(cancer, kwargs: dict, message: str) -> None:
    x, y = cancer
    args = {"epochs": 1, "lr": 0.1, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        train(LogisticRegression(30), make_loader(x, y), **args)


def test_training_on_empty_loader_fails_clearly() -> None:
    empty = fixed_loader(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="no examples"):
        train(LogisticRegression(3), empty, epochs=1, lr=0.1, seed=0)
    with pytest.raises(ValueError, match="no examples"):
        evaluate(LogisticRegression(3), empty)


# ----------------------------------------------------------------------------- evaluation


class FixedScores(torch.nn.Module):
    """Returns the log of given probabilities, so softmax gives them back exactly."""

    def __init__(self, probs: np.ndarray) -> None:
        super().__init__()
        self.logits = torch.log(torch.tensor(probs, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0].long()]


def eval_fixed(probs: np.ndarray, labels: np.ndarray) -> dict:
    index = torch.arange(len(labels), dtype=torch.float32)[:, None]
    loader = fixed_loader(index, torch.tensor(labels), batch=3)
    return evaluate(FixedScores(probs), loader)


def test_evaluate_binary_metrics_match_sklearn() -> None:
    labels = np.array([0, 0, 1, 1, 1, 0, 1])
    p1 = np.array([0.1, 0.6, 0.7, 0.4, 0.9, 0.2, 0.8])
    probs = np.stack([1 - p1, p1], axis=1)
    result = eval_fixed(probs, labels)
    assert set(result) == {"loss", "accuracy", "auc", "num_examples"}
    assert result["num_examples"] == 7
    assert result["accuracy"] == pytest.approx(5 / 7)
    assert result["auc"] == pytest.approx(roc_auc_score(labels, p1))
    expected_loss = -np.mean(np.log(probs[np.arange(7), labels]))
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_evaluate_multiclass_auc_is_one_vs_rest_macro() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 2, 0, 1, 2, 2, 1, 0, 2])
    probs = rng.dirichlet(np.ones(3), size=len(labels))
    result = eval_fixed(probs, labels)
    expected = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert result["auc"] == pytest.approx(expected, rel=1e-5)
    assert result["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == labels))


def test_evaluate_multiclass_with_absent_class_averages_present_ones() -> None:
    labels = np.array([0, 1, 0, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1]])
    assert eval_fixed(probs, labels)["auc"] == pytest.approx(1.0)


def test_evaluate_single_class_gives_nan_auc_without_crashing() -> None:
    labels = np.array([1, 1, 1])
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    result = eval_fixed(probs, labels)
    assert math.isnan(result["auc"])
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["num_examples"] == 3


def test_evaluate_does_not_change_model(cancer) -> None:
    x, y = cancer
    model = MLP(30, dropout=0.5)
    before = get_weights(model)
    first = evaluate(model, fixed_loader(x, y))
    assert first == evaluate(model, fixed_loader(x, y))  # dropout off while evaluating
    assert model.training
    for a, b in zip(before, get_weights(model), strict=True):
        np.testing.assert_array_equal(a, b)

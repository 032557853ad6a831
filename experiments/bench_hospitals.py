"""The hospitals of the head-to-head benchmark: one ClientApp answering for every arm
(``BenchHospital``), with the Flower arms' hospitals training our models on our data loaders with
the seeds of ``client.local_training.run_local_round``, so the arms differ only in the protocol."""

from __future__ import annotations

import json

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client import local_data as local

OUR_ARMS = {  # arm -> (strategy, HE preset) of RunSettings
    "fedavg": ("fedavg", "compact"),
    "compact": ("encrypted_fedavg", "compact"),
    "precise": ("encrypted_fedavg", "precise"),
    "small": ("encrypted_fedavg", "small"),  # the small ring, for models that fit one ciphertext
}
WARM_UP = "query.benchwarmup"  # also names the arm whose app answers next
ARM_KEY = "bench-arm"
STATS_KEY = "feature-stats"  # JSON {"feature-mean": [...], "feature-std": [...]} for the Flower arms


def task_of(config: dict) -> local.TaskConfig:
    stats = json.loads(str(config.get(STATS_KEY) or "{}"))
    return local.TaskConfig.from_config({**config, **stats})


def local_fit(
    config: dict, node_config: dict, weights: list[np.ndarray]
) -> tuple[list[np.ndarray], int, dict]:
    """Train the global model locally (the seeds of ``client.local_training.run_local_round``)."""
    from client import local_training as training  # torch: on use, as client.app imports it
    from models.training import get_weights, set_weights, train

    task = task_of(config)
    data = local.hospital_data(task, node_config)
    server_round = int(config["server-round"])
    model = training.make_model(task, data.num_features, data.num_classes)
    set_weights(model, weights)
    loader, _ = data.loaders(task.batch_size, seed=task.seed + 1000 * server_round)
    loss = train(model, loader, task.local_epochs, task.lr, task.seed + 7919 * server_round, task.optimizer)
    return get_weights(model), len(data.y_train), {"train_loss": float(loss)}


def local_evaluate(config: dict, node_config: dict, weights: list[np.ndarray]) -> dict:
    from client import local_training as training

    task = task_of(config)
    return training.evaluate_global(task, local.hospital_data(task, node_config), weights)


flower_hospital = ClientApp()


@flower_hospital.train()
def _flower_train(message: Message, context: Context) -> Message:
    config = dict(message.content["config"])
    weights, count, metrics = local_fit(
        config, dict(context.node_config), message.content["arrays"].to_numpy_ndarrays()
    )
    content = RecordDict(
        {"arrays": ArrayRecord(weights), "metrics": MetricRecord({**metrics, "num-examples": count})}
    )
    return Message(content=content, reply_to=message)


@flower_hospital.evaluate()
def _flower_evaluate(message: Message, context: Context) -> Message:
    config = dict(message.content["config"])
    metrics = local_evaluate(config, dict(context.node_config), message.content["arrays"].to_numpy_ndarrays())
    metrics["num-examples"] = metrics["eval_examples"]
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message)


def secaggplus_hospital() -> ClientApp:
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod

    class Hospital(NumPyClient):
        def __init__(self, node_config: dict) -> None:
            self.node_config = node_config

        def fit(self, parameters, config):
            return local_fit(dict(config), self.node_config, parameters)

        def evaluate(self, parameters, config):
            metrics = local_evaluate(dict(config), self.node_config, parameters)
            return metrics["eval_loss"], metrics["eval_examples"], metrics

    return ClientApp(
        client_fn=lambda context: Hospital(dict(context.node_config)).to_client(), mods=[secaggplus_mod]
    )


class BenchHospital(ClientApp):
    """Every arm's hospital app in one: the arm's warm-up message says which answers next."""

    def __init__(self) -> None:
        super().__init__()
        from client.app import app as ours

        self.apps = {"flower_fedavg": flower_hospital, "secaggplus": secaggplus_hospital()}
        self.apps |= dict.fromkeys(OUR_ARMS, ours)

    def __call__(self, message: Message, context: Context) -> Message:
        if message.metadata.message_type == WARM_UP:
            config = dict(message.content["config"])
            local.raw_hospital_data(task_of(config), dict(context.node_config))
            context.state[ARM_KEY] = ConfigRecord({ARM_KEY: config[ARM_KEY]})
            return Message(content=RecordDict(), reply_to=message)
        return self.apps[str(context.state[ARM_KEY][ARM_KEY])](message, context)


hospital = BenchHospital()  # the deployment scenario's ClientApp (``experiments.bench_deploy``)

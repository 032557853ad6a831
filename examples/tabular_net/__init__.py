"""A custom tabular network, federated by import path: ``model._target_=examples.tabular_net.TabularNet``."""

from examples.tabular_net.model import TabularNet

__all__ = ["TabularNet"]

"""Torch models, tasks and local training utilities; no Flower or crypto dependencies.

Import from the submodules (``models.training``, ``models.registry``, ``models.tabular`` ...):
the package itself imports nothing, so a hospital's key set-up and decryption messages, which
read only ``models.pooled_metrics`` and ``models.sums``, do not import torch.
"""

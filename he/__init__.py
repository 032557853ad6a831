"""Threshold CKKS for federated aggregation: numpy arrays and bytes in and out, no Flower, no torch.

Import from the modules (``he.roster``, ``he.decrypt`` ...): the package itself imports nothing,
so reading one module does not load the others, and no module imports back into a half-built
package.
"""

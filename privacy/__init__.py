"""Distributed differential privacy on the encrypted aggregate (docs/privacy.md).

``config`` (the ``dp`` settings a run carries), ``sampler`` (an exact discrete Gaussian drawn
from the operating system's CSPRNG), ``mechanism`` (the hospital's side: L2 clip, conditional
randomized rounding, its share of the noise, all in the encoder's integer units) and
``accounting`` (the ε of a run, with ``dp-accounting``'s RDP accountant).
"""

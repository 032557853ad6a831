"""Differential privacy (docs/privacy.md): hospital-level on the encrypted aggregate, and
record-level by DP-SGD at each hospital (``dpsgd``).

``config`` (the ``dp`` settings a run carries), ``sampler`` (an exact discrete Gaussian drawn
from the operating system's CSPRNG), ``mechanism`` (the hospital's side: L2 clip, conditional
randomized rounding, its share of the noise, all in the encoder's integer units) and
``accounting`` (the ε of a run, with ``dp-accounting``'s RDP accountant).
"""

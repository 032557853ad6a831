"""Session-wide test set-up: one torch thread per process.

The machine has 2 cores and Flower simulations run several processes at once; torch's default
of one thread per core oversubscribes it (a model test took 2.9 s instead of 0.2 s).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # after the thread setting, which torch reads at import

torch.set_num_threads(1)

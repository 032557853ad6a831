"""Record-level DP: a hospital trains with DP-SGD (Opacus), so its update alone is (ε, δ)-DP
with respect to each of its patient records (docs/privacy.md, "Record-level DP").

Every local step samples a Poisson batch (each record independently, with probability
``sample_rate``), clips each example's gradient to ``clip_norm`` (L2) and adds Gaussian noise
of standard deviation ``noise_multiplier * clip_norm`` to the batch's sum. The guarantee needs
no other hospital and no aggregate: it holds for an update isolated by a difference attack.

The hospital accounts its own ε over every local step of every round of the run, and refuses
to train when the run would exceed ``target_epsilon`` (``privacy.dpsgd_budget``, torch-free).
The batch sampling and the noise must be secret from the coordinator, which knows the run's
seed, so both come from generators seeded by the OS CSPRNG (not torch's seeded global
generator). Like Opacus without ``secure_mode``, the noise is floating point from a
Mersenne-Twister stream: docs/privacy.md says what that leaves open.
"""

from __future__ import annotations

import secrets

import torch
from opacus import GradSampleModule
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.utils.data import DataLoader

from privacy.dpsgd_budget import DpSgdPlan


def make_private(
    plan: DpSgdPlan, model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader
) -> tuple[GradSampleModule, DPOptimizer, DataLoader]:
    """Wrap training in DP-SGD: per-example gradients, clipped and noised at each step, over
    Poisson batches of ``loader``'s data set; sampling and noise from the OS CSPRNG."""
    private_loader = DPDataLoader(loader.dataset, sample_rate=plan.sample_rate, generator=secret_generator())
    private_optimizer = DPOptimizer(
        optimizer,
        noise_multiplier=plan.dp.noise_multiplier,
        max_grad_norm=plan.dp.clip_norm,
        expected_batch_size=max(1, round(plan.sample_rate * len(loader.dataset))),
        generator=secret_generator(),
    )
    return GradSampleModule(model), private_optimizer, private_loader


def secret_generator() -> torch.Generator:
    """A torch generator the coordinator cannot predict (seeded from ``secrets``)."""
    return torch.Generator().manual_seed(secrets.randbits(63))

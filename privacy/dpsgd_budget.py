"""Record-level DP's plan and budget: a hospital's DP-SGD sampling, its ε over the run's rounds
(``dp-accounting``'s RDP accountant, a Poisson-subsampled Gaussian per local step) and the refusal
of a run that would exceed ``target_epsilon`` (docs/privacy.md, "Record-level DP").

Torch-free, so a hospital checks its budget without importing the training stack
(``privacy.dpsgd`` wraps the training itself in Opacus).
"""

from __future__ import annotations

from dataclasses import dataclass

import dp_accounting
from dp_accounting.rdp import RdpAccountant

from privacy import accounting
from privacy.config import RecordDpConfig

BATCH_SIZE_KEY = "batch-size"  # the round config keys client.local_data.TaskConfig reads
LOCAL_EPOCHS_KEY = "local-epochs"


class PrivacyBudgetExceeded(RuntimeError):
    """The run's record-level ε at this hospital would exceed ``dp.target_epsilon``."""


@dataclass(frozen=True)
class DpSgdPlan:
    """One hospital's DP-SGD for a run: its sampling, clip, noise and accounting."""

    dp: RecordDpConfig
    sample_rate: float  # expected batch size / number of records
    steps_per_round: int

    @classmethod
    def for_hospital(cls, dp: RecordDpConfig, num_examples: int, batch_size: int, local_epochs: int):
        """The plan of a hospital with ``num_examples`` training records; refuses
        (``PrivacyBudgetExceeded``) a run whose ε over ``dp.rounds`` would exceed the target."""
        plan = cls(dp, *sampling(num_examples, batch_size, local_epochs))
        plan.require_budget()
        return plan

    def event(self, rounds: int) -> dp_accounting.DpEvent:
        """All local steps of ``rounds`` rounds."""
        step = step_event(self.sample_rate, self.dp.noise_multiplier)
        return dp_accounting.SelfComposedDpEvent(step, rounds * self.steps_per_round)

    def epsilon(self, rounds: int) -> float:
        """This hospital's ε after ``rounds`` rounds, at ``dp.delta``."""
        if rounds == 0:
            return 0.0
        accountant = RdpAccountant()
        accountant.compose(self.event(rounds))
        return float(accountant.get_epsilon(self.dp.delta))

    def require_budget(self) -> None:
        """Refuse a run whose ε over all its rounds would exceed the target (when one is set)."""
        if not self.dp.target_epsilon:
            return
        spent = self.epsilon(self.dp.rounds)
        if spent > self.dp.target_epsilon:
            raise PrivacyBudgetExceeded(
                f"DP-SGD over {self.dp.rounds} rounds of {self.steps_per_round} steps (sample rate "
                f"{self.sample_rate:.4g}, noise multiplier {self.dp.noise_multiplier:g}) spends ε = "
                f"{spent:.3f} at δ = {self.dp.delta:g}, above dp.target_epsilon = "
                f"{self.dp.target_epsilon:g}; refusing to train"
            )


def sampling(num_examples: int, batch_size: int, local_epochs: int) -> tuple[float, int]:
    """``(sample_rate, steps_per_round)`` of a hospital's Poisson batches of expected size
    ``batch_size`` over ``local_epochs`` passes, its steps counted as Opacus's sampler does."""
    if num_examples < 1 or batch_size < 1 or local_epochs < 1:
        raise ValueError(
            "DP-SGD needs num_examples, batch_size and local_epochs >= 1, got "
            f"{num_examples}, {batch_size}, {local_epochs}"
        )
    sample_rate = min(1.0, batch_size / num_examples)
    return sample_rate, local_epochs * int(1 / sample_rate)


def step_event(sample_rate: float, noise_multiplier: float) -> dp_accounting.DpEvent:
    """One DP-SGD step: the Gaussian mechanism on a Poisson-subsampled batch."""
    return dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier))


def noise_multiplier_for(
    target_epsilon: float, delta: float, rounds: int, sample_rate: float, steps_per_round: int
) -> float:
    """The smallest noise multiplier with which a hospital of this sampling spends at most
    ``target_epsilon`` over ``rounds`` rounds (to choose ``dp.noise_multiplier`` for the
    federation's smallest hospital, whose ε is the largest)."""
    return accounting.calibrate(
        lambda z: step_event(sample_rate, z), rounds * steps_per_round, target_epsilon, delta
    )


def plan_from_round_config(config: dict, num_examples: int) -> DpSgdPlan | None:
    """The DP-SGD plan of a hospital with ``num_examples`` training records, from the round's
    config (the DP keys, ``batch-size`` and ``local-epochs``); None unless the run is ``dp=record``.
    The hospital accounts its ε from it (``plan.epsilon(rounds)``) before it trains."""
    dp = RecordDpConfig.from_config(config)
    if dp is None:
        return None
    return DpSgdPlan(dp, *sampling(num_examples, int(config[BATCH_SIZE_KEY]), int(config[LOCAL_EPOCHS_KEY])))

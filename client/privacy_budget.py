"""The hospital owns its differential privacy: it computes a DP round's ε itself, refuses what its
policy forbids and records the spend in its release ledger before the update leaves.

The coordinator sends the DP settings with every round (``privacy.config``), so a lying
coordinator can ask for almost no noise, or account a run for one round and then send five
hundred. The hospital therefore takes from the run only the settings, computes the round's plan
(``privacy.mechanism.plan_from_config``, the noise solved by the hospital when the run gives a
target) and the ε over all the rounds the run is accounted for (``privacy.accounting``), and
refuses, before anything is sent:

* a round outside ``1..dp-rounds``, a round that is not after the last one this run spent, or
  DP settings that changed within the run (the ε was accounted for the first ones);
* under a policy (``client.policy``): a noise multiplier below ``min_dp_noise_multiplier``, a δ
  above ``max_dp_delta``, an ε over the run's rounds above ``max_epsilon_per_run``, or above
  ``lifetime_epsilon`` minus what the other runs in the ledger spent.

Then it appends the run's cumulative ε after this round to the ledger (fsync'd). Without a
``state-dir`` (plain simulation) there is no ledger and the lifetime check counts this run only;
without a policy (simulation) only the round checks apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import ConfigRecord, Context

from client.audit import STATE_DIR_KEY
from client.ledger import DP, ReleaseLedger
from client.policy import Policy, node_policy
from client.refusals import PolicyRefusal, RefusedRequest
from privacy.config import KEYS as DP_KEYS
from privacy.config import DpConfig
from privacy.dpsgd_budget import PrivacyBudgetExceeded, plan_from_round_config
from privacy.mechanism import DdgPlan

RUN_STATE = "dp-budget"  # run-state record: the DP settings this run started with, its last round


@dataclass(frozen=True)
class DpSpend:
    """What a run's ε rests on, whichever mechanism spends it: the hospital accounts both alike."""

    mechanism: str
    noise_multiplier: float
    delta: float
    rounds: int
    settings: str  # may not change within a run
    epsilon: Callable[[int], float]  # the run's cumulative ε after that many rounds


def distributed_spend(plan: DdgPlan, config: dict) -> DpSpend:
    """Hospital-level DP: this hospital's noise share of the distributed discrete Gaussian."""
    dp = DpConfig.from_config(config)
    return DpSpend(
        "distributed-discrete-gaussian",
        plan.noise_multiplier,
        dp.delta,
        dp.rounds,
        run_settings(plan, dp),
        lambda rounds: plan.epsilon(rounds, dp.delta),
    )


def record_spend(config: dict, num_examples: int) -> DpSpend | None:
    """Record-level DP (DP-SGD) of a hospital with ``num_examples`` training records; None unless
    the run is ``dp=record``."""
    plan = plan_from_round_config(config, num_examples)
    if plan is None:
        return None
    try:
        plan.require_budget()  # the run's own target, before the policy's limits
    except PrivacyBudgetExceeded as err:
        raise RefusedRequest(str(err)) from None
    dp = plan.dp
    settings = (
        f"noise multiplier {dp.noise_multiplier!r}, clip norm {dp.clip_norm!r}, delta {dp.delta!r}, "
        f"{dp.rounds} rounds, sample rate {plan.sample_rate!r}, {plan.steps_per_round} steps per round"
    )
    return DpSpend("dp-sgd", dp.noise_multiplier, dp.delta, dp.rounds, settings, plan.epsilon)


def charge_round(spend: DpSpend, context: Context, server_round: int) -> None:
    """Refuse a DP round the run's accounting or the policy forbids (module docstring); otherwise
    record the run's ε after this round in the ledger, before the update leaves."""
    require_accounted_round(context, spend.settings, server_round, spend.rounds)
    node_config = dict(context.node_config)
    state_dir = node_config.get(STATE_DIR_KEY)
    ledger = ReleaseLedger.in_state_dir(str(state_dir)) if state_dir else None
    run = str(context.run_id)
    policy = node_policy(node_config)
    if policy is not None:
        spent_elsewhere = spent_by_other_runs(ledger, run) if ledger else 0.0
        require_within_policy(policy, spend, spent_elsewhere)
    if ledger:
        ledger.append(
            {"type": DP, "run": run, "round": server_round, "mechanism": spend.mechanism}
            | {"epsilon": spend.epsilon(server_round), "delta": spend.delta}
            | {"noise_multiplier": spend.noise_multiplier, "rounds": spend.rounds}
        )
    context.state[RUN_STATE] = ConfigRecord({"settings": spend.settings, "round": server_round})


def run_settings(plan: DdgPlan, dp: DpConfig) -> str:
    """What the run's ε rests on: it may not change within a run."""
    return (
        f"noise multiplier {plan.noise_multiplier!r}, clip norm {dp.clip_norm!r}, delta {dp.delta!r}, "
        f"{dp.rounds} rounds, {dp.min_contributors} noise shares, {plan.dim} values"
    )


def require_accounted_round(context: Context, settings: str, server_round: int, rounds: int) -> None:
    """Refuse a round the run's ε does not cover."""
    if not 1 <= server_round <= rounds:
        raise RefusedRequest(
            f"DP round {server_round} is outside the {rounds} round(s) this run's epsilon was accounted "
            f"for ({DP_KEYS['num_rounds']}={rounds}); refused"
        )
    before = context.state.config_records.get(RUN_STATE)
    if before is None:
        return
    if before["settings"] != settings:
        raise RefusedRequest(
            f"the run's DP settings changed after its first round ({before['settings']} -> {settings}); "
            "its epsilon was accounted for the first ones; refused"
        )
    if server_round <= int(before["round"]):
        raise RefusedRequest(
            f"DP round {server_round} is not after round {before['round']}, the last this run spent; refused"
        )


def spent_by_other_runs(ledger: ReleaseLedger, run: str) -> float:
    """The lifetime ε the ledger holds, without this run's own (it is charged in full instead)."""
    this_run = [float(r["epsilon"]) for r in ledger.records(DP) if str(r["run"]) == run]
    return ledger.epsilon_spent() - (this_run[-1] if this_run else 0.0)


def require_within_policy(policy: Policy, spend: DpSpend, spent_elsewhere: float) -> None:
    """Refuse, naming the key, noise below the floor or an ε the policy does not allow."""
    if spend.noise_multiplier < policy.min_dp_noise_multiplier:
        raise PolicyRefusal(
            f"policy min_dp_noise_multiplier={policy.min_dp_noise_multiplier}: this run adds noise "
            f"multiplier {spend.noise_multiplier:.3g}; refused"
        )
    if spend.delta > policy.max_dp_delta:
        raise PolicyRefusal(
            f"policy max_dp_delta={policy.max_dp_delta}: this run uses delta {spend.delta}; refused"
        )
    run_epsilon = spend.epsilon(spend.rounds)
    if run_epsilon > policy.max_epsilon_per_run:
        raise PolicyRefusal(
            f"policy max_epsilon_per_run={policy.max_epsilon_per_run}: this run reaches epsilon "
            f"{run_epsilon:.3g} over its {spend.rounds} round(s); refused"
        )
    left = policy.lifetime_epsilon - spent_elsewhere
    if run_epsilon > left:
        raise PolicyRefusal(
            f"policy lifetime_epsilon={policy.lifetime_epsilon}: earlier runs spent {spent_elsewhere:.3g}, "
            f"{max(left, 0.0):.3g} is left and this run would reach {run_epsilon:.3g}; refused"
        )

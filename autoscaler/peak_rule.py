"""The replica count under a calibrated peak bound: act ahead on the expected peak, keep the risk of exceeding the
budget under the policy's confidence, and scale in only when the whole risk window is quiet.

Over the policy's risk window (`ScalingPolicy.risk_window_s`: until a change decided now takes effect and holds
until the next one could) the forecast gives, per node, the expected peak E (the highest point forecast; measured
power when that is higher, so a present overload is never ignored) and the bound U that the window's maximum
stays under with probability `confidence_threshold` (training.power.peak_bound). Shares are percent of
`max_power_budget`; r replicas re-spread over n carry r * share / n each. A scale-out of a policy that gives its
nodes' `idle_power_watts` (share i) counts i + r * (share - i) / n (the idle draw stays on every node); a scale-in
counts every watt, which overstates the fewer nodes' draw: headroom against landing at the threshold.

A count n is *safe* when r * E / n <= the scale-out threshold (the expected load fits the target) and
r * U / n <= 100 % (the budget holds with the policy's confidence). Let n* be the fewest safe count.

- Scale out when r is not safe (E > the scale-out threshold, or U > 100 %: the budget is at risk before a later
  change could land): to n*.
- Scale in only when E < the scale-in threshold over the whole window, so no spike expected before the next
  change could land is left without its replicas: to n* when it is below r.
- Otherwise hold (E in the hysteresis band [scale-in, scale-out threshold]).

Both directions aim at the same n*, so a forecast that stays put after a change never undoes it: the earlier rule
sized a scale-out to bring U under the scale-out threshold and let a scale-in take it back up to 100 %, so a steady
forecast scaled out and then in by one replica.
"""

from __future__ import annotations

from autoscaler.schema import ScalingPolicy
from autoscaler.settings import REPLICAS_LIMIT

BUDGET_SHARE = 100.0  # percent of max_power_budget


def _fewest_safe(policy: ScalingPolicy, replicas: int, expected: float, bound: float, *, idle: bool) -> int:
    """The fewest replicas n >= 1 whose spread of the expected peak is at most the scale-out threshold and of the
    bound at most the budget (`idle`: the nodes' idle draw stays put; else every watt re-spreads)."""
    power = policy.power_based
    return max(power.fewest(expected, replicas, power.scale_out_threshold, idle=idle),
               power.fewest(bound, replicas, BUDGET_SHARE, idle=idle))


def _after(policy: ScalingPolicy, replicas: int, expected: float, bound: float, count: int, *, idle: bool) -> str:
    power = policy.power_based
    kept = f" (each node's idle {power.idle_power_watts:g} W stays put)" if idle and power.idle_power_watts else ""
    return (f"{power.spread(expected, replicas, count, idle=idle):.1f}% <= {power.scale_out_threshold:g}% and the "
            f"bound at {power.spread(bound, replicas, count, idle=idle):.1f}% <= {BUDGET_SHARE:g}%{kept}")


def peak_count(policy: ScalingPolicy, replicas: int, expected: float, bound: float, label: str) -> tuple[int, str]:
    """The replica count for expected peak share `expected` and bound share `bound` (percent), and why."""
    out, inn = policy.power_based.scale_out_threshold, policy.power_based.scale_in_threshold
    level = policy.predictive_scaling.confidence_threshold
    what = f"{label}: expected peak {expected:.1f}%, p{level * 100:g} bound {bound:.1f}% of the per-node budget"
    if replicas == 0:  # the nodes' power is other workloads': a replica of this one would only add to it
        return 0, f"{what}; the target has no replicas: power alone never takes it off zero (min_replicas does)"
    over = [f"expected peak > scale-out threshold {out:g}%"] if expected > out else []
    if bound > BUDGET_SHARE:
        over.append(f"the budget is at risk (bound > 100%: exceeded with probability > {1 - level:.2g})")
    if over:  # r is not safe, so the fewest safe count is above it
        safe = _fewest_safe(policy, replicas, expected, bound, idle=True)
        if safe > REPLICAS_LIMIT:  # `fewest` found none within what any target may have
            return safe, f"{what}; {' and '.join(over)}; no count up to {REPLICAS_LIMIT:,} replicas keeps it under"
        after = _after(policy, replicas, expected, bound, safe, idle=True)
        return safe, f"{what}; {' and '.join(over)}; {safe} replicas keep the expected peak at {after}"
    if expected >= inn:
        return replicas, f"{what}; expected peak within the hysteresis band [{inn:g}%, {out:g}%]"
    # a scale-in counts every watt as re-spreading (autoscaler/decision.py): headroom where the nodes idle high
    safe = _fewest_safe(policy, replicas, expected, bound, idle=False)
    after = _after(policy, replicas, expected, bound, safe, idle=False)
    quiet = f"expected peak < scale-in threshold {inn:g}% over the whole window"
    if safe >= replicas:
        return replicas, (f"{what}; {quiet}, but fewer replicas would not keep the expected peak under {out:g}% "
                          f"and the bound within the budget")
    return safe, f"{what}; {quiet}; consolidating to {safe} keeps the expected peak at {after}"

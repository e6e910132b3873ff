"""The replica count under a calibrated peak bound: act ahead on the expected peak, keep the risk of exceeding the
budget under the policy's confidence, and scale in only when the whole risk window is quiet.

Over the policy's risk window (`ScalingPolicy.risk_window_s`: until a change decided now takes effect and holds
until the next one could) the forecast gives, per node, the expected peak E (the highest point forecast; measured
power when that is higher, so a present overload is never ignored) and the bound U that the window's maximum
stays under with probability `confidence_threshold` (training.power.peak_bound). Shares are percent of
`max_power_budget`; r replicas re-spread over n carry r * share / n each.

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

import math

from autoscaler.schema import ScalingPolicy

BUDGET_SHARE = 100.0  # percent of max_power_budget


def _fewest_safe(replicas: int, expected: float, bound: float, out: float) -> int:
    """The fewest replicas n >= 1 with replicas * expected / n <= out and replicas * bound / n <= the budget."""
    n = max(math.ceil(replicas * expected / out), math.ceil(replicas * bound / BUDGET_SHARE), 1)
    while replicas * expected / n > out or replicas * bound / n > BUDGET_SHARE:  # guard against float rounding
        n += 1
    return n


def peak_count(policy: ScalingPolicy, replicas: int, expected: float, bound: float, label: str) -> tuple[int, str]:
    """The replica count for expected peak share `expected` and bound share `bound` (percent), and why."""
    out, inn = policy.power_based.scale_out_threshold, policy.power_based.scale_in_threshold
    level = policy.predictive_scaling.confidence_threshold
    what = f"{label}: expected peak {expected:.1f}%, p{level * 100:g} bound {bound:.1f}% of the per-node budget"
    if replicas == 0:  # the nodes' power is other workloads': a replica of this one would only add to it
        return 0, f"{what}; the target has no replicas: power alone never takes it off zero (min_replicas does)"
    safe = _fewest_safe(replicas, expected, bound, out)
    after = (f"{replicas * expected / safe:.1f}% <= {out:g}% and the bound at {replicas * bound / safe:.1f}% "
             f"<= {BUDGET_SHARE:g}%")
    over = [f"expected peak > scale-out threshold {out:g}%"] if expected > out else []
    if bound > BUDGET_SHARE:
        over.append(f"the budget is at risk (bound > 100%: exceeded with probability > {1 - level:.2g})")
    if over:  # r is not safe, so safe > replicas
        return safe, f"{what}; {' and '.join(over)}; {safe} replicas keep the expected peak at {after}"
    if expected >= inn:
        return replicas, f"{what}; expected peak within the hysteresis band [{inn:g}%, {out:g}%]"
    quiet = f"expected peak < scale-in threshold {inn:g}% over the whole window"
    if safe >= replicas:
        return replicas, (f"{what}; {quiet}, but fewer replicas would not keep the expected peak under {out:g}% "
                          f"and the bound within the budget")
    return safe, f"{what}; {quiet}; consolidating to {safe} keeps the expected peak at {after}"

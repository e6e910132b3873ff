"""The replica count under a calibrated peak bound: act ahead on the expected peak, keep the risk of exceeding the
budget under the policy's confidence, and scale in only when the whole risk window is quiet.

Over the policy's risk window (`ScalingPolicy.risk_window_s`: until a change decided now takes effect and holds
until the next one could) the forecast gives, per node, the expected peak E (the highest point forecast; measured
power when that is higher, so a present overload is never ignored) and the bound U that the window's maximum
stays under with probability `confidence_threshold` (training.power.peak_bound). Shares are percent of
`max_power_budget`; r replicas re-spread over n carry r * share / n each.

- Scale out when E > the scale-out threshold (the expected load outgrows the target) or U > 100 % (the budget
  is at risk before a later change could land): to ceil(r * max(E, U) / out) replicas, which bring the bound
  itself back under the scale-out threshold. That headroom lets one change serve a peak whose bound is still rising
  as it comes nearer, instead of one change per step.
- Scale in only when E < the scale-in threshold over the whole window, so no spike expected before the next
  change could land is left without its replicas (no down-up churn): to the fewest n with r * E / n < out and
  r * U / n <= out. The bound's band [out, 100 %] is its hysteresis: a scale-out brings it under out, and a
  scale-in never takes it back above, so a steady forecast makes one change, not a scale-out and a scale-in.
- Otherwise hold (the hysteresis band).
"""

from __future__ import annotations

import math

from autoscaler.schema import ScalingPolicy

BUDGET_SHARE = 100.0  # percent of max_power_budget


def _scale_out(replicas: int, bound: float, out: float) -> int:
    """The fewest replicas n with replicas * bound / n <= out."""
    n = max(math.ceil(replicas * bound / out), 1)
    while replicas * bound / n > out:  # guard against float rounding
        n += 1
    return n


def _consolidated(replicas: int, expected: float, bound: float, out: float) -> int:
    """The fewest replicas n >= 1 with replicas * expected / n < out and replicas * bound / n <= out: where a
    scale-out would have put the bound, so the next hold does not give its headroom back."""
    n = max(math.floor(replicas * expected / out) + 1, _scale_out(replicas, bound, out))
    while replicas * expected / n >= out:  # guard against float rounding
        n += 1
    return n


def peak_count(policy: ScalingPolicy, replicas: int, expected: float, bound: float, label: str) -> tuple[int, str]:
    """The replica count for expected peak share `expected` and bound share `bound` (percent), and why."""
    out, inn = policy.power_based.scale_out_threshold, policy.power_based.scale_in_threshold
    level = policy.predictive_scaling.confidence_threshold
    what = f"{label}: expected peak {expected:.1f}%, p{level * 100:g} bound {bound:.1f}% of the per-node budget"
    over = [f"expected peak > scale-out threshold {out:g}%"] if expected > out else []
    if bound > BUDGET_SHARE:
        over.append(f"the budget is at risk (bound > 100%: exceeded with probability > {1 - level:.2g})")
    if over:
        desired = _scale_out(replicas, max(bound, expected), out)  # > replicas: E > out or U > 100 % > out
        return desired, (f"{what}; {' and '.join(over)}; {desired} replicas bring the bound to "
                         f"{replicas * bound / desired:.1f}% and the expected peak to "
                         f"{replicas * expected / desired:.1f}%, both <= {out:g}%")
    if expected >= inn:
        return replicas, f"{what}; expected peak within the hysteresis band [{inn:g}%, {out:g}%]"
    desired = min(_consolidated(replicas, expected, bound, out), replicas)
    quiet = f"expected peak < scale-in threshold {inn:g}% over the whole window"
    if desired >= replicas:
        return replicas, f"{what}; {quiet}, but fewer replicas would not keep the bound under {out:g}%"
    return desired, (f"{what}; {quiet}; consolidating to {desired} keeps the expected peak at "
                     f"{replicas * expected / desired:.1f}% < {out:g}% and the bound at "
                     f"{replicas * bound / desired:.1f}%")

"""A policy with no earlier change in its tick (one policy per target: the controller's usual case and every
simulation) decides bit for bit as before the same-tick re-spread (autoscaler/decision.py `EarlierChange`).

The digest below pins every field of decisions over a seeded grid of inputs (measured power, upper-quantile and
peak-bound forecasts, a forecast shorter than the risk window, the cluster budget, bounds, step limits,
stabilization, cooldown, counts changed outside the controller, stale telemetry), as the decision maths gave them
before the re-spread existed. A change to it changes the simulation suite's results: re-pin only on purpose.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from autoscaler.behavior import Recommendation
from autoscaler.decision import EarlierChange, PolicyState, decide
from autoscaler.forecast_view import ForecastView
from autoscaler.schema import PowerObservation, ScalingDecision, ScalingPolicy

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
CASES = 800
# re-pinned on 2026-12-05: the peak rule no longer scales a target off zero replicas (13 of the 800 cases, all at
# 0 replicas, which no simulation reaches: its policies keep at least one). Re-pinned on 2026-12-06: no change on
# power read before the last change took effect at the count it set, and a count lowered outside skips the cooldown
# only to scale out (a target outside its bounds goes back to them on any reading); both need the count the
# controller set (`replicas_after`), which a replay never knows: the cases without it (REPLAY_DIGEST, every
# simulation's) are as before. Re-pinned on 2026-12-06 again: under a peak bound, measured power above the forecast's
# expected peak is named in the reason, and the signal is "measured" where it changed the count (101 of the 800
# cases had credited the forecast); every count, share and action is as before. A change detector: the properties
# are tested beside it and in test_decision*.py. Re-pinned on 2026-12-07: a cluster budget's cap counts the measured
# total where the forecast's upper quantile set the count but the nodes draw more in total (1 of the 800 cases: its
# reason names the measured total; the count is as before; the replays' digest is unchanged).
DIGEST = "d994811704bcbd3b28f57d7d9f1662f59a91f62a7ee2084b67e07bea37505b1f"
REPLAY_DIGEST = "e75859aa0944c9f1be37904f7302539bf8f66c4d85790606b873e03ac8ce9e2e"


def _pick(rng: random.Random, options: list) -> object:
    return options[int(rng.random() * len(options))]


def _count(rng: random.Random, low: int, high: int) -> int:
    return low + int(rng.random() * (high - low + 1))


def _policy(rng: random.Random) -> ScalingPolicy:
    low = _count(rng, 0, 4)
    out = round(40 + rng.random() * 55, 1)
    return ScalingPolicy.model_validate({
        "name": "p", "target": {"kind": "deployment", "name": "web"},
        "min_replicas": low, "max_replicas": _count(rng, max(low, 1), 16), "allow_scale_to_zero": low == 0,
        "power_based": {"max_power_budget": 1000, "scale_out_threshold": out,
                        "scale_in_threshold": round(out * 0.9 * rng.random(), 1),
                        "cooldown_period": _pick(rng, [60, 300])},
        "predictive_scaling": {"enabled": rng.random() < 0.7, "confidence_threshold": _pick(rng, [0.8, 0.9, 0.95])},
        "cluster_power_budget": _pick(rng, [None, None, 2000.0, 6000.0, 20000.0]),
        "aggregation": _pick(rng, ["mean", "max"]),
        "behavior": {"scale_up": {"step_replicas": _count(rng, 1, 4)},
                     "scale_down": {"stabilization_window": _pick(rng, [0, 300])}},
    })


def _watts(rng: random.Random, nodes: int) -> list[float]:
    return [round(rng.random() * 1600, 1) for _ in range(nodes)]


def _forecast(rng: random.Random, nodes: int) -> ForecastView | None:
    kind = _pick(rng, ["none", "unavailable", "upper", "upper-short", "peak", "peak-short"])
    if kind == "none":
        return None
    if kind == "unavailable":
        return ForecastView.unavailable("no model")
    bound = _watts(rng, nodes)
    if kind.startswith("upper"):
        return ForecastView(upper_quantile_per_node_watts=bound, calibrated=True,
                            window_s=60 if kind == "upper-short" else None)
    expected = [round(value * rng.random(), 1) for value in bound]
    return ForecastView(upper_quantile_per_node_watts=bound, expected_per_node_watts=expected, calibrated=True,
                        peak_bound=True, window_s=60 if kind == "peak-short" else 3600)


def _state(rng: random.Random, replicas: int) -> PolicyState:
    last = _pick(rng, [None, 30, 200, 1000])
    recent = tuple(Recommendation(at=NOW - timedelta(seconds=s), replicas=_count(rng, 1, 12)) for s in (240, 60)
                   if rng.random() < 0.4)
    after = _pick(rng, [None, replicas, replicas + 2])
    return PolicyState(last_scale_at=None if last is None else NOW - timedelta(seconds=last), recent=recent,
                       replicas_after=after)


def cases() -> Iterator[tuple[ScalingPolicy, PowerObservation, ForecastView | None, PolicyState]]:
    rng = random.Random(20240601)
    for _ in range(CASES):
        policy, nodes, replicas = _policy(rng), _count(rng, 1, 4), _count(rng, 0, 12)
        age = _pick(rng, [5.0] * 7 + [500.0])
        observation = PowerObservation(measured_per_node_watts=_watts(rng, nodes), replicas=replicas, age_s=age)
        yield policy, observation, _forecast(rng, nodes), _state(rng, replicas)


def _fields(decision: ScalingDecision) -> str:
    return repr((decision.action.value, decision.from_replicas, decision.to_replicas, decision.recommended_replicas,
                 decision.measured_share, decision.forecast_share, decision.used_forecast, decision.signal,
                 decision.outside_change, decision.reason))


def test_decisions_without_an_earlier_change_are_unchanged():
    decided = [(state.replicas_after is None, decide(policy, observation, forecast, state, NOW))
               for policy, observation, forecast, state in cases()]
    decisions = [decision for _, decision in decided]
    replayed = hashlib.sha256("\n".join(_fields(d) for unknown, d in decided if unknown).encode()).hexdigest()
    assert replayed == REPLAY_DIGEST, "a replay's decisions changed (and with them the simulation suite's results)"
    digest = hashlib.sha256("\n".join(_fields(d) for d in decisions).encode()).hexdigest()
    assert digest == DIGEST, "a single policy's decisions changed"
    assert len({d.action for d in decisions}) == 3 and {d.signal for d in decisions} >= {"measured", "forecast"}
    assert any("cluster_power_budget" in d.reason for d in decisions)
    assert any("risk window" in d.reason for d in decisions) and any("cooldown" in d.reason for d in decisions)


def test_an_earlier_change_that_left_the_count_where_it_was_read_re_spreads_nothing():
    """The same tick's change at the count the power was read at (or at a count not known) decides as before."""
    for policy, observation, forecast, state in cases():
        for raised in (False, True):
            known = EarlierChange(policy="a", raised=raised, read_replicas=observation.replicas)
            unknown = EarlierChange(policy="a", raised=raised)
            assert decide(policy, observation, forecast, state, NOW, known) == \
                decide(policy, observation, forecast, state, NOW, unknown)

"""How far one change may move a target, like the Kubernetes HPA's `behavior`: step limits per direction and a
scale-down stabilization window, as policy fields with safe defaults and pure functions over them.

- Scale-up: one change adds at most max(`scale_up.step_replicas`, `scale_up.step_percent` % of the current
  count), rounded up; default max(4, 100 %), the HPA's default. One absurd reading (a 65,535 W BMC sentinel)
  therefore moves a target of 1 to 5, not to `max_replicas`.
- Scale-down: one change removes at most max(`scale_down.step_replicas`, `scale_down.step_percent` %), default
  100 % (as far as the signal asks), and never below the highest count recommended within the last
  `scale_down.stabilization_window` (default 5 min), so one low reading never consolidates.

A change that brings a target back inside [`min_replicas`, `max_replicas`] (a bound changed on a live policy, or
the target scaled by hand) is never cut short of the bound: as in the HPA, the bounds win over the step limits.

The policy holds the target between changes (`ScalingPolicy.hold_s`: the cooldown, and at least until the last change
has taken effect), so a limit per change is a limit per hold; a scale-out over the budget, in a reading taken after the
last change took effect, is held only that long (autoscaler.decision), so its limit is one per `actuation_delay`.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from autoscaler.settings import REPLICAS_LIMIT, FiniteSection
from core.durations import parse_duration

MAX_STABILIZATION_S = 3600
"""The longest stabilization window a policy may set (and how long recommendations are remembered)."""


def _window_seconds(value: object) -> int:
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return parse_duration(value, allow_zero=True)
    raise ValueError(f"a {type(value).__name__} is not a duration like '30s' or '5min' (0: no stabilization)")


WindowSeconds = Annotated[int, BeforeValidator(_window_seconds)]
"""Whole seconds: 0 (no window) or a duration ("5min")."""


class StepLimit(FiniteSection):
    """One change moves the target by at most max(`step_replicas`, `step_percent` % of the current count)."""

    step_replicas: int = Field(4, ge=1, le=REPLICAS_LIMIT, strict=True)
    step_percent: float = Field(100.0, ge=0, le=1000, strict=True)

    def step(self, current: int) -> int:
        """The most replicas one change may add or remove at `current` replicas."""
        return max(self.step_replicas, math.ceil(current * self.step_percent / 100.0))

    def describe(self) -> str:
        return f"max({self.step_replicas} replicas, {self.step_percent:g}%)"


class ScaleDownLimit(StepLimit):
    """The scale-down step and its stabilization window (whole seconds; "5min" works)."""

    step_replicas: int = Field(1, ge=1, le=REPLICAS_LIMIT, strict=True)
    stabilization_window: WindowSeconds = Field(300, ge=0, le=MAX_STABILIZATION_S)


class ScalingBehavior(FiniteSection):
    """Step limits per direction (HPA-style); the defaults are the HPA's: up max(4, 100 %), down 100 % after 5 min."""

    scale_up: StepLimit = StepLimit()
    scale_down: ScaleDownLimit = ScaleDownLimit()


class Recommendation(BaseModel):
    """The replica count the signal asked for at one decision (before stabilization, step limit and cooldown)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: datetime
    replicas: int = Field(ge=0)


def remember(recent: tuple[Recommendation, ...], new: Recommendation) -> tuple[Recommendation, ...]:
    """`recent` with `new` added, keeping only what a maximum over a window ending now or later can need: an older
    entry with no more replicas than a newer one never wins, and entries older than the longest window go."""
    horizon = new.at - timedelta(seconds=MAX_STABILIZATION_S)
    return (*(r for r in recent if r.at > horizon and r.replicas > new.replicas), new)


def stabilized(recent: tuple[Recommendation, ...], recommended: int, now: datetime, window_s: int) -> int:
    """The highest of `recommended` and the recommendations made within `window_s` before `now` (none: 0)."""
    if window_s <= 0:
        return recommended
    since = now - timedelta(seconds=window_s)
    return max([recommended, *(r.replicas for r in recent if r.at >= since)])


def limit_change(behavior: ScalingBehavior, replicas: int, recommended: int, recent: tuple[Recommendation, ...],
                 now: datetime, floor: int, ceiling: int) -> tuple[int, list[str]]:
    """Where the target may go this change from `replicas` towards `recommended`, and why it stopped short.

    `floor` and `ceiling` (the policy's `min_replicas` and `max_replicas`): a step limit never stops a change
    short of them, and the stabilization window never holds a scale-in above `ceiling`.
    """
    target, notes = recommended, []
    if target < replicas:
        window = behavior.scale_down.stabilization_window
        held = min(stabilized(recent, target, now, window), replicas, max(ceiling, target))
        if held > target:
            notes.append(f"scale-in held at {held} by the {window} s stabilization window "
                         f"(highest recommendation since; would go to {target})")
            target = held
    if target > replicas:
        limit = max(replicas + behavior.scale_up.step(replicas), floor)
        if target > limit:
            notes.append(f"step limit: scale-up of at most {behavior.scale_up.describe()} per change, "
                         f"cut to {limit} (would go to {target})")
            target = limit
    elif target < replicas:
        limit = min(replicas - behavior.scale_down.step(replicas), ceiling)
        if target < limit:
            notes.append(f"step limit: scale-down of at most {behavior.scale_down.describe()} per change, "
                         f"cut to {limit} (would go to {target})")
            target = limit
    return target, notes

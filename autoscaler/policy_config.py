"""Policies as written (config file, API body) -> validated `ScalingPolicy`, with the config's defaults.

A policy's `power_based` and `predictive_scaling` keys override the config file's `auto_scaling` sections,
so a file or an API client states only what differs, and `max_replicas` is bounded by the config's
`auto_scaling.max_replicas_cap`. The target's nodes come from the policy's `nodes`, else from the config's
`workloads` map (else the controller finds them from the target's replicas).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from autoscaler.schema import ScalingPolicy, policy_context
from autoscaler.settings import AutoscalerConfig, AutoScalingConfig
from core.settings import ConfigError, format_errors

_DEFAULTED_SECTIONS = ("power_based", "predictive_scaling")


def with_defaults(data: Mapping[str, Any], defaults: AutoScalingConfig) -> dict[str, Any]:
    """The policy mapping with the config's section defaults under its own keys (a non-mapping is left as is)."""
    merged = dict(data)
    for section in _DEFAULTED_SECTIONS:
        given = merged.get(section, {})
        if isinstance(given, Mapping):
            merged[section] = {**getattr(defaults, section).model_dump(), **given}
    return merged


def policy_from(data: Mapping[str, Any], defaults: AutoScalingConfig) -> ScalingPolicy:
    """Validate one policy mapping (raises pydantic's ValidationError, locations relative to the policy)."""
    context = policy_context(defaults.max_replicas_cap, new=True)
    return ScalingPolicy.model_validate(with_defaults(data, defaults), context=context)


def policies_from_config(config: AutoscalerConfig, source: str = "config") -> list[ScalingPolicy]:
    """The policies declared under `auto_scaling.policies`; ConfigError naming each bad field."""
    policies, errors = [], []
    declared, cap = len(config.auto_scaling.policies), config.auto_scaling.max_policies
    if declared > cap:
        errors.append(f"{source}: auto_scaling.policies: {declared} policies exceed auto_scaling.max_policies ({cap})")
    for index, data in enumerate(config.auto_scaling.policies):
        try:
            policies.append(policy_from(data, config.auto_scaling))
        except ValidationError as exc:
            errors.append(format_errors(f"{source}: auto_scaling.policies[{index}]", exc))
    names = [p.name for p in policies]
    errors += [f"{source}: auto_scaling.policies: name {n!r} is used twice" for n in sorted(set(names))
               if names.count(n) > 1]
    if errors:
        raise ConfigError("\n".join(errors))
    return policies


def target_nodes(policy: ScalingPolicy, workloads: Mapping[str, tuple[str, ...]]) -> list[str]:
    """The telemetry node ids of the policy's target as configured (empty when neither the policy nor the config
    says; the controller then asks the target's actuator where its replicas run)."""
    if policy.nodes:
        return list(policy.nodes)
    return list(workloads.get(policy.workload_id or policy.name, ()))

"""The version a retraining scores in place of an active one that cannot be loaded: the one replicas serve instead
(deployments.registry_follower falls back the same way)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from core.registry import ModelRegistry

logger = logging.getLogger(__name__)

T = TypeVar("T")


def load_served(registry: ModelRegistry, model_id: str, version: int, load: Callable[[int], T],
                unloadable: tuple[type[Exception], ...], passing: Callable[[Exception], bool]) -> tuple[int, T]:
    """`version` and `load(version)`, else the first of `registry.fallback_versions` that loads, and it.

    Raises `version`'s own error (one of `unloadable`) when none loads, and at once an error `passing` says may pass
    (a storage error just now): it never has an older version scored in its place, which the promotion would then
    replace. A history that cannot be read leaves nothing to fall back on, as for replicas.
    """
    try:
        return version, load(version)
    except unloadable as exc:
        if passing(exc):
            raise
        first = exc
    try:
        former_versions = registry.fallback_versions(model_id)
    except (OSError, ValueError):
        raise first from None
    for former in former_versions:
        try:
            loaded = load(former)
        except unloadable as exc:
            if passing(exc):
                raise
            continue
        logger.warning("active %s version %d cannot be loaded (%s); scoring version %d, which replicas serve in its "
                       "place", model_id, version, first, former)
        return former, loaded
    raise first

"""Telemetry stores: one interface (TelemetryStore), three backends, chosen by `create_store()`.

Backends import their client libraries lazily, so the embedded default needs none of them.
"""

from core.stores.base import NodeLatest, ReadOnlyStore, StoreUnavailable, TelemetryStore
from core.stores.factory import create_store

__all__ = ["NodeLatest", "ReadOnlyStore", "StoreUnavailable", "TelemetryStore", "create_store"]

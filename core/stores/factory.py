"""Pick the telemetry backend from the store's settings (core/stores/settings.py says which names mean what)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from core.stores.base import TelemetryStore
from core.stores.settings import StoreSettings, influx_url

logger = logging.getLogger(__name__)


def create_store(settings: StoreSettings | Mapping[str, str] | None = None, *, expire: bool = True,
                 future_tolerance_s: float | None = None, max_node_watts: float | None = None) -> TelemetryStore:
    """The store the settings ask for: a StoreSettings, a mapping of its variable names (nothing else is
    read), or None for `StoreSettings.load()` (config file and environment). `expire` False: an embedded store
    opened only to read deletes no expired rows (its retention here may not be the service's, which the store
    actor that writes it applies). `future_tolerance_s`: how far ahead of now the embedded store's latest readings
    may be stamped (the store actor's `telemetry.future_tolerance`, which it accepts samples within; None: 5 min).
    `max_node_watts`: above it, a scraped store's (Prometheus') power is no reading (`telemetry.max_node_watts`;
    None: its default).

    Raises:
        ValueError: naming a missing or invalid setting (ConfigError is one).
    """
    if settings is None:
        settings = StoreSettings.load()
    elif not isinstance(settings, StoreSettings):
        settings = StoreSettings.from_env(settings)
    if settings.influx_host:
        from core.stores.influx import InfluxStore

        missing = [name for name, value in (("INFLUX_ORG", settings.influx_org),
                                            ("INFLUX_BUCKET", settings.influx_bucket)) if not value]
        if missing:
            raise ValueError(f"INFLUX_HOST is set but {', '.join(missing)} is not")
        token = settings.token()
        if token is None:
            logger.warning("INFLUX_TOKEN is not set: writes to a secured InfluxDB will be refused")
        return InfluxStore(influx_url(settings.influx_host), token.get_secret_value() if token else "",
                           str(settings.influx_org), str(settings.influx_bucket))
    if settings.prometheus_url:
        from core.stores.prometheus import PrometheusStore

        bound = {} if max_node_watts is None else {"max_node_watts": max_node_watts}
        return PrometheusStore(settings.prometheus_url, settings.prometheus_metrics, settings.prometheus_node_labels,
                               kepler=settings.prometheus_kepler_names, **bound)
    from core.stores.sqlite import SqliteStore

    tolerance = {} if future_tolerance_s is None else {"future_tolerance_s": future_tolerance_s}
    return SqliteStore(settings.telemetry_data_dir, retention_s=settings.telemetry_retention if expire else None,
                       **tolerance)

"""Pick the telemetry backend from the environment (or an equivalent mapping).

- `INFLUX_HOST` set: InfluxStore (`INFLUX_TOKEN`, `INFLUX_ORG`, `INFLUX_BUCKET`; scheme http and port
  8086 when the host names neither).
- else `PROMETHEUS_URL` set: PrometheusStore, read-only (windows and latest power only). Optional
  `PROMETHEUS_METRICS` / `PROMETHEUS_NODE_LABELS`: JSON objects overriding metric and label names.
- else SqliteStore under `TELEMETRY_DATA_DIR` (default `data/telemetry`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from core.stores.base import TelemetryStore

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = "data/telemetry"
INFLUX_DEFAULT_PORT = 8086


def influx_url(host: str) -> str:
    """`influx`, `influx:8086` or `https://influx` as a full URL (http and port 8086 by default)."""
    text = host.strip().rstrip("/")
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    if parts.port is None:
        text = f"{parts.scheme}://{parts.hostname}:{INFLUX_DEFAULT_PORT}{parts.path}"
    return text


def create_store(config: Mapping[str, str] | None = None) -> TelemetryStore:
    """The store the settings ask for (default: os.environ). Raises ValueError naming a missing setting."""
    env = os.environ if config is None else config
    if env.get("INFLUX_HOST"):
        from core.stores.influx import InfluxStore

        missing = [name for name in ("INFLUX_ORG", "INFLUX_BUCKET") if not env.get(name)]
        if missing:
            raise ValueError(f"INFLUX_HOST is set but {', '.join(missing)} is not")
        if not env.get("INFLUX_TOKEN"):
            logger.warning("INFLUX_TOKEN is not set: writes to a secured InfluxDB will be refused")
        return InfluxStore(influx_url(env["INFLUX_HOST"]), env.get("INFLUX_TOKEN", ""), env["INFLUX_ORG"],
                           env["INFLUX_BUCKET"])
    if env.get("PROMETHEUS_URL"):
        from core.stores.prometheus import PrometheusStore

        return PrometheusStore(env["PROMETHEUS_URL"], _json_setting(env, "PROMETHEUS_METRICS"),
                               _json_setting(env, "PROMETHEUS_NODE_LABELS"))
    from core.stores.sqlite import SqliteStore

    return SqliteStore(env.get("TELEMETRY_DATA_DIR") or DEFAULT_DATA_DIR)


def _json_setting(env: Mapping[str, str], name: str) -> dict[str, str] | None:
    text = env.get(name)
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"{name} must be a JSON object of strings, e.g. '{{\"node_power\": \"node_power_watts\"}}'")
    return value

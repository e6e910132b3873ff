"""The telemetry store's settings: environment-style names, the config file's `influx_host` under them.

- INFLUX_HOST (else the config's `influx_host`): InfluxDB 2.x, with INFLUX_ORG, INFLUX_BUCKET and the
  token INFLUX_TOKEN or INFLUX_TOKEN_FILE (environment only, never the config file).
- else PROMETHEUS_URL: Prometheus, read-only, over current Kepler's metric names (PROMETHEUS_KEPLER_NAMES=0.7
  for Kepler 0.7's); PROMETHEUS_METRICS / PROMETHEUS_NODE_LABELS are JSON objects overriding metric and label
  names (core/stores/prometheus.py has the keys and defaults).
- else the embedded SQLite store under TELEMETRY_DATA_DIR (default data/telemetry), which deletes rows
  older than TELEMETRY_RETENTION (a duration such as "30d", the default; at least an hour).
An empty value counts as unset. `StoreSettings.identity` names the store they reach, without secrets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr
from pydantic_settings import NoDecode

from core.settings import Duration, EnvSettings, Section, environment, load_keys, read_secret

DEFAULT_DATA_DIR = "data/telemetry"
DEFAULT_RETENTION_S = 30 * 86400
_DEFAULT_PORTS = {"http": 80, "https": 443}
INFLUX_DEFAULT_PORT = 8086


def influx_url(host: str) -> str:
    """`influx`, `influx:8086` or `https://influx` as a full URL: http and port 8086 by default, an https URL without
    a port at https's own (443: InfluxDB Cloud, an InfluxDB behind an ingress)."""
    text = host.strip().rstrip("/")
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    if parts.port is None and parts.scheme != "https":  # the netloc keeps an IPv6 address's brackets and user info
        text = parts._replace(netloc=f"{parts.netloc}:{INFLUX_DEFAULT_PORT}").geturl()
    return text


def _login_encoded(value: str | None) -> str | None:
    """A store address whose login, if any, a URL parser reads as written: an `@` after the host means a password
    holding `/`, `?` or `#` unencoded, which would be read as the host and path (and show in errors and logs)."""
    if value is None:
        return None
    address = value.partition("://")[2] if "://" in value else value
    host_end = min((i for i in (address.find(c) for c in "/?#") if i >= 0), default=len(address))
    if "@" in address[host_end:]:
        raise ValueError("has an '@' after its host: percent-encode a login's '/', '?', '#' and '@' "
                         "(%2F, %3F, %23, %40)")
    return value


LoginEncoded = Annotated[str | None, AfterValidator(_login_encoded)]


def _json_object(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(decoded, dict) or not all(isinstance(v, str) for v in decoded.values()):
        raise ValueError("must be a JSON object of strings, e.g. '{\"node_power\": \"node_power_watts\"}'")
    return decoded


def _client_url(address: str, complete: Callable[[str], str] = str) -> str:
    """The URL a store's client connects to for `address` (`complete`: what create_store does to it first): scheme
    and host lower-case, the port explicit (else urllib's: 80 for http, 443 for https), the path without a trailing
    slash; no login, query or fragment. Text that is no such URL: stripped, less what precedes its last `@`."""
    text = address.strip()
    try:
        parts = urlsplit(complete(text))
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a port that is not a number, an unclosed IPv6 bracket
        host = port = None
    if not host or not port:
        return text.rpartition("@")[2]
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}"


NameMap = Annotated[dict[str, str] | None, NoDecode, BeforeValidator(_json_object)]


class StoreConfig(Section):
    """The config file's key for the store."""

    influx_host: str | None = None


class StoreOverrides(EnvSettings):
    """The environment's override of the config file's store key (as StoreSettings.load layers them)."""

    influx_host: str | None = Field(None, alias="INFLUX_HOST")


class StoreSettings(EnvSettings):
    """Which backend the store uses and how to reach it."""

    influx_host: LoginEncoded = Field(None, alias="INFLUX_HOST")
    influx_org: str | None = Field(None, alias="INFLUX_ORG")
    influx_bucket: str | None = Field(None, alias="INFLUX_BUCKET")
    influx_token: SecretStr | None = Field(None, alias="INFLUX_TOKEN")
    influx_token_file: str | None = Field(None, alias="INFLUX_TOKEN_FILE")
    prometheus_url: LoginEncoded = Field(None, alias="PROMETHEUS_URL")
    prometheus_metrics: NameMap = Field(None, alias="PROMETHEUS_METRICS")
    prometheus_node_labels: NameMap = Field(None, alias="PROMETHEUS_NODE_LABELS")
    prometheus_kepler_names: Literal["current", "0.7"] = Field("current", alias="PROMETHEUS_KEPLER_NAMES")
    telemetry_data_dir: str = Field(DEFAULT_DATA_DIR, alias="TELEMETRY_DATA_DIR")
    telemetry_retention: Duration = Field(DEFAULT_RETENTION_S, ge=3600, alias="TELEMETRY_RETENTION")

    def identity(self) -> tuple[str, ...]:
        """Which store these settings reach, in `create_store`'s order and without secrets: ("influxdb", URL, org,
        bucket), else ("prometheus", URL), each URL as `_client_url` gives what its client connects to, else
        ("sqlite", the data directory as an absolute path, a relative one resolved against the working directory)."""
        if self.influx_host:
            url = _client_url(self.influx_host, influx_url)
            return "influxdb", url, self.influx_org or "", self.influx_bucket or ""
        if self.prometheus_url:
            return "prometheus", _client_url(self.prometheus_url)
        return "sqlite", str(Path(self.telemetry_data_dir).resolve())

    def token(self) -> SecretStr | None:
        """The InfluxDB token (INFLUX_TOKEN_FILE wins over INFLUX_TOKEN); ConfigError for an unreadable file."""
        return read_secret("INFLUX_TOKEN", self.influx_token, self.influx_token_file)

    @classmethod
    def load(cls, explicit: Mapping[str, str] | None = None, *, config_path: str | Path | None = None,
             environ: Mapping[str, str] | None = None) -> StoreSettings:
        """`explicit` names (the app's `telemetry.store_settings`) over the environment over the config
        file's `influx_host` (file found as `core.settings.config_path` says). Raises ConfigError."""
        file_host = load_keys(StoreConfig, config_path, environ).influx_host
        layered = {"INFLUX_HOST": file_host} if file_host else {}
        layered.update((name, value) for name, value in environment(environ).items() if value.strip())
        layered.update(explicit or {})
        return cls.from_env(layered)

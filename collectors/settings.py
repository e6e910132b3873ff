"""The collectors' settings: the config file's `telemetry`, `gpu_monitoring_enabled` and `ipmi_hosts` keys
(GPU_MONITORING_ENABLED and IPMI_HOSTS override the last two), and each node's own environment.

Node environment (read on the node, by `NodeSettings.from_env`): NODE_NAME, NPU_MONITORING_ENABLED,
NVML_LIBRARY_PATH, NPU_SMI_PATH, XPU_SMI_PATH, IPMI_USERNAME, IPMI_PASSWORD or IPMI_PASSWORD_FILE.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr
from pydantic_settings import NoDecode

from core.settings import ConfigError, Duration, EnvBool, EnvSettings, Section, load_keys, read_secret
from core.telemetry_screen import DEFAULT_FUTURE_TOLERANCE_S, DEFAULT_MAX_NODE_WATTS

DEFAULT_IPMI_PORT = 623


def parse_bmc_target(entry: str) -> tuple[str, int]:
    """`host`, `host:port`, `[v6addr]:port` or a bare IPv6 address -> (host, port); the port defaults to 623."""
    text = entry.strip()
    host, port = text, str(DEFAULT_IPMI_PORT)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"{entry!r} is not 'host[:port]' (empty or blank host)")
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{entry!r} has an invalid port {port!r}; use 1..65535")
    return host, int(port)


def _bmc_host(entry: object) -> str:
    if not isinstance(entry, str):
        raise ValueError(f"{entry!r} is not 'host[:port]' text")
    parse_bmc_target(entry)
    return entry.strip()


def _bmc_host_list(value: object) -> object:
    """IPMI_HOSTS: comma-separated "host[:port]" entries, every one checked (an empty entry too)."""
    return tuple(_bmc_host(entry) for entry in value.split(",")) if isinstance(value, str) else value


BmcHost = Annotated[str, BeforeValidator(_bmc_host)]


class TelemetryConfig(Section):
    """Collector actors: how often they sample and push, where they buffer during a store outage (and how
    much), and which samples they refuse (core/telemetry_screen.py has the rule)."""

    sampling_interval: Duration = 5
    flush_interval: Duration = 10
    spill_dir: str = Field("data/spill", min_length=1)
    max_buffered_samples: int = Field(10_000, ge=100)
    max_spill_mib: int = Field(512, ge=1)
    stale_after: Duration = 120
    future_tolerance: Duration = Field(DEFAULT_FUTURE_TOLERANCE_S, ge=1)
    max_node_watts: float = Field(DEFAULT_MAX_NODE_WATTS, gt=0, allow_inf_nan=False)


class CollectorConfig(Section):
    """The config file's keys the collectors read."""

    telemetry: TelemetryConfig = TelemetryConfig()
    gpu_monitoring_enabled: bool = True
    ipmi_hosts: tuple[BmcHost, ...] = ()


class CollectorOverrides(EnvSettings):
    """Environment overrides of the collectors' config keys."""

    gpu_monitoring_enabled: EnvBool | None = Field(None, alias="GPU_MONITORING_ENABLED")
    ipmi_hosts: Annotated[tuple[str, ...] | None, NoDecode, BeforeValidator(_bmc_host_list)] = Field(
        None, alias="IPMI_HOSTS")


def load_collector_config(path: str | Path | None = None,
                          environ: Mapping[str, str] | None = None) -> CollectorConfig:
    """The collectors' keys of the config file (found as `core.settings.config_path` says), with
    GPU_MONITORING_ENABLED and IPMI_HOSTS applied. Raises ConfigError."""
    return load_keys(CollectorConfig, path, environ, overrides=[CollectorOverrides])


class IpmiCredentials(BaseModel):
    """The BMC login (the password never shows in a repr)."""

    model_config = ConfigDict(frozen=True)

    username: str
    password: SecretStr


def _stripped(value: object) -> object:
    return (value.strip() or None) if isinstance(value, str) else value


class NodeSettings(EnvSettings):
    """One node's collection settings, from that node's environment."""

    node_name: Annotated[str | None, BeforeValidator(_stripped)] = Field(None, alias="NODE_NAME")
    npu_monitoring_enabled: EnvBool = Field(True, alias="NPU_MONITORING_ENABLED")
    nvml_library_path: str | None = Field(None, alias="NVML_LIBRARY_PATH")
    npu_smi_path: str | None = Field(None, alias="NPU_SMI_PATH")
    xpu_smi_path: str | None = Field(None, alias="XPU_SMI_PATH")
    ipmi_username: Annotated[str | None, BeforeValidator(_stripped)] = Field(None, alias="IPMI_USERNAME")
    ipmi_password: SecretStr | None = Field(None, alias="IPMI_PASSWORD")
    ipmi_password_file: str | None = Field(None, alias="IPMI_PASSWORD_FILE")

    def ipmi_credentials(self) -> IpmiCredentials:
        """IPMI_USERNAME plus IPMI_PASSWORD_FILE (wins when both are set) or IPMI_PASSWORD.

        Raises:
            ConfigError: saying which variable is missing, or that the password file is unreadable or empty.
        """
        if not self.ipmi_username:
            raise ConfigError("no IPMI user: set IPMI_USERNAME")
        password = read_secret("IPMI_PASSWORD", self.ipmi_password, self.ipmi_password_file)
        if password is None:
            raise ConfigError("no IPMI password: set IPMI_PASSWORD or IPMI_PASSWORD_FILE")
        return IpmiCredentials(username=self.ipmi_username, password=password)

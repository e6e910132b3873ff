"""The collectors' settings: the config file's `telemetry`, `gpu_monitoring_enabled` and `ipmi_hosts` keys
(GPU_MONITORING_ENABLED and IPMI_HOSTS override the last two), and each node's own environment.

Precedence on a node: the node's own GPU_MONITORING_ENABLED / IPMI_HOSTS (`on_this_node`), else the value the
collector supervisor shipped from the head (config file, then the head's environment), else the default.

Node environment (read on the node, by `NodeSettings.from_env`): NODE_NAME, NPU_MONITORING_ENABLED,
NVML_LIBRARY_PATH, NPU_SMI_PATH, XPU_SMI_PATH, IPMI_USERNAME, IPMI_PASSWORD or IPMI_PASSWORD_FILE, and
IPMI_BMC_MAP_FILE: a YAML/JSON file (mounted from a Secret) mapping node names to their BMC and its login
(`BmcEntry`). With the map a node polls only its own entry's BMC; without it, every BMC of `ipmi_hosts`
(one-node setups) with IPMI_USERNAME / IPMI_PASSWORD.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_settings import NoDecode

from core.settings import (
    ConfigError,
    Duration,
    EnvBool,
    EnvSettings,
    NonEmpty,
    Section,
    format_errors,
    load_keys,
    read_secret,
    read_yaml_mapping,
)
from core.telemetry_screen import DEFAULT_FUTURE_TOLERANCE_S, DEFAULT_MAX_NODE_WATTS

DEFAULT_IPMI_PORT = 623


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def parse_bmc_target(entry: str) -> tuple[str, int]:
    """`host`, `host:port`, `[v6addr]:port` or a bare IPv6 address -> (host, port); the port defaults to 623.
    ValueError when it is not, never quoting the entry (one written `user:password@host` holds a login)."""
    text = entry.strip()
    if "@" in text or "/" in text:
        raise ValueError("not 'host[:port]': a login goes in username and password, never in the host")
    host, port = text, str(DEFAULT_IPMI_PORT)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or any(c.isspace() for c in host):
        raise ValueError("not 'host[:port]' (empty or blank host)")
    if ":" in host and not _is_ipv6(host):
        raise ValueError("not 'host[:port]': more than one ':' outside [brackets], and not an IPv6 address")
    if not port.isdecimal() or not port.isascii():
        raise ValueError("not 'host[:port]': its port is not a number (a login goes in username and password, "
                         "never in the host)")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port {int(port)} out of range; use 1..65535")
    return host, int(port)


def _bmc_host(entry: object) -> str:
    if not isinstance(entry, str):
        raise ValueError(f"not 'host[:port]' text (a {type(entry).__name__})")
    parse_bmc_target(entry)
    return entry.strip()


def _bmc_host_list(value: object) -> object:
    """IPMI_HOSTS: comma-separated "host[:port]" entries, every one checked (an empty entry too)."""
    if not isinstance(value, str):
        return value
    hosts = []
    for number, entry in enumerate(value.split(","), start=1):
        try:
            hosts.append(_bmc_host(entry))
        except ValueError as exc:
            raise ValueError(f"entry {number}: {exc}") from None
    return tuple(hosts)


BmcHost = Annotated[str, BeforeValidator(_bmc_host)]


class TelemetryConfig(Section):
    """Collector actors: how often they sample and push, where they buffer during a store outage (and how
    much), and which samples they refuse (core/telemetry_screen.py has the rule)."""

    sampling_interval: Duration = 5
    read_timeout: Annotated[Duration, Field(ge=1, le=600)] = 15  # a source's read, longer is skipped until it ends
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


def on_this_node(shipped: CollectorConfig, environ: Mapping[str, str] | None = None) -> CollectorConfig:
    """The config a node's collector uses: what the supervisor shipped, with this node's own
    GPU_MONITORING_ENABLED and IPMI_HOSTS (read here, on the node) over it. Raises ConfigError."""
    changed = CollectorOverrides.from_env(environ).model_dump(exclude_unset=True)
    return CollectorConfig.model_validate({**shipped.model_dump(), **changed}) if changed else shipped


class IpmiCredentials(BaseModel):
    """The BMC login (the password never shows in a repr)."""

    model_config = ConfigDict(frozen=True)

    username: str
    password: SecretStr


def _stripped(value: object) -> object:
    return (value.strip() or None) if isinstance(value, str) else value


def _text_secret(value: object) -> object:
    if value is not None and not isinstance(value, str | SecretStr):
        raise ValueError("must be text (quote it in YAML)")  # a value_error: the message never shows the input
    return value


class BmcEntry(BaseModel):
    """One node's BMC in the IPMI_BMC_MAP_FILE map. A missing username or password falls back to the node's
    IPMI_USERNAME / IPMI_PASSWORD(_FILE); `password_file` wins over `password` and is read relative to the
    map's folder (a Secret mounted as files)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: BmcHost
    port: int | None = Field(None, ge=1, le=65535)
    username: Annotated[str | None, BeforeValidator(_stripped)] = None
    password: Annotated[SecretStr | None, BeforeValidator(_text_secret)] = None
    password_file: Annotated[str | None, BeforeValidator(_stripped)] = None

    @model_validator(mode="after")
    def _port_once(self) -> BmcEntry:
        text = self.host
        if self.port is not None and ("]:" in text if text.startswith("[") else text.count(":") == 1):
            raise ValueError("give the port once: in `host` or in `port`")
        return self

    @property
    def address(self) -> str:
        """`host[:port]` as IpmiSource takes it."""
        if self.port is None:
            return self.host
        host = parse_bmc_target(self.host)[0]
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


_BMC_MAP = TypeAdapter(dict[Annotated[NonEmpty, BeforeValidator(_stripped)], BmcEntry])


def load_bmc_map(path: str | Path) -> dict[str, BmcEntry]:
    """The node -> BMC map of a YAML or JSON file.

    Raises:
        ConfigError: naming the file, the node entry and the key (never a password).
    """
    where = f"IPMI_BMC_MAP_FILE {path}"
    data = read_yaml_mapping(Path(path), label=where, what="BMC map")
    try:
        return _BMC_MAP.validate_python(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(where, exc, show_input=False)) from None  # an entry may hold a login


class BmcTarget(BaseModel):
    """A BMC this node polls: `host[:port]` and the login."""

    model_config = ConfigDict(frozen=True)

    address: str
    credentials: IpmiCredentials


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
    ipmi_bmc_map_file: Annotated[str | None, BeforeValidator(_stripped)] = Field(None, alias="IPMI_BMC_MAP_FILE")

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

    def bmc_targets(self, node_id: str, ipmi_hosts: Sequence[str]) -> list[BmcTarget]:
        """The BMCs node `node_id` polls: with IPMI_BMC_MAP_FILE, its own entry's (none without an entry;
        `ipmi_hosts` is then ignored); else the one of `ipmi_hosts`, with IPMI_USERNAME / IPMI_PASSWORD.

        Raises:
            ConfigError: the map or a login is missing or invalid (naming the file, entry or variable).
        """
        if self.ipmi_bmc_map_file is None:
            if len(ipmi_hosts) > 1:  # every reading is stamped as this node's wall power: it reported their mean
                raise ConfigError(f"IPMI_HOSTS (ipmi_hosts) lists {len(ipmi_hosts)} BMCs without IPMI_BMC_MAP_FILE: "
                                  f"each would be read as node {node_id!r}'s own wall power; list this node's BMC "
                                  "only (IPMI_HOSTS on its pod), or map each node to its own in IPMI_BMC_MAP_FILE")
            return [BmcTarget(address=host, credentials=self.ipmi_credentials()) for host in ipmi_hosts]
        entry = load_bmc_map(self.ipmi_bmc_map_file).get(node_id)
        if entry is None:
            return []
        where = f"IPMI_BMC_MAP_FILE {self.ipmi_bmc_map_file}: {node_id}"
        username = entry.username or self.ipmi_username
        if not username:
            raise ConfigError(f"{where}: no IPMI user: set `username` in the entry or IPMI_USERNAME")
        if entry.password_file is not None:
            password = _password_file(Path(self.ipmi_bmc_map_file).parent / entry.password_file, where)
        else:
            password = entry.password or read_secret("IPMI_PASSWORD", self.ipmi_password, self.ipmi_password_file)
        if password is None:
            raise ConfigError(f"{where}: no IPMI password: set `password` or `password_file` in the entry, "
                              "or IPMI_PASSWORD / IPMI_PASSWORD_FILE")
        return [BmcTarget(address=entry.address, credentials=IpmiCredentials(username=username, password=password))]


def _password_file(path: Path, where: str) -> SecretStr:
    """A map entry's password file (a trailing line break dropped); ConfigError names the file, never the text."""
    try:
        text = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{where}: password_file {path} cannot be read: {exc.strerror or type(exc).__name__}") \
            from None
    except UnicodeDecodeError:  # its message quotes a byte of the password
        raise ConfigError(f"{where}: password_file {path} is not UTF-8 text") from None
    if not text:
        raise ConfigError(f"{where}: password_file {path} is empty")
    return SecretStr(text)

"""build_sources: the telemetry sources of this node, from the service config and the environment.

Environment: IPMI_USERNAME, IPMI_PASSWORD or IPMI_PASSWORD_FILE (the BMC hosts come from the config's
`ipmi_hosts` / IPMI_HOSTS), NPU_MONITORING_ENABLED, NPU_SMI_PATH, XPU_SMI_PATH, NVML_LIBRARY_PATH.
Credentials are passed to the IPMI source and never logged or put in a reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from collectors.base import TelemetrySource
from collectors.host import HostSource
from collectors.npu import AscendSource, KunlunSource
from collectors.nvml import NvmlSource
from core.telemetry import SourceKind, TelemetrySample
from training.config import ConfigError, ServiceConfig

logger = logging.getLogger(__name__)

SOURCE_NAMES = ("host", "ipmi", "npu", "nvml")
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


class UnavailableSource(TelemetrySource):
    """Stands in for a selected source that could not be built here; it only says why."""

    def __init__(self, kind: SourceKind, reason: str, label: str | None = None) -> None:
        self.kind = kind
        self.label = label or kind.value
        self.reason = reason

    def available(self) -> tuple[bool, str]:
        return False, self.reason

    def sample(self) -> list[TelemetrySample]:
        return []


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() not in _TRUE | _FALSE:
        raise ConfigError(f"{name}: {raw!r} is not a boolean; use true/false, 1/0 or yes/no")
    return raw.lower() in _TRUE


def _ipmi_password(environ: Mapping[str, str]) -> tuple[str | None, str]:
    """(password, "") or (None, why there is none); IPMI_PASSWORD_FILE wins over IPMI_PASSWORD (as in
    collectors.ipmi.ipmi_credentials_from_env). The reason never contains the secret."""
    file = environ.get("IPMI_PASSWORD_FILE", "").strip()
    if not file:
        if environ.get("IPMI_PASSWORD"):
            return environ["IPMI_PASSWORD"], ""
        return None, "no IPMI password: set IPMI_PASSWORD or IPMI_PASSWORD_FILE"
    try:
        secret = Path(file).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        return None, f"cannot read IPMI_PASSWORD_FILE {file}: {exc.strerror or type(exc).__name__}"
    return (secret, "") if secret else (None, f"IPMI_PASSWORD_FILE {file} is empty")


def _ipmi_sources(config: ServiceConfig, node_id: str, environ: Mapping[str, str],
                  explicit: bool) -> list[TelemetrySource]:
    if not config.ipmi_hosts:
        reason = "no BMC configured (ipmi_hosts / IPMI_HOSTS)"
        return [UnavailableSource(SourceKind.IPMI, reason)] if explicit else []
    user = environ.get("IPMI_USERNAME", "").strip()
    password, why = _ipmi_password(environ)
    if not user:
        why = "no IPMI user: set IPMI_USERNAME"
    if password is None or not user:
        return [UnavailableSource(SourceKind.IPMI, why, f"ipmi ({host})") for host in config.ipmi_hosts]
    try:
        from collectors.ipmi import IpmiSource  # optional module, written separately
    except ImportError as exc:
        reason = f"IPMI support is not available here (collectors.ipmi: {exc})"
        return [UnavailableSource(SourceKind.IPMI, reason, f"ipmi ({host})") for host in config.ipmi_hosts]
    sources: list[TelemetrySource] = []
    for host in config.ipmi_hosts:
        try:
            sources.append(IpmiSource(host, username=user, password=password, node_id=node_id))
        except (TypeError, ValueError) as exc:  # a signature or host problem; the message holds no secret
            sources.append(UnavailableSource(SourceKind.IPMI, f"cannot set up IPMI for {host}: {exc}",
                                             f"ipmi ({host})"))
    return sources


def build_sources(config: ServiceConfig, node_id: str, *, selected: set[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> list[TelemetrySource]:
    """The telemetry sources of this node.

    Args:
        config: the service config (`gpu_monitoring_enabled`, `ipmi_hosts`).
        node_id: the node every sample is attributed to.
        selected: source names to build (of SOURCE_NAMES; "npu" means both Ascend and Kunlun); None = all.
            A selected source that cannot be built here comes back as an UnavailableSource saying why; with
            None, IPMI without configured BMCs is simply left out.
        environ: the environment (os.environ by default).

    Raises:
        ValueError: an unknown source name (the message names it).
        ConfigError: NPU_MONITORING_ENABLED is not a boolean.
    """
    environ = os.environ if environ is None else environ
    unknown = sorted(set(selected or ()) - set(SOURCE_NAMES))
    if unknown:
        raise ValueError(f"unknown source(s) {', '.join(unknown)}; choose from {', '.join(SOURCE_NAMES)}")
    wanted = set(SOURCE_NAMES) if selected is None else set(selected)
    sources: list[TelemetrySource] = []
    if "host" in wanted:
        sources.append(HostSource(node_id))
    if "nvml" in wanted:
        sources.append(NvmlSource(node_id, enabled=config.gpu_monitoring_enabled,
                                  library_path=environ.get("NVML_LIBRARY_PATH") or None))
    if "npu" in wanted:
        enabled = _flag(environ, "NPU_MONITORING_ENABLED", True)
        sources.append(AscendSource(node_id, executable=environ.get("NPU_SMI_PATH") or None, enabled=enabled))
        sources.append(KunlunSource(node_id, executable=environ.get("XPU_SMI_PATH") or None, enabled=enabled))
    if "ipmi" in wanted:
        sources += _ipmi_sources(config, node_id, environ, explicit=selected is not None)
    logger.debug("sources for %s: %s", node_id, [getattr(s, "label", s.kind.value) for s in sources])
    return sources

"""build_sources: the telemetry sources of this node, from the collectors' config and the node's settings.

The BMCs come from the node's IPMI_BMC_MAP_FILE entry, else the config's `ipmi_hosts` (IPMI_HOSTS); logins,
tool paths and switches from `collectors.settings.NodeSettings` (`bmc_targets` says the precedence).
Credentials are passed to the IPMI source and never logged or put in a reason.
"""

from __future__ import annotations

import logging

from collectors.base import TelemetrySource
from collectors.host import HostSource
from collectors.npu import AscendSource, KunlunSource
from collectors.nvml import NvmlSource
from collectors.settings import CollectorConfig, NodeSettings
from core.settings import ConfigError
from core.telemetry import SourceKind, TelemetrySample

logger = logging.getLogger(__name__)

SOURCE_NAMES = ("host", "ipmi", "npu", "nvml")


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


IPMI_TIMEOUT_S = 5.0  # a BMC exchange's own limit
SMI_TIMEOUT_S = 10.0  # an npu-smi / xpu_smi run's own limit
ROUND_SHARE = 0.8  # of `read_timeout`: a source's own limit ends its read before the round gives up on it


def own_timeout(config: CollectorConfig, default_s: float) -> float:
    """A source's own time limit, within the round's `read_timeout`: a read the round had left behind as hung would
    be thrown away when it returned, every round."""
    return min(default_s, ROUND_SHARE * float(config.telemetry.read_timeout))


def _ipmi_sources(config: CollectorConfig, node_id: str, node: NodeSettings,
                  explicit: bool) -> list[TelemetrySource]:
    try:
        targets = node.bmc_targets(node_id, config.ipmi_hosts)
    except ConfigError as exc:  # the message names variables, files and entries, never the secret
        return [UnavailableSource(SourceKind.IPMI, str(exc))]
    if not targets:
        reason = (f"no BMC configured for node {node_id!r} in IPMI_BMC_MAP_FILE {node.ipmi_bmc_map_file}"
                  if node.ipmi_bmc_map_file else "no BMC configured (ipmi_hosts / IPMI_HOSTS, or IPMI_BMC_MAP_FILE)")
        return [UnavailableSource(SourceKind.IPMI, reason)] if explicit else []
    try:
        from collectors.ipmi import IpmiSource  # optional module, written separately
    except ImportError as exc:
        reason = f"IPMI support is not available here (collectors.ipmi: {exc})"
        return [UnavailableSource(SourceKind.IPMI, reason, f"ipmi ({t.address})") for t in targets]
    sources: list[TelemetrySource] = []
    for target in targets:
        try:
            sources.append(IpmiSource(target.address, username=target.credentials.username,
                                      password=target.credentials.password.get_secret_value(), node_id=node_id,
                                      timeout_s=own_timeout(config, IPMI_TIMEOUT_S)))
        except (TypeError, ValueError) as exc:  # a signature or host problem; the message holds no secret
            sources.append(UnavailableSource(SourceKind.IPMI, f"cannot set up IPMI for {target.address}: {exc}",
                                             f"ipmi ({target.address})"))
    return sources


def build_sources(config: CollectorConfig, node_id: str, *, selected: set[str] | None = None,
                  node: NodeSettings | None = None) -> list[TelemetrySource]:
    """The telemetry sources of this node.

    Args:
        config: the collectors' config on this node (`gpu_monitoring_enabled`, `ipmi_hosts`).
        node_id: the node every sample is attributed to.
        selected: source names to build (of SOURCE_NAMES; "npu" means both Ascend and Kunlun); None = all.
            A selected source that cannot be built here comes back as an UnavailableSource saying why; with
            None, IPMI without configured BMCs is simply left out.
        node: this node's settings (default: read from the environment now).

    Raises:
        ValueError: an unknown source name (the message names it).
        ConfigError: a node setting is invalid (e.g. NPU_MONITORING_ENABLED is not a boolean).
    """
    node = NodeSettings.from_env() if node is None else node
    unknown = sorted(set(selected or ()) - set(SOURCE_NAMES))
    if unknown:
        raise ValueError(f"unknown source(s) {', '.join(unknown)}; choose from {', '.join(SOURCE_NAMES)}")
    wanted = set(SOURCE_NAMES) if selected is None else set(selected)
    sources: list[TelemetrySource] = []
    if "host" in wanted:
        sources.append(HostSource(node_id))
    if "nvml" in wanted:
        sources.append(NvmlSource(node_id, enabled=config.gpu_monitoring_enabled, library_path=node.nvml_library_path))
    if "npu" in wanted:
        enabled = node.npu_monitoring_enabled
        timeout_s = own_timeout(config, SMI_TIMEOUT_S)
        sources.append(AscendSource(node_id, executable=node.npu_smi_path, enabled=enabled, timeout_s=timeout_s))
        sources.append(KunlunSource(node_id, executable=node.xpu_smi_path, enabled=enabled, timeout_s=timeout_s))
    if "ipmi" in wanted:
        sources += _ipmi_sources(config, node_id, node, explicit=selected is not None)
    logger.debug("sources for %s: %s", node_id, [getattr(s, "label", s.kind.value) for s in sources])
    return sources

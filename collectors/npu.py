"""AscendSource (`npu-smi info`) and KunlunSource (`xpu_smi -m`): NPU/XPU telemetry from the vendor tools.

The tool is found on PATH unless a path is configured (NPU_SMI_PATH / XPU_SMI_PATH), run with a timeout, and its
output parsed by collectors.npu_parsers. A missing tool or a switched-off NPU_MONITORING_ENABLED makes the source
unavailable with the reason; a failed run or unreadable output is logged, counted and answered with no samples.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime

from collectors.base import TelemetrySource
from collectors.failures import FailureTracker
from collectors.npu_parsers import ChipReading, ParseError, parse_npu_smi_info, parse_xpu_smi_m
from core.telemetry import Quality, SourceKind, TelemetrySample

logger = logging.getLogger(__name__)
KILLED_WAIT_S = 1.0  # how long a killed tool's output is waited for (its pipes then closed, whoever holds them)


class SmiToolSource(TelemetrySource):
    """A source that runs a vendor command-line tool and parses its text output (one sample per chip)."""

    tool: str  # executable name looked up on PATH
    args: tuple[str, ...]
    path_env: str  # environment variable that names an explicit path
    parse: Callable[[str], list[ChipReading]]

    def __init__(self, node_id: str, *, executable: str | None = None, enabled: bool = True,
                 timeout_s: float = 10.0, max_failures: int = 5, retry_s: float = 60.0) -> None:
        self.node_id = node_id
        self.label = f"{self.kind.value} ({self.tool})"
        self.executable = executable
        self.enabled = enabled
        self.timeout_s = timeout_s
        self._failures = FailureTracker(f"{self.tool} source on {node_id}", max_failures, retry_s)
        self._probed = False

    def _resolve(self) -> tuple[str | None, str]:
        """(path of the tool, "") or (None, why it cannot be run)."""
        if self.executable:
            if os.path.isfile(self.executable) and os.access(self.executable, os.X_OK):
                return self.executable, ""
            return None, f"{self.tool} not found or not executable at {self.executable} ({self.path_env})"
        found = shutil.which(self.tool)
        if found is None:
            return None, f"{self.tool} not found on PATH (install the vendor driver or set {self.path_env})"
        return found, ""

    def available(self) -> tuple[bool, str]:
        if not self.enabled:
            return False, "NPU monitoring is disabled (NPU_MONITORING_ENABLED)"
        if self._failures.tripped:
            return False, self._failures.reason()
        path, reason = self._resolve()
        if path is None:
            return False, reason
        if not self._probed:  # one real run, so "available" means "answers with devices"
            try:
                self._read(path)
            except (OSError, subprocess.SubprocessError, ParseError) as exc:
                return False, f"{self.tool} did not answer with devices: {exc}"
            self._probed = True
        return True, ""

    def sample(self) -> list[TelemetrySample]:
        if not self.enabled or self._failures.blocked():  # tripped: one read a minute, to notice a recovery
            return []
        path, reason = self._resolve()
        if path is None:
            if self.executable:  # a configured path that is missing is a fault; no tool on PATH: not an NPU node
                self._failures.failed(reason)
            return []
        try:
            chips = self._read(path)
        except (OSError, subprocess.SubprocessError, ParseError) as exc:
            self._failures.failed(str(exc))
            return []
        stamp = datetime.now(UTC)  # the values are the tool's as it answered (a run may take seconds)
        self._failures.ok()
        return [TelemetrySample.reading(timestamp=stamp, node_id=self.node_id, source=self.kind,
                                        device_id=chip.device_id, power_watts=chip.power_watts,
                                        utilization=chip.utilization, memory_usage=chip.memory_usage,
                                        temperature=chip.temperature, quality=Quality.OK)
                for chip in chips]

    def _read(self, path: str) -> list[ChipReading]:
        stdout, stderr, returncode = self._run(path)
        if returncode != 0:
            detail = (stderr or stdout).strip().splitlines()
            raise subprocess.SubprocessError(f"{self.tool} {' '.join(self.args)} exited with {returncode}"
                                             + (f": {detail[-1]}" if detail else ""))
        return type(self).parse(stdout)

    def _run(self, path: str) -> tuple[str, str, int]:
        """The tool's output and exit code within `timeout_s`; subprocess.TimeoutExpired past it, with the tool and
        every process it started killed (its own process group): killing the tool alone left a process it started
        running for good, and waiting on its output meanwhile held the read past the timeout. A process that left
        the group (a daemon it started), nor the tool if the kill does not end it at once (stuck in a driver call,
        where even SIGKILL waits), is waited on past KILLED_WAIT_S: Popen's context manager waited without a limit."""
        tool = subprocess.Popen([path, *self.args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace", start_new_session=True)
        try:
            stdout, stderr = tool.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(tool.pid, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                tool.communicate(timeout=KILLED_WAIT_S)
            raise
        finally:
            for pipe in (tool.stdout, tool.stderr):  # closed without waiting on whoever holds their other end
                with suppress(OSError):
                    pipe.close()
        return stdout, stderr, tool.returncode


class AscendSource(SmiToolSource):
    """Huawei Ascend NPUs (910, 910B, Atlas A3, 310, 310P) through `npu-smi info`."""

    kind = SourceKind.NPU
    tool = "npu-smi"
    args = ("info",)
    path_env = "NPU_SMI_PATH"
    parse = staticmethod(parse_npu_smi_info)
    min_interval_s = 5.0  # each read starts a process that queries every card; poll no faster than this


class KunlunSource(SmiToolSource):
    """Baidu Kunlun XPUs (K200, R200, P800) through `xpu_smi -m`."""

    kind = SourceKind.XPU
    tool = "xpu_smi"
    args = ("-m",)
    path_env = "XPU_SMI_PATH"
    parse = staticmethod(parse_xpu_smi_m)
    min_interval_s = 2.0  # each read starts a process

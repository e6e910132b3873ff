"""NvmlSource: NVIDIA GPU power, limit, utilization, memory, temperature and energy through NVML (nvidia-ml-py).

A GPU's samples carry its UUID as device id (`GPU-8c6b...`, as nvidia-smi, DCGM and CUDA_VISIBLE_DEVICES name it),
not its index: two containers on one host (two Ray pods on one Kubernetes node, both stamping the node's
NODE_NAME) each see their own GPU at index 0, and indices would merge two GPUs into one series and undercount the
node's power. A GPU that cannot say its UUID falls back to "gpu<index>".

A node without NVML (no driver, no library, no GPU) reports itself unavailable with the reason instead of failing;
a field the GPU does not support is left empty (and not asked for again); a GPU whose read fails is left out of
that round and the others are still read; a round in which every GPU fails is counted, and after `max_failures`
such rounds in a row the source reports itself unavailable, trying one read a minute until a GPU answers again.

NVML is started again (shut down, initialised, its GPUs listed afresh), at most once every `retry_s`, while it
could not start, found no GPU, or every GPU's read fails: a driver that was not ready when the collector started,
a driver reload (stale handles) or a GPU added later is picked up without restarting the collector.
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pynvml

from collectors.base import TelemetrySource
from collectors.failures import FailureTracker
from core.telemetry import SourceKind, TelemetrySample

logger = logging.getLogger(__name__)

_UNSUPPORTED = {pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND}  # for good: not asked again
_REFUSED = pynvml.NVML_ERROR_NO_PERMISSION  # for good too, but for power (a MIG GPU in a container refuses memory)
_UUID = re.compile(r"[A-Za-z]{3}-[0-9A-Za-z-]{8,80}")  # GPU-<hex groups> (MIG-... for a MIG instance)


@dataclass
class _Gpu:
    index: int
    handle: Any
    device_id: str  # the UUID, else "gpu<index>"
    unsupported: set[str] = field(default_factory=set)  # optional fields this GPU refused once
    failing: set[str] = field(default_factory=set)  # fields besides power whose last read failed (logged once)


class NvmlSource(TelemetrySource):
    """Every NVIDIA GPU this container sees, one sample per GPU (device_id: the GPU's UUID, module docstring).

    Args:
        node_id: node the samples belong to.
        enabled: False when GPU monitoring is switched off (GPU_MONITORING_ENABLED / `gpu_monitoring_enabled`).
        library_path: absolute path of libnvidia-ml.so.1 when it is not where the dynamic loader looks
            (NVML_LIBRARY_PATH); the binding's own lookup is used otherwise.
        max_failures: consecutive failed reads before the source reports itself unavailable.
        retry_s: while unavailable after failed reads, one read is tried this often.
    """

    kind = SourceKind.NVML
    min_interval_s = 1.0  # NVML refreshes power about every 20-100 ms, utilization over 1/6-1 s

    def __init__(self, node_id: str, *, enabled: bool = True, library_path: str | None = None,
                 max_failures: int = 5, retry_s: float = 60.0) -> None:
        self.node_id = node_id
        self.label = "nvml"
        self.enabled = enabled
        self.library_path = library_path
        self._failures = FailureTracker(f"NVML source on {node_id}", max_failures, retry_s)
        self._gpus: list[_Gpu] | None = None
        self._init_error = ""
        self._retry_s = retry_s
        self._started = False  # nvmlInit succeeded and nvmlShutdown is owed
        self._restart_now = True  # start NVML at the next look (the first, or after every GPU failed)
        self._start_tried = False  # a first start was tried: from then on only `sample()` starts NVML again
        self._starting = threading.Lock()
        self._restart_at = 0.0  # monotonic time before which NVML is not started again
        self._failing: list[str] = []  # the GPUs whose last read failed while others answered (logged on change)
        self._left_out: list[int] = []  # the GPUs NVML could not open at start (tried again every retry_s)
        self._reopen_at = 0.0  # monotonic time from which the left-out GPUs are tried again

    # -- TelemetrySource -------------------------------------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        if self.enabled and self._failures.tripped:
            return False, self._failures.reason()
        ready, why = self._ready(may_start=not self._start_tried)
        if not ready:
            return ready, why
        failing = self._failing
        if failing and len(failing) >= len(self._gpus or []):  # not yet failed often enough to be unavailable
            return True, f"its last read failed: {'; '.join(failing)}"
        missing = [*failing, *(f"GPU {index}: not opened (tried again every {self._retry_s:g} s)"
                               for index in self._left_out)]
        if missing:  # read, but without these GPUs: a node without a BMC reading has no power then
            return True, f"partial: {'; '.join(missing)} (the other GPUs are read)"
        return True, ""

    def sample(self) -> list[TelemetrySample]:
        if not self._ready(may_start=True)[0] or self._failures.blocked():
            return []
        if self._left_out and time.monotonic() >= self._reopen_at:  # a GPU lost at start may be back
            self._reopen_left_out()
        stamp = datetime.now(UTC)
        samples, failures = [], []
        for gpu in self._gpus or []:
            try:
                samples.append(self._read(gpu, stamp))
            except pynvml.NVMLError as exc:  # one GPU off the bus must not silence the others
                failures.append(f"GPU {gpu.index}: {exc}")
        if failures and not samples:
            self._failing = failures
            self._failures.failed(f"NVML read failed: {'; '.join(failures)}")
            if time.monotonic() >= self._restart_at:  # stale handles after a driver reload: listed afresh
                self._restart_now = True
            return []
        if failures != self._failing:
            if failures:
                logger.warning("NVML on %s: %s (the other GPUs are still read)", self.node_id, "; ".join(failures))
            self._failing = failures
        self._failures.ok()
        return samples

    def close(self) -> None:
        self._shutdown()
        self._gpus, self._init_error, self._restart_now, self._start_tried = None, "", True, False

    def _shutdown(self) -> None:
        if self._started:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError as exc:
                logger.debug("nvmlShutdown: %s", exc)
        self._started = False

    # -- internals -------------------------------------------------------------------------------------------
    def _ready(self, *, may_start: bool) -> tuple[bool, str]:
        """Enabled, NVML started and at least one GPU found (or why not); starts NVML when it is due and `may_start`.
        Only the first look may start it from `available()`: the collector's status() asks from another thread,
        outside the sampling thread's read_timeout, and a restart (after every GPU failed, or a failed start) may
        hang in a driver that is being reloaded; status then says what the last start and read found."""
        if not self.enabled:
            return False, "GPU monitoring is disabled (GPU_MONITORING_ENABLED / gpu_monitoring_enabled)"
        now = time.monotonic()
        due = self._restart_now or ((not self._gpus or self._init_error) and now >= self._restart_at)
        if due and may_start:
            # never waits on a start hung in the driver that another thread began
            if not self._starting.acquire(blocking=False):
                return False, "NVML is being started"
            try:
                self._start_tried = True
                self._restart_now, self._restart_at = False, now + self._retry_s
                self._shutdown()
                self._gpus, self._init_error = None, ""
                self._start()
            finally:
                self._starting.release()
        if self._init_error:
            return False, self._init_error
        if self._gpus is None:
            return False, "NVML is being started"
        if not self._gpus:
            return False, "NVML found no NVIDIA GPU on this node"
        return True, ""

    def _start(self) -> None:
        """Load and initialise NVML and list its GPUs; on failure remember why (never raise)."""
        if self.library_path:
            try:
                self._load_library(self.library_path)
            except OSError as exc:
                self._init_error = f"cannot load the NVML library {self.library_path}: {exc}"
                return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            self._init_error = f"NVML not available: {exc}"
            return
        self._started = True
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as exc:
            self._init_error = f"NVML could not count the GPUs: {exc}"
            self._shutdown()
            return
        handles, self._left_out = {}, []
        for index in range(count):  # a GPU lost (or barred) at start is left out; the others are read
            try:
                handles[index] = pynvml.nvmlDeviceGetHandleByIndex(index)
            except pynvml.NVMLError as exc:
                logger.warning("NVML: GPU %d on %s left out (tried again every %g s): %s", index, self.node_id,
                               self._retry_s, exc)
                self._left_out.append(index)
        self._reopen_at = time.monotonic() + self._retry_s
        if count and not handles:
            self._init_error = f"NVML could not open any of the {count} GPU(s)"
            self._shutdown()
            return
        self._gpus = [_Gpu(index, handle, _device_id(index, handle)) for index, handle in handles.items()]
        logger.info("NVML: %d GPU(s) on %s: %s", len(self._gpus), self.node_id,
                    ", ".join(f"{gpu.index} {gpu.device_id}" for gpu in self._gpus))

    def _reopen_left_out(self) -> None:
        """Open the GPUs left out at start that NVML opens now, beside the others (NVML keeps running)."""
        self._reopen_at = time.monotonic() + self._retry_s
        opened, still = [], []
        for index in self._left_out:
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            except pynvml.NVMLError:
                still.append(index)
                continue
            opened.append(_Gpu(index, handle, _device_id(index, handle)))
        if opened:
            self._gpus = sorted([*(self._gpus or []), *opened], key=lambda gpu: gpu.index)
            logger.info("NVML: GPU(s) %s on %s opened now", ", ".join(str(gpu.index) for gpu in opened), self.node_id)
        self._left_out = still

    @staticmethod
    def _load_library(path: str) -> None:
        """Point the binding at an explicit library file (it otherwise dlopens libnvidia-ml.so.1 by name)."""
        with pynvml.libLoadLock:
            if pynvml.nvmlLib is None:
                pynvml.nvmlLib = ctypes.CDLL(path)
            else:
                logger.debug("NVML library already loaded; %s not reloaded", path)

    def _optional(self, gpu: _Gpu, name: str, call: Any, *args: Any) -> Any:
        """Call an NVML query that a GPU may not support; None (and not asked again) when it does not. Another
        error fails the GPU's read when it is its power's or the GPU is lost; a field besides power is then None
        this time (the GPU's power is worth more than its memory or temperature), said once until it reads again."""
        if name in gpu.unsupported:
            return None
        try:
            value = call(gpu.handle, *args)
        except pynvml.NVMLError as exc:
            if exc.value in _UNSUPPORTED or (exc.value == _REFUSED and name != "power"):
                logger.info("GPU %d does not support %s: %s", gpu.index, name, exc)
                gpu.unsupported.add(name)
                return None
            if name == "power" or exc.value == pynvml.NVML_ERROR_GPU_IS_LOST:
                raise
            if name not in gpu.failing:
                logger.warning("GPU %d: %s not read: %s (its power still is)", gpu.index, name, exc)
                gpu.failing.add(name)
            return None
        gpu.failing.discard(name)
        return value

    def _read(self, gpu: _Gpu, stamp: datetime) -> TelemetrySample:
        power_mw = self._optional(gpu, "power", pynvml.nvmlDeviceGetPowerUsage)
        limit_mw = self._optional(gpu, "power limit", pynvml.nvmlDeviceGetEnforcedPowerLimit)
        rates = self._optional(gpu, "utilization", pynvml.nvmlDeviceGetUtilizationRates)
        memory = self._optional(gpu, "memory", pynvml.nvmlDeviceGetMemoryInfo)
        temperature = self._optional(gpu, "temperature", pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU)
        energy_mj = self._optional(gpu, "energy", pynvml.nvmlDeviceGetTotalEnergyConsumption)
        return TelemetrySample.reading(
            timestamp=stamp, node_id=self.node_id, source=self.kind, device_id=gpu.device_id,
            power_watts=None if power_mw is None else power_mw / 1000.0,
            power_limit_watts=None if limit_mw is None else limit_mw / 1000.0,
            utilization=None if rates is None else float(min(rates.gpu, 100)),
            memory_usage=(100.0 * memory.used / memory.total) if memory is not None and memory.total else None,
            temperature=None if temperature is None else float(temperature),
            energy_joules=None if energy_mj is None else energy_mj / 1000.0,
        )


def _device_id(index: int, handle: Any) -> str:
    """The GPU's UUID (stable, unique across hosts), else "gpu<index>" with the reason logged."""
    try:
        uuid = pynvml.nvmlDeviceGetUUID(handle)
    except pynvml.NVMLError as exc:
        logger.warning("GPU %d has no UUID (%s); its samples use device id gpu%d", index, exc, index)
        return f"gpu{index}"
    uuid = uuid.decode(errors="replace") if isinstance(uuid, bytes) else str(uuid)
    if not _UUID.fullmatch(uuid):
        logger.warning("GPU %d reports an unexpected UUID %r; its samples use device id gpu%d", index, uuid, index)
        return f"gpu{index}"
    return uuid

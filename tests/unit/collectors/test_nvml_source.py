"""NvmlSource against the fake libnvidia-ml.so.1 (real pynvml binding over a fake C library)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pynvml
import pytest

from collectors.nvml import NvmlSource
from core.stores.sqlite import SqliteStore
from core.telemetry import TelemetrySample
from tests.paths import REPO_ROOT

REPO = REPO_ROOT
UUID = "GPU-00000000-0000-0000-0000-{:012d}"  # the fake library's UUID of GPU i (its uuid<i> file, default i)


@pytest.fixture
def isolated_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test loads NVML afresh: no library or cached function pointers left from another test."""
    monkeypatch.setattr(pynvml, "nvmlLib", None)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    monkeypatch.setattr(pynvml, "_nvmlLib_refcount", 0)


@pytest.fixture
def gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_nvml: None) -> Path:
    """Two fake GPUs whose values come from files in the returned directory."""
    values = tmp_path / "nvml-values"
    values.mkdir()
    monkeypatch.setenv("FAKE_NVML_COUNT", "2")
    monkeypatch.setenv("FAKE_NVML_DIR", str(values))
    for name, gpu0, gpu1 in [("power", 250000, 120500), ("limit", 700000, 400000), ("util", 87, 3),
                             ("temp", 61, 35), ("energy", 5000000, 1000), ("memused", 40960, 0)]:
        (values / f"{name}0").write_text(str(gpu0))
        (values / f"{name}1").write_text(str(gpu1))
    return values


def test_two_gpus_read_from_the_fake_library(fake_nvml_lib: Path, gpus: Path) -> None:
    source = NvmlSource("n1", library_path=str(fake_nvml_lib))
    assert source.available() == (True, "")
    first, second = source.sample()
    assert (first.device_id, second.device_id) == (UUID.format(0), UUID.format(1))
    assert first.source.value == "nvml" and first.node_id == "n1"
    assert first.power_watts == 250.0 and second.power_watts == 120.5  # mW -> W
    assert first.power_limit_watts == 700.0 and second.power_limit_watts == 400.0
    assert (first.utilization, second.utilization) == (87.0, 3.0)
    assert (first.temperature, second.temperature) == (61.0, 35.0)
    assert first.memory_usage == pytest.approx(50.0) and second.memory_usage == 0.0  # 40 of 80 GiB
    assert first.energy_joules == 5000.0 and second.energy_joules == 1.0  # mJ -> J
    source.close()


def test_two_containers_on_one_host_keep_their_gpus_apart(fake_nvml_lib: Path, gpus: Path,
                                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two Ray pods on one Kubernetes node stamp the same NODE_NAME and each sees its own GPU at index 0. Named by
    index, the two GPUs were one series whose bin mean halved the node's GPU power; by UUID the node sums both."""
    monkeypatch.setenv("FAKE_NVML_COUNT", "1")
    stamp = datetime(2026, 12, 4, 12, 0, 10, tzinfo=UTC)

    def one_round() -> list[TelemetrySample]:
        source = NvmlSource("k8s-node-1", library_path=str(fake_nvml_lib))
        samples = [s.model_copy(update={"timestamp": stamp}) for s in source.sample()]
        source.close()
        return samples

    first = one_round()
    (gpus / "uuid0").write_text("7")  # the second container: another physical GPU, also at index 0
    (gpus / "power0").write_text("300000")
    second = one_round()
    assert [s.device_id for s in first] == [UUID.format(0)] and [s.device_id for s in second] == [UUID.format(7)]
    store = SqliteStore(tmp_path / "telemetry.db")
    store.write(first + second)
    frame = store.window("k8s-node-1", stamp - timedelta(seconds=10), stamp + timedelta(seconds=50), 60)
    assert frame["power_watts"].tolist() == [550.0]  # 250 W + 300 W, not their mean
    store.close()


def test_a_gpu_without_a_uuid_is_named_by_its_index(fake_nvml_lib: Path, gpus: Path) -> None:
    (gpus / "uuid1").write_text("-1")  # the fake answers Not Supported
    source = NvmlSource("n1", library_path=str(fake_nvml_lib))
    assert [s.device_id for s in source.sample()] == [UUID.format(0), "gpu1"]
    source.close()


def test_values_change_between_samples(fake_nvml_lib: Path, gpus: Path) -> None:
    source = NvmlSource("n1", library_path=str(fake_nvml_lib))
    before = source.sample()[0]
    (gpus / "power0").write_text("300500")
    (gpus / "energy0").write_text("5600000")
    after = source.sample()[0]
    assert (before.power_watts, after.power_watts) == (250.0, 300.5)
    assert after.energy_joules - before.energy_joules == pytest.approx(600.0)
    source.close()


def test_unsupported_energy_counter_is_left_empty(fake_nvml_lib: Path, gpus: Path) -> None:
    (gpus / "energy1").write_text("-1")  # the fake answers Not Supported
    source = NvmlSource("n1", library_path=str(fake_nvml_lib))
    first, second = source.sample()
    assert first.energy_joules == 5000.0 and second.energy_joules is None
    assert second.power_watts == 120.5  # the rest of the reading is still there
    source.close()


@pytest.mark.parametrize("error", [pynvml.NVML_ERROR_NO_PERMISSION, pynvml.NVML_ERROR_UNKNOWN])
def test_a_field_besides_power_that_cannot_be_read_costs_only_that_field(fake_nvml_lib: Path, gpus: Path,
                                                                        error: int) -> None:
    """Regression (review): a MIG GPU in a container refuses its memory with NO_PERMISSION, and any error but Not
    Supported failed the whole GPU's read: its power was lost, and after 5 reads the source."""
    (gpus / "memfail1").write_text(str(error))
    source = NvmlSource("n1", library_path=str(fake_nvml_lib), max_failures=2)
    for _ in range(3):
        first, second = source.sample()
        assert (second.power_watts, second.memory_usage) == (120.5, None) and first.memory_usage == 50.0
    assert source.available() == (True, "")
    (gpus / "memfail1").write_text("0")
    assert source.sample()[1].memory_usage == (0.0 if error == pynvml.NVML_ERROR_UNKNOWN else None)  # refused: for good
    source.close()


def test_power_refused_still_fails_the_gpu_s_read_and_says_so(fake_nvml_lib: Path, gpus: Path) -> None:
    """A GPU whose power is refused (NO_PERMISSION) is named in the status, not silently read without power."""
    fail(gpus, pynvml.NVML_ERROR_NO_PERMISSION, 1)
    source = NvmlSource("n1", library_path=str(fake_nvml_lib))
    assert [s.device_id for s in source.sample()] == [UUID.format(0)]
    ok, why = source.available()
    assert ok and why.startswith("partial: GPU 1: ")
    source.close()


def fail(gpus: Path, error: int, *indexes: int) -> None:
    for index in indexes:
        (gpus / f"fail{index}").write_text(str(error))


def test_failed_reads_count_then_mark_the_source_unavailable(fake_nvml_lib: Path, gpus: Path) -> None:
    fail(gpus, pynvml.NVML_ERROR_GPU_IS_LOST, 0, 1)
    source = NvmlSource("n1", library_path=str(fake_nvml_lib), max_failures=3)
    assert source.available()[0]
    assert source.sample() == [] and source.sample() == []
    assert source.available()[0]  # two failures are not yet three
    assert source.sample() == []
    ok, reason = source.available()
    assert not ok and "3 consecutive failed reads" in reason and "GPU is lost" in reason
    source.close()


def test_a_good_read_resets_the_failure_run(fake_nvml_lib: Path, gpus: Path) -> None:
    source = NvmlSource("n1", library_path=str(fake_nvml_lib), max_failures=2)
    fail(gpus, pynvml.NVML_ERROR_UNKNOWN, 0, 1)
    assert source.sample() == []
    fail(gpus, 0, 0, 1)
    assert len(source.sample()) == 2
    fail(gpus, pynvml.NVML_ERROR_UNKNOWN, 0, 1)
    assert source.sample() == []
    assert source.available()[0]
    source.close()


def test_one_lost_gpu_does_not_silence_the_others(fake_nvml_lib: Path, gpus: Path) -> None:
    """A GPU off the bus used to fail the whole read: the node lost every GPU's power, then the source. The status
    names the GPU left out (it said "available" with no reason, while a node without a BMC had no power)."""
    fail(gpus, pynvml.NVML_ERROR_GPU_IS_LOST, 1)
    source = NvmlSource("n1", library_path=str(fake_nvml_lib), max_failures=2)
    for _ in range(3):
        assert [s.device_id for s in source.sample()] == [UUID.format(0)]
    ok, why = source.available()
    assert ok and why.startswith("partial: GPU 1: ") and "the other GPUs are read" in why
    fail(gpus, pynvml.NVML_ERROR_GPU_IS_LOST, 0)  # then the other one too: no longer "partial"
    assert source.sample() == []
    ok, why = source.available()
    assert ok and why.startswith("its last read failed: GPU 0: ") and "partial" not in why
    source.close()


def test_an_unavailable_source_tries_again_and_recovers(fake_nvml_lib: Path, gpus: Path, clock) -> None:
    fail(gpus, pynvml.NVML_ERROR_UNKNOWN, 0, 1)
    source = NvmlSource("n1", library_path=str(fake_nvml_lib), max_failures=2, retry_s=0.2)
    source._failures.clock = clock
    assert source.sample() == [] and source.sample() == [] and not source.available()[0]
    fail(gpus, 0, 0, 1)
    clock.advance(0.19)
    assert source.sample() == []  # the retry is not due yet: no read
    clock.advance(0.01)
    assert len(source.sample()) == 2 and source.available() == (True, "")
    source.close()


def test_missing_library_reports_unavailable_with_the_reason(monkeypatch: pytest.MonkeyPatch,
                                                             isolated_nvml: None) -> None:
    def no_library(name: str) -> None:
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(pynvml, "CDLL", no_library)  # what the binding sees on a machine without a driver
    source = NvmlSource("n1")
    ok, reason = source.available()
    assert not ok and reason == "NVML not available: NVML Shared Library Not Found"
    assert source.sample() == []
    source.close()


def test_unloadable_library_path_reports_unavailable(tmp_path: Path, isolated_nvml: None) -> None:
    source = NvmlSource("n1", library_path=str(tmp_path / "libnvidia-ml.so.1"))
    ok, reason = source.available()
    assert not ok and reason.startswith(f"cannot load the NVML library {tmp_path}")


def test_disabled_source_is_unavailable_and_never_loads_nvml(isolated_nvml: None) -> None:
    source = NvmlSource("n1", enabled=False)
    ok, reason = source.available()
    assert not ok and "GPU_MONITORING_ENABLED" in reason
    assert source.sample() == []
    assert pynvml.nvmlLib is None


def test_zero_gpus_is_unavailable(fake_nvml_lib: Path, gpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_NVML_COUNT", "0")
    source = NvmlSource("n1", library_path=str(fake_nvml_lib))
    assert source.available() == (False, "NVML found no NVIDIA GPU on this node")
    source.close()


def test_library_found_by_name_through_ld_library_path(fake_nvml_lib: Path, gpus: Path) -> None:
    """The production lookup (dlopen by name) in a fresh process, through the CLI."""
    env = {**os.environ, "LD_LIBRARY_PATH": str(fake_nvml_lib.parent), "GPU_MONITORING_ENABLED": "true"}
    env.pop("KCLOUD_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "collectors", "--once", "--sources", "nvml", "--json",
                           "--node-id", "gpu-node"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["device_id"], r["power_watts"], r["node_id"]) for r in rows] == [(UUID.format(0), 250.0, "gpu-node"),
                                                                                (UUID.format(1), 120.5, "gpu-node")]


def test_gpus_that_appear_later_are_found_without_a_new_collector(fake_nvml_lib: Path, gpus: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, clock) -> None:
    """Regression: a driver not ready at the collector's start (or a GPU added later) left GPU telemetry off for
    the actor's whole life: NVML was started once."""
    monkeypatch.setenv("FAKE_NVML_COUNT", "0")
    source = NvmlSource("n1", library_path=str(fake_nvml_lib), retry_s=0.2)
    source._failures.clock = clock
    assert source.available() == (False, "NVML found no NVIDIA GPU on this node")
    monkeypatch.setenv("FAKE_NVML_COUNT", "2")
    clock.advance(0.19)
    assert source.sample() == []  # not listed again before retry_s
    clock.advance(0.01)
    assert len(source.sample()) == 2 and source.available() == (True, "")
    source.close()


def test_every_gpu_failing_lists_them_afresh_once_a_restart_is_due(fake_nvml_lib: Path, gpus: Path,
                                                                    monkeypatch: pytest.MonkeyPatch, clock) -> None:
    """After a driver reload the old handles fail for ever: NVML is started again and its GPUs listed anew."""
    source = NvmlSource("n1", library_path=str(fake_nvml_lib), retry_s=0.2)
    source._failures.clock = clock
    assert len(source.sample()) == 2
    listed = []
    real = pynvml.nvmlDeviceGetCount
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: listed.append(1) or real())
    fail(gpus, pynvml.NVML_ERROR_GPU_IS_LOST, 0, 1)
    clock.advance(0.19)
    assert source.sample() == [] and listed == []  # the first start was under retry_s ago
    clock.advance(0.01)
    assert source.sample() == []
    fail(gpus, 0, 0, 1)
    assert len(source.sample()) == 2 and listed == [1]  # restarted once, then read
    source.close()


def test_only_the_sampling_thread_starts_nvml_again(fake_nvml_lib: Path, gpus: Path,
                                                   monkeypatch: pytest.MonkeyPatch, clock) -> None:
    """Regression: once every GPU failed, the collector's status() (another thread, outside the read_timeout the
    sampling thread runs under) started NVML again itself, and could hang in a driver being reloaded. It now says
    what the last read found; the next sample() starts NVML."""
    source = NvmlSource("n1", library_path=str(fake_nvml_lib), retry_s=0.2)
    source._failures.clock = clock
    assert source.available() == (True, "")  # the first look may start it (the CLI's probe does)
    started = []
    real = pynvml.nvmlInit
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: started.append(1) or real())
    fail(gpus, pynvml.NVML_ERROR_GPU_IS_LOST, 0, 1)
    clock.advance(0.2)
    assert source.sample() == []  # every GPU failed, a restart is due
    fail(gpus, 0, 0, 1)
    ok, why = source.available()
    assert ok and why.startswith("its last read failed: GPU 0: ") and started == []
    assert len(source.sample()) == 2 and started == [1]
    source.close()


def test_a_gpu_lost_before_the_source_started_is_left_out_and_tried_again(fake_nvml_lib: Path, gpus: Path) -> None:
    """Regression: one GPU whose handle NVML refused at start (lost, no permission) failed the whole GPU list, at
    every restart too: the node's GPUs went silent for as long as that one was gone."""
    (gpus / "handlefail1").write_text(str(pynvml.NVML_ERROR_GPU_IS_LOST))
    source = NvmlSource("n1", library_path=str(fake_nvml_lib), retry_s=0.0)
    assert source.available() == (True, "partial: GPU 1: not opened (tried again every 0 s) (the other GPUs are read)")
    assert [s.device_id for s in source.sample()] == [UUID.format(0)]
    (gpus / "handlefail1").unlink()  # back on the bus: opened a retry period later, NVML left running
    assert [s.device_id for s in source.sample()] == [UUID.format(0), UUID.format(1)]
    assert source._left_out == [] and source.available() == (True, "")
    source.close()


def test_no_gpu_that_can_be_opened_is_a_reason_not_a_crash(fake_nvml_lib: Path, gpus: Path) -> None:
    for index in (0, 1):
        (gpus / f"handlefail{index}").write_text(str(pynvml.NVML_ERROR_NO_PERMISSION))
    source = NvmlSource("n1", library_path=str(fake_nvml_lib))
    assert source.available() == (False, "NVML could not open any of the 2 GPU(s)")
    assert source.sample() == []
    source.close()

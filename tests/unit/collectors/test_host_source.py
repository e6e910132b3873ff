"""HostSource over a fake /proc and powercap tree: CPU deltas, memory, RAPL power with wrap-around."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.host import HostSource
from core.telemetry import Quality

MEMINFO = "MemTotal:       16000000 kB\nMemFree:         2000000 kB\nMemAvailable:    4000000 kB\n"
MAX_RANGE = 262143328850  # a real max_energy_range_uj


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write_stat(proc: Path, user: int, idle: int) -> None:
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    (proc / "stat").write_text(f"cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {user} 0 0 {idle} 0 0 0 0 0 0\n")


def add_zone(root: Path, zone: str, name: str, energy_uj: int, max_range: int | None = MAX_RANGE) -> Path:
    path = root / zone
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    if max_range is not None:
        (path / "max_energy_range_uj").write_text(f"{max_range}\n")
    return path


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    proc, powercap = tmp_path / "proc", tmp_path / "powercap"
    proc.mkdir()
    powercap.mkdir()
    write_stat(proc, user=1000, idle=9000)
    (proc / "meminfo").write_text(MEMINFO)
    return proc, powercap


def test_cpu_utilization_from_stat_deltas_and_memory(tree: tuple[Path, Path]) -> None:
    proc, powercap = tree
    source = HostSource("n1", proc_root=proc, powercap_root=powercap)
    ok, why = source.available()  # regression (review): "available" and no reason, while the CPUs had no power
    assert ok and why.startswith(f"partial: no readable RAPL package zone under {powercap}, no CPU power")
    write_stat(proc, user=1300, idle=9100)  # 300 busy of 400 ticks
    (node,) = source.sample()
    assert (node.device_id, node.source.value, node.quality) == ("node", "host", Quality.DERIVED)
    assert node.utilization == pytest.approx(75.0)
    assert node.memory_usage == pytest.approx(75.0)  # 12 of 16 GB not available
    assert node.power_watts is None  # no RAPL here
    (again,) = source.sample()
    assert again.utilization is None  # no tick between the two readings


def test_memory_without_memavailable(tree: tuple[Path, Path]) -> None:
    proc, powercap = tree
    (proc / "meminfo").write_text("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n")
    (node,) = HostSource("n1", proc_root=proc, powercap_root=powercap).sample()
    assert node.memory_usage == pytest.approx(60.0)


def test_rapl_package_power_with_per_package_samples(tree: tuple[Path, Path]) -> None:
    proc, powercap = tree
    pkg0 = add_zone(powercap, "intel-rapl:0", "package-0", 1_000_000)
    pkg1 = add_zone(powercap, "intel-rapl:1", "package-1", 5_000_000)
    add_zone(powercap, "intel-rapl:0:0", "core", 0)  # sub-zone: part of package-0, not added again
    add_zone(powercap, "intel-rapl:2", "psys", 0)  # platform zone: would double count
    clock = Clock()
    source = HostSource("n1", proc_root=proc, powercap_root=powercap, per_package=True, clock=clock)
    clock.now += 2.0
    (pkg0 / "energy_uj").write_text("201000000\n")  # 200 J in 2 s
    (pkg1 / "energy_uj").write_text("105000000\n")  # 100 J in 2 s
    node, first, second = source.sample()
    assert node.power_watts == pytest.approx(150.0) and node.quality == Quality.DERIVED
    assert (first.device_id, first.power_watts, first.energy_joules) == ("package-0", pytest.approx(100.0),
                                                                         pytest.approx(200.0))
    assert (second.device_id, second.power_watts) == ("package-1", pytest.approx(50.0))


def test_rapl_counter_wrap_around(tree: tuple[Path, Path]) -> None:
    proc, powercap = tree
    zone = add_zone(powercap, "intel-rapl:0", "package-0", MAX_RANGE - 30_000_000)
    clock = Clock()
    source = HostSource("n1", proc_root=proc, powercap_root=powercap, clock=clock)
    clock.now += 1.0
    (zone / "energy_uj").write_text("20000000\n")  # wrapped: 30 J before the wrap + 20 J after
    (node,) = source.sample()
    assert node.power_watts == pytest.approx(50.0)


@pytest.mark.parametrize(("start_uj", "max_range"), [(60_000_000_000, MAX_RANGE), (90_000_000, None)])
def test_a_counter_that_falls_without_a_plausible_wrap_gives_no_power_then_counts_again(
        tree: tuple[Path, Path], start_uj: int, max_range: int | None) -> None:
    """Without a max range a fall cannot be a wrap. With one, every fall was taken as a wrap (review), so a reset (a
    driver reload) from 60 kJ to 1 J read as the rest of the range: here 40 kW, elsewhere a plausible 1.1 kW."""
    proc, powercap = tree
    zone = add_zone(powercap, "intel-rapl:0", "package-0", start_uj, max_range=max_range)
    clock = Clock()
    source = HostSource("n1", proc_root=proc, powercap_root=powercap, clock=clock)
    assert source.available() == (True, "")
    clock.now += 5.0
    (zone / "energy_uj").write_text("1000000\n")
    assert source.sample()[0].power_watts is None
    clock.now += 1.0
    (zone / "energy_uj").write_text("21000000\n")
    assert source.sample()[0].power_watts == pytest.approx(20.0)  # counting again from the new base


def test_unreadable_rapl_zone_is_skipped(tree: tuple[Path, Path]) -> None:
    proc, powercap = tree
    zone = powercap / "intel-rapl:0"
    zone.mkdir()
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").mkdir()  # reading it fails, as for non-root users on Linux >= 5.10
    source = HostSource("n1", proc_root=proc, powercap_root=powercap, per_package=True)
    write_stat(proc, user=1100, idle=9100)
    assert [s.device_id for s in source.sample()] == ["node"]


def test_missing_proc_is_unavailable_and_failed_reads_trip(tmp_path: Path) -> None:
    source = HostSource("n1", proc_root=tmp_path / "nope", powercap_root=tmp_path, max_failures=2)
    ok, reason = source.available()
    assert not ok and "stat" in reason
    assert source.sample() == [] and source.sample() == []
    ok, reason = source.available()
    assert not ok and "2 consecutive failed reads" in reason


def test_garbled_stat_is_a_failed_read(tree: tuple[Path, Path]) -> None:
    proc, powercap = tree
    source = HostSource("n1", proc_root=proc, powercap_root=powercap)
    (proc / "stat").write_text("intr 1 2 3\n")
    assert source.sample() == []
    assert source.available()[0]  # one failure is not yet unavailable


def test_real_proc_gives_a_node_sample() -> None:
    if not Path("/proc/stat").is_file():
        pytest.skip("no /proc here")
    source = HostSource("n1")
    (node, *_) = source.sample()
    assert node.memory_usage is not None and 0 <= node.memory_usage <= 100

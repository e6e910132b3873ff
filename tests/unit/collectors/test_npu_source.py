"""npu-smi / xpu_smi parsers on recorded real outputs (tests/data/npu/SOURCES.md) and the sources over fake tools."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collectors.npu import AscendSource, KunlunSource
from collectors.npu_parsers import ParseError, parse_npu_smi_info, parse_xpu_smi_m
from core.telemetry import SourceKind
from tests.paths import TEST_DATA

DATA = TEST_DATA / "npu"


def read(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


# -- npu-smi info: one file per chip family / tool version ----------------------------------------------------
def test_910b3_eight_single_chip_npus() -> None:
    chips = parse_npu_smi_info(read("npu_smi_info_910b3_24.1.0.3.txt"))
    assert [c.device_id for c in chips] == [f"npu{i}-chip0" for i in range(8)]
    first = chips[0]
    assert (first.name, first.power_watts, first.temperature, first.utilization) == ("910B3", 94.7, 54.0, 0.0)
    assert (first.memory_used_mb, first.memory_total_mb) == (3396.0, 65536.0)  # HBM, not the empty DDR pair
    assert chips[7].power_watts == 97.3
    assert sum(c.power_watts or 0 for c in chips) == pytest.approx(767.0)


def test_a_process_table_printed_without_its_header_ends_the_device_table() -> None:
    """Some npu-smi versions print the "No running processes found in NPU n" rows without the "Process id" header
    before them (a public 24.1.rc2 output): the whole read failed on the first such row, every chip's reading lost."""
    recorded = read("npu_smi_info_910b3_24.1.0.3.txt")
    header = next(line for line in recorded.splitlines() if "Process id" in line)
    chips = parse_npu_smi_info(recorded.replace(header + "\n", ""))
    assert [c.device_id for c in chips] == [f"npu{i}-chip0" for i in range(8)]
    assert sum(c.power_watts or 0 for c in chips) == pytest.approx(767.0)


def test_atlas_a3_power_only_on_the_first_chip_of_each_npu() -> None:
    chips = parse_npu_smi_info(read("npu_smi_info_atlas_a3_25.3.rc1.txt"))
    assert len(chips) == 16  # 8 NPUs x 2 chips; the process table after them is skipped
    assert [c.device_id for c in chips[:4]] == ["npu0-chip0", "npu0-chip1", "npu1-chip0", "npu1-chip1"]
    assert [c.power_watts for c in chips[:4]] == [164.0, None, 164.0, None]  # "-" on the second chip
    assert chips[1].temperature == 30.0 and chips[4].memory_used_mb == 62308.0  # "62308/ 65536"
    assert chips[4].memory_usage == pytest.approx(100 * 62308 / 65536)


def test_910a_uses_hbm_for_memory_and_keeps_the_tool_name() -> None:
    chips = parse_npu_smi_info(read("npu_smi_info_910a_24.1.0.txt"))
    assert len(chips) == 8 and chips[0].name == "910B"
    assert (chips[0].memory_used_mb, chips[0].memory_total_mb) == (1365.0, 32768.0)


def test_310p3_na_power_and_large_npu_ids() -> None:
    chips = parse_npu_smi_info(read("npu_smi_info_310p3_24.1.0.1.txt"))
    assert [c.device_id for c in chips][-2:] == ["npu32864-chip0", "npu32896-chip0"]
    assert all(c.power_watts is None for c in chips)  # NA
    assert (chips[0].temperature, chips[0].memory_used_mb, chips[0].memory_total_mb) == (56.0, 1844.0, 21527.0)


def test_310_without_hbm_column_and_wider_layout() -> None:
    (chip,) = parse_npu_smi_info(read("npu_smi_info_310_23.0.0.txt"))
    assert (chip.device_id, chip.name, chip.power_watts, chip.temperature) == ("npu0-chip0", "310", 12.8, 61.0)
    assert (chip.memory_used_mb, chip.memory_total_mb) == (577.0, 7759.0)


def test_tolerates_masked_bus_ids_and_missing_banner() -> None:
    # rows as posted in Project-HAMi/HAMi-WebUI#47 (910B4-1, npu-smi 25.2.0, bus ids masked by the reporter)
    text = """\
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910B4-1             | OK            | 91.3        33                0    / 0             |
| 0                         | 0000:xx:00.0  | 0           0    / 0          3197 / 65536         |
"""
    (chip,) = parse_npu_smi_info(text)
    assert (chip.name, chip.power_watts, chip.memory_used_mb) == ("910B4-1", 91.3, 3197.0)


def test_reordered_columns_follow_the_header() -> None:
    text = """\
| NPU   Name                | Health        | Temp(C)  Power(W)  Hugepages-Usage(page)|
| Chip                      | Bus-Id        | HBM-Usage(MB)  AICore(%)  Memory-Usage(MB)|
| 3     910B3               | OK            | 40       99.5      0 / 0                |
| 0                         | 0000:C1:00.0  | 100 / 200      7          0 / 0         |
"""
    (chip,) = parse_npu_smi_info(text)
    assert (chip.device_id, chip.power_watts, chip.temperature, chip.utilization) == ("npu3-chip0", 99.5, 40.0, 7.0)
    assert chip.memory_usage == pytest.approx(50.0)


@pytest.mark.parametrize("text, quoted", [
    ("| 0     910B3  | OK  | 94.7  54  0 / 0 |\n| 0   | 0000:C1:00.0 | 0  0 / 0 |\n", "0  0 / 0"),  # value missing
    ("| 0     910B3  | OK  | 94.7  hot  0 / 0 |\n", "hot"),  # not a number
    ("| 0     910B3  | OK  | 94.7 | 54 |\n", "got 4"),  # unknown layout
    ("| garbage row |\n", "garbage row"),
])
def test_unreadable_rows_raise_parse_error_quoting_the_line(text: str, quoted: str) -> None:
    with pytest.raises(ParseError, match=quoted.replace("/", ".")):
        parse_npu_smi_info(text)


def test_no_table_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="dcmi module initialize failed"):
        parse_npu_smi_info("dcmi module initialize failed. ret is -8005\n")


# -- xpu_smi -m -----------------------------------------------------------------------------------------------
def test_xpu_smi_p800_rows() -> None:
    first, second = parse_xpu_smi_m(read("xpu_smi_m_p800.txt"))
    assert (first.device_id, first.name, first.power_watts, first.temperature) == ("xpu0", "P800 OAM", 86.0, 36.0)
    assert (first.memory_used_mb, first.memory_total_mb, first.utilization) == (90440.0, 98304.0, 0.0)
    assert (second.device_id, second.temperature) == ("xpu1", 39.0)


def test_xpu_smi_milliwatts_from_older_drivers_and_noise_lines() -> None:
    row = read("xpu_smi_m_p800.txt").splitlines()[0].split(" ")
    row[8] = "86500"  # K200 / xpu 4.x print milliwatts in this field
    (chip,) = parse_xpu_smi_m("WARNING: something the driver printed\n\n" + " ".join(row) + "\n")
    assert chip.power_watts == 86.5


def test_xpu_smi_short_row_and_empty_output_raise() -> None:
    with pytest.raises(ParseError, match="00000000:03:00.0 0 0 SN 36"):
        parse_xpu_smi_m("00000000:03:00.0 0 0 SN 36\n")
    with pytest.raises(ParseError, match="no XPU rows"):
        parse_xpu_smi_m("xpu_smi: no device found\n")


# -- the sources over fake tools on PATH ----------------------------------------------------------------------
def test_ascend_source_reads_the_tool_on_path(fake_tool: Callable[..., Path]) -> None:
    fake_tool("npu-smi", DATA / "npu_smi_info_atlas_a3_25.3.rc1.txt")
    source = AscendSource("n1")
    assert source.available() == (True, "")
    samples = source.sample()
    assert len(samples) == 16 and {s.source for s in samples} == {SourceKind.NPU}
    assert (samples[0].device_id, samples[0].power_watts, samples[1].power_watts) == ("npu0-chip0", 164.0, None)


def test_a_reading_is_stamped_when_the_tool_answered_not_when_it_was_started(fake_tool: Callable[..., Path]) -> None:
    """Regression: a run that took seconds put its values in the bin before the one they describe."""
    fake_tool("npu-smi", DATA / "npu_smi_info_atlas_a3_25.3.rc1.txt", sleep_s=0.5)
    source = AscendSource("n1")
    source.available()
    started = datetime.now(UTC)
    samples = source.sample()
    assert samples and all(s.timestamp >= started + timedelta(seconds=0.5) for s in samples)


def test_kunlun_source_with_configured_path(fake_tool: Callable[..., Path]) -> None:
    script = fake_tool("my-xpu-smi", DATA / "xpu_smi_m_p800.txt")
    source = KunlunSource("n1", executable=str(script))
    samples = source.sample()
    assert [(s.device_id, s.source, s.power_watts) for s in samples] == [("xpu0", SourceKind.XPU, 86.0),
                                                                         ("xpu1", SourceKind.XPU, 86.0)]
    assert samples[0].memory_usage == pytest.approx(92.0, abs=0.01)


def test_one_chip_s_reading_out_of_range_costs_only_that_value(fake_tool: Callable[..., Path], tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """Regression: a chip reporting 255 °C failed the sample's validation, and with it every chip of the round."""
    rows = (DATA / "xpu_smi_m_p800.txt").read_text().splitlines()
    fields = rows[0].split(" ")
    fields[4] = "255"  # the temperature of xpu0
    output = tmp_path / "xpu_smi.txt"
    output.write_text("\n".join([" ".join(fields), *rows[1:]]) + "\n")
    samples = KunlunSource("n1", executable=str(fake_tool("my-xpu-smi", output))).sample()
    assert [(s.device_id, s.temperature, s.power_watts) for s in samples] == [("xpu0", None, 86.0),
                                                                              ("xpu1", 39.0, 86.0)]
    assert "temperature=255.0" in caplog.text


def test_missing_tool_and_disabled_switch(fake_tool: Callable[..., Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    ok, reason = AscendSource("n1").available()
    assert not ok and "npu-smi not found on PATH" in reason and "NPU_SMI_PATH" in reason
    ok, reason = KunlunSource("n1", executable=str(tmp_path / "xpu_smi")).available()
    assert not ok and "not executable" in reason
    ok, reason = AscendSource("n1", enabled=False).available()
    assert not ok and "NPU_MONITORING_ENABLED" in reason
    assert AscendSource("n1", enabled=False).sample() == []


def test_a_node_without_the_tool_is_quiet_and_a_configured_path_that_is_missing_is_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Every node without NPUs used to log a failed npu-smi and xpu_smi read per round until both tripped."""
    monkeypatch.setenv("PATH", str(tmp_path))
    absent = AscendSource("n1", max_failures=2)
    assert [absent.sample() for _ in range(3)] == [[], [], []]
    assert "failed" not in caplog.text and "not found on PATH" in absent.available()[1]
    configured = KunlunSource("n1", executable=str(tmp_path / "xpu_smi"), max_failures=2)
    assert configured.sample() == [] and configured.sample() == []
    assert "2 consecutive failed reads" in configured.available()[1]


def test_failing_tool_is_counted_then_unavailable(fake_tool: Callable[..., Path]) -> None:
    fake_tool("npu-smi", exit_code=3, stderr="dcmi module initialize failed. ret is -8005")
    source = AscendSource("n1", max_failures=2)
    ok, reason = source.available()
    assert not ok and "exited with 3" in reason and "-8005" in reason
    assert source.sample() == [] and source.sample() == []
    ok, reason = source.available()
    assert not ok and "2 consecutive failed reads" in reason


def test_an_unavailable_tool_is_tried_again_and_recovers(fake_tool: Callable[..., Path], clock) -> None:
    """Five failed runs used to switch NPU telemetry off until the collector was restarted by hand."""
    fake_tool("npu-smi", exit_code=255, stderr="dcmi busy")
    source = AscendSource("n1", max_failures=2, retry_s=0.2)
    source._failures.clock = clock
    assert source.sample() == [] and source.sample() == [] and not source.available()[0]
    fake_tool("npu-smi", DATA / "npu_smi_info_atlas_a3_25.3.rc1.txt")
    clock.advance(0.19)
    assert source.sample() == []  # the retry is not due yet
    clock.advance(0.01)
    assert len(source.sample()) == 16 and source.available() == (True, "")


def test_unparsable_output_fails_the_read_loudly(fake_tool: Callable[..., Path], tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("| 0     910B3  | OK  | 94.7  hot  0 / 0 |\n")
    fake_tool("npu-smi", bad)
    source = AscendSource("n1")
    assert source.sample() == []
    assert "not a number: 'hot'" in caplog.text


def test_slow_tool_times_out(fake_tool: Callable[..., Path]) -> None:
    fake_tool("xpu_smi", sleep_s=3)
    source = KunlunSource("n1", timeout_s=0.3)
    assert source.sample() == []
    ok, reason = source.available()
    assert not ok and "timed out" in reason


def test_a_tool_that_times_out_leaves_no_process_it_started_running(fake_tool: Callable[..., Path],
                                                                    tmp_path: Path) -> None:
    """Only the tool itself was killed at the timeout: a process it started (a wrapper script's real tool) ran on,
    one more at every timed-out round, and while one held the tool's output open the read waited for it."""
    pid_file = tmp_path / "child.pid"
    script = fake_tool("xpu_smi")
    script.write_text(f"#!/bin/sh\nsleep 60 >/dev/null 2>&1 &\necho $! > '{pid_file}'\nsleep 60\n")
    source = KunlunSource("n1", timeout_s=0.5)
    assert source.sample() == [] and "timed out" in source.available()[1]
    child = int(pid_file.read_text())
    for _ in range(100):  # SIGKILL is sent before sample() returns; the process may take a moment to go
        try:
            state = (Path("/proc") / str(child) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the process the tool started is still running")


def test_a_process_outside_the_tool_s_group_holding_its_output_does_not_hold_the_read(
        fake_tool: Callable[..., Path], tmp_path: Path) -> None:
    """A daemon the tool started in a session of its own (out of reach of the group's kill) kept the tool's output
    open, and waiting on it held the read, and the collector's round behind it, for as long as it lived (review)."""
    import threading

    pid_file = tmp_path / "daemon.pid"
    script = fake_tool("xpu_smi")
    script.write_text(f"#!/bin/sh\nsetsid sleep 60 &\necho $! > '{pid_file}'\nsleep 60\n")
    source = KunlunSource("n1", timeout_s=0.5)
    reading = threading.Thread(target=source.sample)
    try:
        reading.start()
        reading.join(20)  # returns within a second or two unless the read waits on the daemon
        assert not reading.is_alive()
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        reading.join(60)


def test_the_second_die_of_a_two_die_card_does_not_count_the_card_again() -> None:
    """Both dies of a K200 report the whole card's power (tests/data/npu/SOURCES.md). The rows here are the P800
    capture's, given one card's bus id with functions .0 and .1 (an assumption: no K200 capture was found)."""
    first, second = read("xpu_smi_m_p800.txt").splitlines()[:2]
    one_card = second.replace("00000000:05:00.0", "00000000:03:00.1")
    dies = parse_xpu_smi_m(f"{first}\n{one_card}\n")
    assert [(d.device_id, d.power_watts) for d in dies] == [("xpu0", 86.0), ("xpu1", None)]
    assert [d.power_watts for d in parse_xpu_smi_m(f"{first}\n{second}\n")] == [86.0, 86.0]  # two cards


def test_the_tools_own_time_limit_ends_within_the_collector_s_read_timeout():
    """Regression: a 10-s npu-smi limit in a 2-s round: every read was left behind as hung, its answer thrown away."""
    from collectors.settings import CollectorConfig
    from collectors.sources import build_sources

    for read_timeout, limit in ((15, 10.0), (2, 1.6)):
        config = CollectorConfig(telemetry={"read_timeout": read_timeout})
        tools = [source for source in build_sources(config, "n1", selected={"npu"}) if hasattr(source, "timeout_s")]
        assert len(tools) == 2 and {source.timeout_s for source in tools} == {limit}


def test_a_tool_the_kill_does_not_end_at_once_does_not_hold_the_read(fake_tool: Callable[..., Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool stuck in a driver call takes SIGKILL only once the call returns; the read then waited on it without a
    limit (Popen's context manager), and the collector's status call that probes the tool with it (review)."""
    from collectors import npu

    fake_tool("xpu_smi", sleep_s=30)
    groups: list[int] = []
    kill_group = os.killpg
    monkeypatch.setattr(npu.os, "killpg", lambda group, sig: groups.append(group))  # the kill lands later
    source = KunlunSource("n1", timeout_s=0.3)
    started = time.monotonic()
    try:
        ok, reason = source.available()
        assert not ok and "timed out" in reason
        assert time.monotonic() - started < 0.3 + npu.KILLED_WAIT_S + 1.0
    finally:
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                kill_group(group, signal.SIGKILL)

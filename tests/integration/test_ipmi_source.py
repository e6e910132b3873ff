"""IpmiSource against real BMCs on 127.0.0.1: OpenIPMI ipmi_sim (SDR sensors, no DCMI) and the DCMI emulation."""

from __future__ import annotations

import logging
import signal
import socket
import time
from contextlib import ExitStack

import pytest

from collectors.ipmi import IpmiSource
from core.telemetry import Quality, SourceKind
from tests.factories import free_port
from tests.servers import require_binary
from tests.servers.ipmi.sim import PASSWORD, USER, dcmi_bmc, ipmi_sim

pytestmark = pytest.mark.integration


@pytest.fixture
def has_ipmi_sim():
    """Fail (never skip) where OpenIPMI's ipmi_sim is not installed; `make test` installs Debian openipmi."""
    require_binary("ipmi_sim", "openipmi")


@pytest.fixture
def sim_for(tmp_path, has_ipmi_sim):
    """Start ipmi_sim with an emu profile (tests/servers/ipmi/*.emu.in); stopped by its PID after the test."""
    with ExitStack() as stack:
        yield lambda profile, watts=450: stack.enter_context(ipmi_sim(tmp_path / profile, profile, watts))


def _source(target: str, password: str = PASSWORD, **kw) -> IpmiSource:
    # Generous bound: reads take milliseconds here, but a busy 2-core CI machine must not fail the first read, which
    # logs in and loads the whole SDR (about 25 requests).
    return IpmiSource(target, USER, password, "node-1", **{"timeout_s": 20.0, **kw})


def _read_until(source: IpmiSource, expected: float, within: float = 8.0) -> float | None:
    """Read until the power equals `expected` (ipmi_sim polls its file once a second)."""
    deadline, watts = time.monotonic() + within, None
    while time.monotonic() < deadline:
        samples = source.sample()
        watts = samples[0].power_watts if samples else None
        if watts == expected:
            break
        time.sleep(0.3)
    return watts


def test_sdr_fallback_reads_the_system_sensor_and_follows_it(sim_for, caplog):
    caplog.set_level(logging.INFO, logger="collectors.ipmi")
    sim = sim_for("system", 450)
    source = _source(sim.target)
    assert source.available() == (True, "")
    [sample] = source.sample()
    assert (sample.source, sample.device_id, sample.node_id) == (SourceKind.IPMI, "node", "node-1")
    assert (sample.power_watts, sample.quality, sample.power_limit_watts) == (450.0, Quality.OK, None)
    assert (source.method, source.sensors_used) == ("sdr", ["Power"])  # not the PSU or CPU sensors
    sim.set_polled_watts(1230)
    assert _read_until(source, 1230.0) == 1230.0
    no_dcmi = [r for r in caplog.records if "no DCMI" in r.getMessage()]
    assert len(no_dcmi) == 1, "DCMI must not be retried on every read"
    source.close()


def test_psu_sensors_are_summed_when_there_is_no_system_sensor(sim_for):
    sim = sim_for("psu", 450)
    source = _source(sim.target)
    [sample] = source.sample()
    assert (sample.power_watts, sample.quality) == (650.0, Quality.DERIVED)  # 450 + 200, CPU Power left out
    assert source.sensors_used == ["PSU1 Input Power", "PSU2 Input Power"]
    sim.set_sensor_watts(4, 300)  # PSU2 over the console: at once
    assert source.sample()[0].power_watts == 750.0
    sim.set_polled_watts(500)  # PSU1 from its polled file
    assert _read_until(source, 800.0) == 800.0
    source.close()


def test_wrong_password_is_unavailable_without_leaking_it(sim_for, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "Wr0ng-s3cret!"
    sim = sim_for("system")
    source = _source(sim.target, password=secret)
    ok, reason = source.available()
    assert not ok and "authentication failed" in reason
    started = time.monotonic()
    assert source.sample() == [] and time.monotonic() - started < 0.5  # backs off instead of hammering the BMC
    assert source.available() == (False, reason)
    for text in (reason, repr(source), str(source), caplog.text):
        assert secret not in text


def test_bmc_that_freezes_mid_session_is_bounded_then_recovers(sim_for):
    sim = sim_for("system", 450)
    source = _source(sim.target)
    assert source.sample()[0].power_watts == 450.0  # session and SDR loaded with the generous bound
    source.timeout_s, source.backoff_s = 1.0, 0.01
    sim.proc.send_signal(signal.SIGSTOP)
    try:
        for failures in (1, 2, 3):
            time.sleep(0.15)  # past the (jittered) backoff
            started = time.monotonic()
            assert source.sample() == [] and time.monotonic() - started < 2.0
            assert source.available()[0] is (failures < 3)
        assert "did not answer within 1 s" in source.available()[1] or "stalled" in source.available()[1]
    finally:
        sim.proc.send_signal(signal.SIGCONT)
    source.timeout_s = 20.0
    deadline, samples = time.monotonic() + 20, []
    while not samples and time.monotonic() < deadline:  # backoff, then a fresh session
        time.sleep(0.2)
        samples = source.sample()
    assert samples and samples[0].power_watts == 450.0 and source.available() == (True, "")
    source.close()


@pytest.mark.parametrize("listener", ["nothing", "black hole"])
def test_unreachable_bmc_is_unavailable_within_the_timeout(listener):
    hole = None
    if listener == "black hole":  # a socket that takes every packet and never answers: a stalled BMC
        hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        hole.bind(("127.0.0.1", 0))
    port = hole.getsockname()[1] if hole else free_port(socket.SOCK_DGRAM)
    source = _source(f"127.0.0.1:{port}", timeout_s=1.5)
    try:
        started = time.monotonic()
        ok, reason = source.available()
        assert time.monotonic() - started < 10
        assert not ok and f"127.0.0.1:{port}" in reason
        started = time.monotonic()
        assert source.sample() == [] and time.monotonic() - started < 0.5  # in backoff: no new attempt
    finally:
        if hole:
            hole.close()


def test_bmc_that_comes_up_later_is_picked_up(has_ipmi_sim, tmp_path):
    port = free_port(socket.SOCK_DGRAM)
    source = _source(f"127.0.0.1:{port}", timeout_s=10, backoff_s=0.05, max_backoff_s=0.5)
    ok, reason = source.available()  # pyghmi gives up on the login by itself after about 5 s
    assert not ok and "session setup timed out" in reason
    with ipmi_sim(tmp_path / "late", "system", 520, port=port):  # pyghmi must not hand back the failed session
        deadline, samples = time.monotonic() + 20, []
        while not samples and time.monotonic() < deadline:
            time.sleep(0.2)
            samples = source.sample()
        assert samples and samples[0].power_watts == 520.0 and source.available() == (True, "")
        source.close()


def test_dcmi_power_reading_follows_the_bmc(tmp_path):
    with dcmi_bmc(tmp_path / "dcmi", watts=777, limit_watts=900) as bmc:
        source = _source(bmc.target)
        assert source.available() == (True, "")
        [sample] = source.sample()
        assert (sample.power_watts, sample.power_limit_watts, sample.quality) == (777.0, 900.0, Quality.OK)
        assert (source.method, source.sensors_used) == ("dcmi", [])
        bmc.set_watts(812)
        assert source.sample()[0].power_watts == 812.0
        source.close()

"""IPMI source logic without a BMC: SDR sensor choice, DCMI parsing, failure handling (the IPMI settings are
tested in test_collector_settings.py)."""

from __future__ import annotations

import io
import struct
import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from pyghmi.exceptions import IpmiException

import collectors.__main__ as cli
from collectors import ipmi
from collectors.ipmi import IpmiSource
from collectors.ipmi_readings import PowerSensor, parse_dcmi_power_reading, select_power_sensors
from core.telemetry import Quality, SourceKind, TelemetrySample


# -- SDR sensor choice ----------------------------------------------------------------------------------
def _s(key: str, name: str, entity: str, unit: str = "W", compound: bool = False) -> PowerSensor:
    return PowerSensor(key, name, entity, unit, compound)


PSU1 = _s("32.10.0", "PS1 Input Power", "Power supply")
PSU2 = _s("32.11.0", "PS2 Input Power", "Power supply")
COMPONENTS = [
    _s("32.3.0", "CPU Power", "System board"),  # a component named on the system board
    _s("32.4.0", "GPU1 Power", "Add-in card"),
    _s("32.5.0", "PS1 Output Power", "Power supply"),
    _s("32.6.0", "PS1 Current", "Power supply", unit="A"),
    _s("32.7.0", "Energy", "System board", compound=True),  # W*h
]


def test_system_sensor_wins_over_psus():
    total = _s("32.2.0", "Pwr Consumption", "System board")
    assert select_power_sensors([PSU1, *COMPONENTS, total, PSU2]) == ([total], Quality.OK)


def test_several_psu_inputs_are_summed_and_components_left_out():
    assert select_power_sensors([PSU2, *COMPONENTS[1:], PSU1]) == ([PSU1, PSU2], Quality.DERIVED)
    assert select_power_sensors([PSU1, *COMPONENTS[1:]]) == ([PSU1], Quality.OK)


def test_total_named_sensor_is_preferred_and_vague_entities_need_a_node_name():
    vague_total = _s("32.9.0", "Total Power", "Unspecified")
    board = _s("32.8.0", "Power", "System board")
    assert select_power_sensors([board, vague_total]) == ([vague_total], Quality.OK)
    assert select_power_sensors([_s("32.9.0", "Power 3", "Unspecified"), PSU1]) == ([PSU1], Quality.OK)
    assert select_power_sensors(COMPONENTS) == ([], Quality.OK)


def test_numbered_supplies_of_no_clear_entity_are_summed_not_taken_one_for_the_node():
    """Regression: "PSUn Input Power" tagged Unspecified matched the node names ("input"), and one supply of two
    was read as the node's whole power."""
    supplies = [_s("32.50.0", "PSU1 Input Power", "Unspecified"), _s("32.51.0", "PSU_2 Input Power", "Other"),
                _s("32.52.0", "Power Supply 3 Input", "Unknown")]
    assert select_power_sensors(supplies[::-1]) == (supplies, Quality.DERIVED)
    lettered = [_s("32.60.0", "PSU-A Input Power", "Unspecified"), _s("32.61.0", "PSU B Input Power", "Unspecified")]
    assert select_power_sensors(lettered) == (lettered, Quality.DERIVED)
    total = _s("32.9.0", "Total PSU Input Power", "Unspecified")  # a total of the supplies is the node's
    assert select_power_sensors([*supplies, total]) == ([total], Quality.OK)


# -- DCMI -----------------------------------------------------------------------------------------------
def _dcmi(watts: int, state: int = 0x40, stamp: int = 0) -> bytes:
    return struct.pack("<BHHHHIIB", 0xDC, watts, watts, watts, watts, stamp, 1000, state)


def test_parse_dcmi_power_reading():
    assert parse_dcmi_power_reading(_dcmi(512)) == 512.0
    assert parse_dcmi_power_reading(_dcmi(512, state=0)) is None  # power measurement not active
    assert parse_dcmi_power_reading(_dcmi(0)) is None
    assert parse_dcmi_power_reading(b"\xdc\x01") is None


class FakeCmd:
    """Stands in for pyghmi's Command: DCMI reading as configured, SDR with two PSU sensors (PSU2 absent)."""

    def __init__(self, dcmi: bytes | None):
        self.dcmi, self.dcmi_calls = dcmi, 0
        self.ipmi_session = SimpleNamespace(broken=False, logout=lambda: None)  # what a session reset touches
        def psu(number: int, value: float | None) -> SimpleNamespace:
            reading = SimpleNamespace(value=value, unavailable=int(value is None))
            return SimpleNamespace(name=f"PSU{number - 2}", entity="Power supply", sensor_number=number, sensor_lun=0,
                                   baseunit="W", unit_mod="", percent="", decode_sensor_reading=lambda *_: reading)

        self.sdr = SimpleNamespace(sensors={"32.3.0": psu(3, 400.0), "32.4.0": psu(4, None)})

    def xraw_command(self, netfn, command, data=()):
        self.dcmi_calls += command == 0x02
        if self.dcmi is None:
            raise IpmiException("Invalid command", 0xC1)
        return {"data": self.dcmi if command == 0x02 else b"\xdc\x00\x00\x00\x84\x03"}

    def init_sdr(self):
        self.sdr_downloads = getattr(self, "sdr_downloads", 0) + 1
        return self.sdr

    def raw_command(self, netfn, command, rslun=0, data=()):
        return {"data": b"\x00\xc0\x00"}


def _with_cmd(cmd, **kw) -> IpmiSource:
    source = IpmiSource("bmc.example:6230", "admin", "hunter2", "n1", **kw)
    source._cmd = cmd
    return source


def _sessions_of(cmd: FakeCmd, monkeypatch: pytest.MonkeyPatch) -> list[FakeCmd]:
    """New sessions (after a reset) get `cmd` again; the list holds each one made."""
    made: list[FakeCmd] = []

    def command(**_login) -> FakeCmd:
        made.append(cmd)
        return cmd

    monkeypatch.setattr(ipmi, "_pyghmi", lambda: (command, SimpleNamespace(initting_sessions={})))
    return made


def test_dcmi_reading_and_limit():
    [sample] = _with_cmd(FakeCmd(_dcmi(612))).sample()
    assert (sample.power_watts, sample.power_limit_watts, sample.quality) == (612.0, 900.0, Quality.OK)


def test_a_dcmi_reading_the_bmc_stopped_updating_is_no_reading():
    """Regression: a BMC whose power meter hung kept answering its last value, marked active, and it was stored as a
    fresh reading for ever (the staleness checks never saw it)."""
    cmd = FakeCmd(_dcmi(612, stamp=1_000))
    source = _with_cmd(cmd, frozen_after_s=0.2, backoff_s=0)
    assert [s.power_watts for s in source.sample()] == [612.0]
    cmd.dcmi = _dcmi(615, stamp=1_001)  # the stamp moves: a live meter
    assert [s.power_watts for s in source.sample()] == [615.0]
    time.sleep(0.25)
    assert source.sample() == [] and "has not been updated" in source._reason  # the same stamp 0.25 s on
    cmd.dcmi = _dcmi(700, stamp=1_010)
    assert [s.power_watts for s in source.sample()] == [700.0]
    still = _with_cmd(FakeCmd(_dcmi(612)), frozen_after_s=0.0)  # a BMC that leaves its stamp at 0: not judged
    assert [s.power_watts for s in still.sample() + still.sample()] == [612.0, 612.0]


@pytest.mark.parametrize("dcmi", [None, _dcmi(612, state=0)], ids=["invalid command", "not active"])
def test_without_dcmi_sdr_is_used_and_dcmi_reprobed_only_later(dcmi, clock):
    cmd = FakeCmd(dcmi)
    source = _with_cmd(cmd, dcmi_reprobe_s=0.3)
    for _ in range(3):
        [sample] = source.sample()
        assert (sample.power_watts, sample.quality, sample.power_limit_watts) == (400.0, Quality.DERIVED, None)
    assert cmd.dcmi_calls == 1 and (source.method, source.sensors_used) == ("sdr", ["PSU1"])  # PSU2: no reading
    clock.advance(0.29)
    source.sample()
    assert cmd.dcmi_calls == 1
    clock.advance(0.01)
    source.sample()
    assert cmd.dcmi_calls == 2


def test_regression_a_passing_inactive_dcmi_reading_does_not_leave_dcmi_for_minutes():
    """A BMC reset answers "not active" for a few seconds: DCMI was given up for the reprobe time (10 min), and on a
    BMC without SDR power sensors each read downloaded the whole SDR again to find none."""
    cmd = FakeCmd(_dcmi(612))
    cmd.sdr = SimpleNamespace(sensors={})  # DCMI only
    source = _with_cmd(cmd, backoff_s=0)
    assert [s.power_watts for s in source.sample()] == [612.0]
    cmd.dcmi = _dcmi(612, state=0)
    source._failures = 7  # the timeouts of the reset's silence
    assert source.sample() == [] and "not active just now" in source._reason
    assert source._failures == 0 and source.available()[0]  # no failure, and the silence's backoff is over
    cmd.dcmi = _dcmi(640)
    assert [s.power_watts for s in source.sample()] == [640.0]  # tried again at the next read
    assert getattr(cmd, "sdr_downloads", 0) == 0


def test_a_dcmi_reading_inactive_past_the_grace_falls_back_to_the_sdr():
    """An admin switched DCMI power reading off on a BMC with PSU sensors: the SDR takes over after the grace."""
    cmd = FakeCmd(_dcmi(612))
    source = _with_cmd(cmd, backoff_s=0, dcmi_inactive_grace_s=0.2)
    assert [s.power_watts for s in source.sample()] == [612.0]
    time.sleep(0.25)  # a BMC reset: no answer for a while, then "not active" for its first answers
    cmd.dcmi = _dcmi(612, state=0)
    assert source.sample() == [] and "not active just now" in source._reason  # the grace counts from here
    time.sleep(0.25)
    [sample] = source.sample()
    assert (sample.power_watts, source.method) == (400.0, "sdr")


def test_a_dcmi_only_bmc_inactive_past_the_grace_keeps_asking_dcmi_with_the_usual_backoff(monkeypatch):
    cmd = FakeCmd(_dcmi(612))
    sessions = _sessions_of(cmd, monkeypatch)
    cmd.sdr = SimpleNamespace(sensors={})  # no power sensor to fall back to
    source = _with_cmd(cmd, backoff_s=0, dcmi_inactive_grace_s=0.0, dcmi_reprobe_s=600)
    assert [s.power_watts for s in source.sample()] == [612.0]
    cmd.dcmi = _dcmi(612, state=0)
    assert source.sample() == []  # past the grace: the SDR is read once, and has nothing
    assert source.sample() == [] and "no active DCMI power reading, and no node or PSU watts" in source._reason
    cmd.dcmi = _dcmi(650)
    assert [s.power_watts for s in source.sample()] == [650.0]  # not after a 10-minute reprobe
    assert cmd.sdr_downloads == 1 and len(sessions) == 1  # a new session: pyghmi keeps the old one's SDR


def test_an_sdr_without_power_sensors_is_downloaded_once_per_reprobe_time(monkeypatch, clock):
    cmd = FakeCmd(None)  # no DCMI
    _sessions_of(cmd, monkeypatch)
    cmd.sdr = SimpleNamespace(sensors={})
    source = _with_cmd(cmd, backoff_s=0, dcmi_reprobe_s=0.3)
    for _ in range(3):
        assert source.sample() == [] and "no node or PSU watts sensor" in source._reason
    assert cmd.sdr_downloads == 1
    clock.advance(0.29)
    source.sample()
    assert cmd.sdr_downloads == 1
    clock.advance(0.01)
    source.sample()
    assert cmd.sdr_downloads == 2


# -- failures -------------------------------------------------------------------------------------------
def test_repr_and_reasons_never_show_the_password():
    source = IpmiSource("10.0.0.9", "admin", "hunter2", "n1", backoff_s=0)
    assert "hunter2" not in repr(source) and "hunter2" not in str(source) and "10.0.0.9:623" in repr(source)
    assert source.label == "ipmi (10.0.0.9:623)"

    def leaky():
        raise OSError("cannot log in with hunter2")

    source._read = leaky
    ok, reason = source.available()
    assert not ok and "hunter2" not in reason and "***" in reason


def test_wrong_password_is_authentication_failed_and_backs_off_long():
    source = IpmiSource("10.0.0.9", "admin", "hunter2", "n1")

    def refused():
        raise IpmiException("Incorrect password provided")

    source._read = refused
    ok, reason = source.available()
    assert not ok and reason.startswith("authentication failed")
    assert source._next_try - time.monotonic() > 100  # no password guessing loop that locks the account


def test_a_read_that_logs_in_first_may_take_longer_than_a_round_cut_limit():
    """Regression (review): with the limit cut to a short round's (a 2-s read_timeout: 1.6 s), a BMC whose login
    takes longer timed out, and its half-made session was dropped, at every try."""
    source = IpmiSource("10.0.0.9", "admin", "pw", "n1", timeout_s=0.1, backoff_s=0)
    reading = TelemetrySample.reading(timestamp=datetime.now(UTC), node_id="n1", source=SourceKind.IPMI,
                                      device_id="node", power_watts=500.0)

    def slow_login() -> TelemetrySample:
        time.sleep(0.3)  # the login
        source._cmd = FakeCmd(None)
        return reading

    source._read = slow_login
    assert source.sample() == [reading]
    source._read = lambda: time.sleep(0.3) or reading  # on the session: the cut limit holds
    assert source.sample() == [] and "did not answer within 0.1 s" in source._reason


def test_a_stalled_bmc_is_bounded_and_never_piles_up_threads():
    release = threading.Event()
    source = IpmiSource("10.0.0.9", "admin", "pw", "n1", timeout_s=0.2, backoff_s=0, login_timeout_s=0.2)
    source._read = lambda: release.wait(10)
    started = time.monotonic()
    ok, reason = source.available()
    assert time.monotonic() - started < 1 and not ok and "did not answer within 0.2 s" in reason
    assert source.sample() == [] and "still stalled" in source._reason  # no second thread while one hangs
    release.set()


class SlowSdrCmd(FakeCmd):
    """A BMC without DCMI whose sensor repository takes `seconds` to download (a real one: tens of seconds)."""

    def __init__(self, seconds: float):
        super().__init__(None)
        self.seconds, self.broken = seconds, False
        self.ipmi_session = self

    def init_sdr(self):
        time.sleep(self.seconds)
        return self.sdr

    def logout(self):
        pass


def test_the_first_sdr_download_may_outlast_the_read_timeout_without_failing():
    """Regression: the first read of a BMC without DCMI downloads its SDR; it got the 5 s of any read, so on a real
    BMC it timed out, the session was dropped, and the next read started the download over: never a reading."""
    cmd = SlowSdrCmd(0.6)
    source = _with_cmd(cmd, timeout_s=0.1, backoff_s=0)
    assert source.sample() == [] and "downloading its sensor repository" in source._reason
    assert source.available()[0] is False and source._failures == 0 and not cmd.broken
    time.sleep(0.7)
    [sample] = source.sample()
    assert (sample.power_watts, source._failures) == (400.0, 0)


def test_the_once_command_waits_for_a_first_sdr_download(monkeypatch):
    """`python -m collectors --once --sources ipmi` asked a BMC without DCMI once: its SDR download outlasts the
    read timeout, so the command said "unavailable" and exited 1 on every run (nothing is kept between runs)."""
    monkeypatch.setattr(cli, "POLL_S", 0.05)
    err = io.StringIO()
    samples, answered = cli._collect([_with_cmd(SlowSdrCmd(0.5), timeout_s=0.1, backoff_s=0)], err, wait_s=5.0)
    assert answered == 1 and [sample.power_watts for sample in samples] == [400.0]
    assert "downloading its sensor repository (SDR) for the first read" in err.getvalue()
    assert "waiting up to 5 s (--wait)" in err.getvalue()
    err = io.StringIO()
    assert cli._collect([_with_cmd(SlowSdrCmd(0.5), timeout_s=0.1, backoff_s=0)], err, wait_s=0.0) == ([], 0)
    assert "unavailable: BMC bmc.example:6230: downloading its sensor repository" in err.getvalue()


def test_an_sdr_download_is_given_up_after_its_own_limit():
    cmd = SlowSdrCmd(2.0)
    source = _with_cmd(cmd, timeout_s=0.1, backoff_s=0, sdr_load_timeout_s=0.3)
    assert source.sample() == [] and source._failures == 0
    time.sleep(0.35)
    assert source.sample() == [] and source._failures == 1 and cmd.broken  # dropped as any stalled session
    assert "did not finish sending its sensor repository (SDR) within 0.3 s" in source._reason


def test_unavailable_only_after_repeated_failures_once_it_worked():
    source = IpmiSource("10.0.0.9", "admin", "pw", "n1", backoff_s=0, max_failures=3)
    good = source._sample(300.0, Quality.OK, None)
    source._read = lambda: good
    assert source.sample() == [good] and source.available() == (True, "")

    def down():
        raise OSError("network unreachable")

    source._read = down
    for failures in (1, 2, 3):
        assert source.sample() == []
        assert source.available()[0] is (failures < 3)
    assert "network unreachable" in source.available()[1]
    source._read = lambda: good
    assert source.sample() == [good] and source.available() == (True, "")


def test_a_read_under_way_for_a_status_probe_is_neither_a_failure_nor_a_stall():
    """A status probe (before the first good read) and the sampling round met: the round dropped the probe's healthy
    session as stalled and both counted a failure."""
    source = IpmiSource("10.0.0.9", "admin", "pw", "n1", timeout_s=2.0, backoff_s=0)
    good = source._sample(300.0, Quality.OK, None)
    resets: list[int] = []
    source._reset = lambda: resets.append(1)

    entered, release = threading.Event(), threading.Event()

    def slow_read():
        entered.set()
        release.wait(5)
        return good

    source._read = slow_read
    probe = threading.Thread(target=source.available)
    probe.start()
    assert entered.wait(5)  # the probe's read is under way
    ok, reason = source.available()
    assert not ok and reason.endswith("a read is under way")
    assert source.sample() == [] and "a read is under way" in source._reason
    release.set()
    probe.join(timeout=5)
    assert source._failures == 0 and resets == [] and source.sample() == [good]


def test_a_sensor_the_bmc_no_longer_has_is_looked_up_in_a_new_sessions_sdr(monkeypatch):
    """pyghmi keeps a session's SDR: after a firmware update renumbered the sensors, the stale entry was read on
    every read ("sensor not present") until the session broke for another reason."""
    cmd = FakeCmd(None)
    sessions = _sessions_of(cmd, monkeypatch)
    source = _with_cmd(cmd, backoff_s=0)
    cmd.raw_command = lambda **_kw: {"error": "Requested sensor, data, or record not present", "code": 0xCB}
    assert source.sample() == [] and "not present" in source._reason
    assert source._cmd is None  # the session is dropped: the next read downloads the SDR anew
    del cmd.raw_command
    assert [s.power_watts for s in source.sample()] == [400.0] and len(sessions) == 1


def test_an_empty_psu_bay_answering_not_present_is_skipped_and_the_sdr_kept(monkeypatch):
    """Regression: a BMC answers "not present" (0xCB) for an empty PSU bay's input sensor; that was taken for a
    changed SDR: the read failed, the SDR was downloaded again at every retry, and the node never got a reading."""
    cmd = FakeCmd(None)
    sessions = _sessions_of(cmd, monkeypatch)
    source = _with_cmd(cmd, backoff_s=0)

    def raw_command(netfn, command, rslun=0, data=()):
        if data == (4,):  # PSU2's bay is empty
            return {"error": "Requested sensor, data, or record not present", "code": 0xCB}
        return {"data": b"\x00\xc0\x00"}

    cmd.raw_command = raw_command
    for _ in range(3):
        assert [s.power_watts for s in source.sample()] == [400.0], source._reason
    assert cmd.sdr_downloads == 1 and sessions == [] and source.sensors_used == ["PSU1"]


def test_a_sensor_that_was_present_and_is_not_any_more_has_the_sdr_read_again_once(monkeypatch):
    """A firmware update may renumber the sensors: one of two read "not present" would under-report the node by half
    without a word. That read is none (the other's alone is not the node's power); the SDR is read anew once, and an
    absence it confirms stays."""
    cmd = FakeCmd(None)
    sessions = _sessions_of(cmd, monkeypatch)
    source = _with_cmd(cmd, backoff_s=0)
    gone: set[int] = set()

    def raw_command(netfn, command, rslun=0, data=()):
        if data[0] in gone:
            return {"error": "Requested sensor, data, or record not present", "code": 0xCB}
        return {"data": b"\x00\xc0\x00"}

    cmd.raw_command = raw_command
    cmd.sdr.sensors["32.4.0"].decode_sensor_reading = lambda *_: SimpleNamespace(value=300.0, unavailable=0)
    assert [s.power_watts for s in source.sample()] == [700.0] and cmd.sdr_downloads == 1
    gone.add(3)  # PSU1, read until now
    assert source.sample() == [] and "PSU1" in source._reason
    assert cmd.sdr_downloads == 1 and source._cmd is None  # the next read downloads the SDR again
    assert [s.power_watts for s in source.sample()] == [300.0] and source.sensors_used == ["PSU2"]
    for _ in range(3):
        source.sample()
    assert cmd.sdr_downloads == 2 and len(sessions) == 1  # once: the fresh SDR's absence is an empty bay


def test_a_bmc_down_for_days_keeps_its_backoff(monkeypatch):
    """Regression: the doubling backoff overflowed a float after 1,024 failures in a row (days of a BMC down or a
    wrong password): every round then started a read and logged a traceback."""
    source = IpmiSource("10.0.0.9", "admin", "hunter2", "n1", backoff_s=1.0, max_backoff_s=300.0)
    source._failures = 5000
    source._fail(ConnectionError("no route to host"))
    assert 150 <= source._next_try - time.monotonic() <= 300


def test_the_first_refused_login_after_timeouts_waits_as_a_first_refusal():
    source = IpmiSource("10.0.0.9", "admin", "hunter2", "n1", max_backoff_s=300.0)
    for _ in range(5):
        source._fail(TimeoutError("BMC did not answer"))
    source._fail(IpmiException("Incorrect password provided"))
    assert 150 <= source._next_try - time.monotonic() <= 300


def test_refused_logins_back_off_to_an_hour(monkeypatch):
    """A BMC that locks an account after failed logins: retries every 150-300 s were ~290 failed logins a day."""
    source = IpmiSource("10.0.0.9", "admin", "hunter2", "n1", max_backoff_s=300.0)
    waits = []
    for _ in range(6):
        source._fail(IpmiException("Incorrect password provided"))
        waits.append(source._next_try - time.monotonic())
    assert 150 <= waits[0] <= 300 and 1800 <= waits[-1] <= 3600


@pytest.mark.parametrize(("username", "password"), [("ADMIN", "ADMIN"), ("admin", "p")])
def test_reasons_never_hint_at_a_password(username, password):
    """Regression: the password was replaced anywhere in the reason, user and sensor names too: with the user as the
    password (a common factory default) the reason said user '***'; a password "p" marked every p of the text."""
    source = IpmiSource("10.0.0.9", username, password, "n1")
    source._fail(IpmiException("Incorrect password provided"))
    assert "***" not in source._reason and username not in source._reason
    source._fail(LookupError("sensor 'PSU2 Input' not present"))
    assert source._reason.endswith("sensor 'PSU2 Input' not present")
    source._fail(OSError(f"login as {username} with {password} refused"))
    assert password not in source._reason.split("with ")[1]


def test_a_busy_bmc_is_asked_again_after_the_backoff_not_taken_for_one_without_dcmi_or_with_a_new_sdr(monkeypatch):
    """Regression: a "node busy" (0xC0) answer to DCMI was read as DCMI not offered (summed PSU sensors for the
    next 10 minutes, after a whole SDR download), and to a sensor read as a changed SDR (downloaded again)."""
    cmd = FakeCmd(_dcmi(612))
    made = _sessions_of(cmd, monkeypatch)
    source = _with_cmd(cmd, backoff_s=0)
    assert [s.power_watts for s in source.sample()] == [612.0]
    dcmi = cmd.dcmi
    cmd.dcmi = None
    cmd.xraw_command = lambda netfn, command, data=(): (_ for _ in ()).throw(IpmiException("Node busy", 0xC0))
    assert source.sample() == [] and "busy" in source._reason and source._failures == 1
    assert source._dcmi_retry_at == 0.0 and getattr(cmd, "sdr_downloads", 0) == 0 and made == []
    del cmd.xraw_command
    cmd.dcmi = dcmi
    assert [s.power_watts for s in source.sample()] == [612.0]

    source._limit_at = -1e9  # the limit is due for a refresh, and that answer alone is busy: the reading stands
    limit_busy = cmd.xraw_command

    def busy_for_the_limit(netfn, command, data=()):
        if command == 0x03:
            raise IpmiException("Node busy", 0xC0)
        return limit_busy(netfn, command, data)

    cmd.xraw_command = busy_for_the_limit
    [sample] = source.sample()
    assert (sample.power_watts, sample.power_limit_watts, source._failures) == (612.0, 900.0, 0)
    del cmd.xraw_command

    sdr = FakeCmd(None)
    made = _sessions_of(sdr, monkeypatch)
    source = _with_cmd(sdr, backoff_s=0)
    assert [s.power_watts for s in source.sample()] == [400.0]
    sdr.raw_command = lambda netfn, command, rslun=0, data=(): {"error": "Node busy", "code": 0xC0}
    assert source.sample() == [] and "busy" in source._reason and source._sdr is not None and made == []
    del sdr.raw_command
    assert [s.power_watts for s in source.sample()] == [400.0] and sdr.sdr_downloads == 1


def test_a_psu_that_read_and_then_gives_no_reading_has_the_sdr_read_again_once(monkeypatch):
    """A present sensor whose reading turned unavailable was left out of the sum without a word (still listed as
    used, quality unchanged): the SDR is read anew once, and what that fresh SDR cannot read counts as an empty bay."""
    cmd = FakeCmd(None)
    _sessions_of(cmd, monkeypatch)
    source = _with_cmd(cmd, backoff_s=0)
    psu2 = cmd.sdr.sensors["32.4.0"]
    psu2.decode_sensor_reading = lambda *_: SimpleNamespace(value=300.0, unavailable=0)
    assert [s.power_watts for s in source.sample()] == [700.0]
    psu2.decode_sensor_reading = lambda *_: SimpleNamespace(value=None, unavailable=1)
    assert source.sample() == [] and "PSU2" in source._reason  # not PSU1's 400 W alone, read as a drop
    assert source._cmd is None and source._failures == 0  # the next read downloads the SDR again, at once
    assert [s.power_watts for s in source.sample()] == [400.0] and source.sensors_used == ["PSU1"]  # an empty bay now
    for _ in range(3):
        source.sample()
    assert cmd.sdr_downloads == 2


def test_a_bmc_that_fails_only_the_limit_query_keeps_its_readings(clock):
    """Only a busy answer to Get Power Limit was tolerated: a BMC that fails that one query (here pyghmi's error
    after its retries, at once) lost the reading just parsed, counted a failure and had its session reset, and the
    next read asked again: no reading from that node ever. Now the reading stands, and the limit is asked again only
    after its refresh."""
    cmd = FakeCmd(_dcmi(612))
    source = _with_cmd(cmd, backoff_s=0)
    reading = cmd.xraw_command
    limit_asks: list[int] = []

    def limit_dropped(netfn, command, data=()):
        if command == 0x03:
            limit_asks.append(command)
            raise IpmiException("timeout", 0xFFFF)
        return reading(netfn, command, data)

    cmd.xraw_command = limit_dropped
    for _ in range(3):
        assert [s.power_watts for s in source.sample()] == [612.0], source._reason
    assert source._failures == 0 and source._cmd is cmd and len(limit_asks) == 1  # asked once
    clock.advance(source.limit_refresh_s)
    assert [s.power_watts for s in source.sample()] == [612.0] and len(limit_asks) == 2
    del cmd.xraw_command
    clock.advance(source.limit_refresh_s)
    [sample] = source.sample()
    assert sample.power_limit_watts == 900.0


def test_a_bay_empty_at_the_first_read_whose_supply_reads_later_is_a_supply_from_then_on(monkeypatch, clock):
    """The empty bays were fixed at the SDR's first read: a PSU without a reading then (a BMC just reset) that read
    later and then stopped again was left out of the sum without a word (1,000 W, then 500 W read as the node's)."""
    cmd = FakeCmd(None)
    _sessions_of(cmd, monkeypatch)
    source = _with_cmd(cmd, backoff_s=0)
    psu2 = cmd.sdr.sensors["32.4.0"]  # no reading at the first read (FakeCmd)
    assert [s.power_watts for s in source.sample()] == [400.0]
    psu2.decode_sensor_reading = lambda *_: SimpleNamespace(value=300.0, unavailable=0)
    assert [s.power_watts for s in source.sample()] == [700.0]
    psu2.decode_sensor_reading = lambda *_: SimpleNamespace(value=None, unavailable=1)
    assert source.sample() == [] and "PSU2" in source._reason  # a gap, not PSU1's 400 W read as the node's
    assert [s.power_watts for s in source.sample()] == [400.0] and cmd.sdr_downloads == 2  # read again: empty


def test_a_flapping_supply_has_the_sdr_read_again_at_most_once_per_window(monkeypatch, clock):
    """Every silence of a supply that read before had the whole SDR downloaded again (hundreds of requests, tens of
    seconds without a reading on a real BMC), with no backoff: a flapping sensor had it downloaded at every flap.
    Within SDR_REREAD_MIN_S of the last such download a silence is a gap, with no new download."""
    cmd = FakeCmd(None)
    _sessions_of(cmd, monkeypatch)
    source = _with_cmd(cmd, backoff_s=0)
    psu2 = cmd.sdr.sensors["32.4.0"]
    reads = SimpleNamespace(value=300.0, unavailable=0)
    silent = SimpleNamespace(value=None, unavailable=1)
    psu2.decode_sensor_reading = lambda *_: reads
    assert [s.power_watts for s in source.sample()] == [700.0]
    psu2.decode_sensor_reading = lambda *_: silent
    assert source.sample() == [] and cmd.sdr_downloads == 1  # the first silence: downloaded again at the next read
    psu2.decode_sensor_reading = lambda *_: reads
    assert [s.power_watts for s in source.sample()] == [700.0] and cmd.sdr_downloads == 2
    for _ in range(3):  # flapping: gaps and readings, no download
        psu2.decode_sensor_reading = lambda *_: silent
        assert source.sample() == [] and "gap" in source._reason
        psu2.decode_sensor_reading = lambda *_: reads
        assert [s.power_watts for s in source.sample()] == [700.0]
    assert cmd.sdr_downloads == 2 and source._failures == 0
    clock.advance(ipmi.SDR_REREAD_MIN_S)
    psu2.decode_sensor_reading = lambda *_: silent
    assert source.sample() == [] and source._cmd is None  # past the window: read again
    assert [s.power_watts for s in source.sample()] == [400.0] and cmd.sdr_downloads == 3


def test_a_source_s_text_names_neither_its_user_nor_its_password():
    """The user was in repr() and str(): BMCs often ship with the user as the password (ADMIN/ADMIN)."""
    source = IpmiSource("bmc.example:6230", "ADMIN", "ADMIN", "n1")
    assert "ADMIN" not in repr(source) and "ADMIN" not in str(source) and "bmc.example:6230" in repr(source)


def test_a_limit_query_that_hangs_ends_one_read_not_every_read(monkeypatch):
    """A Get Power Limit left unanswered past the read's timeout ends that read (its session dropped); the limit
    counts as asked, so the next reads take the power reading without asking it again until its refresh."""
    cmd = FakeCmd(_dcmi(612))
    _sessions_of(cmd, monkeypatch)
    source = _with_cmd(cmd, backoff_s=0, timeout_s=0.2)
    reading, released, asked = cmd.xraw_command, threading.Event(), []

    def limit_hangs(netfn, command, data=()):
        if command == 0x03:
            asked.append(command)
            released.wait(5)
            raise IpmiException("timeout", 0xFFFF)
        return reading(netfn, command, data)

    cmd.xraw_command = limit_hangs
    assert source.sample() == [] and "did not answer" in source._reason  # this read ended in the limit query
    released.set()
    for _ in range(250):  # the stalled request ends once released
        if not source._call.busy:
            break
        time.sleep(0.02)
    source._next_try = 0.0
    assert [s.power_watts for s in source.sample()] == [612.0] and len(asked) == 1, source._reason

"""BMC wall power over IPMI-over-LAN (RMCP+, pyghmi): DCMI Get Power Reading, else SDR watts sensors.

Every BMC exchange runs in a worker thread under a hard timeout, so a stalled BMC never blocks the caller.
A DCMI reading whose BMC time stamp has stopped moving (firmware that hung on its last value) is refused as no
reading after `frozen_after_s`, so a frozen node power never looks fresh.
Failures back off exponentially (with jitter); credentials never appear in logs, reprs or reasons. What the
BMC's answers mean (DCMI parsing, the SDR sensor choice) is in collectors/ipmi_readings.py.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

from collectors.base import TelemetrySource
from collectors.ipmi_readings import (
    FrozenReading,
    PowerSensor,
    dcmi_timestamp,
    parse_dcmi_power_limit,
    parse_dcmi_power_reading,
    select_power_sensors,
)
from collectors.settings import parse_bmc_target
from core.bounded import BoundedCall, StillRunning
from core.telemetry import Quality, SourceKind, TelemetrySample

log = logging.getLogger(__name__)

_AUTH = re.compile(r"password|unauthori[sz]ed|integrity check|integrity code|privilege", re.I)
NOT_PRESENT = 0xCB  # IPMI completion code: requested sensor, data or record not present
# completion codes of a BMC that cannot answer just now (node busy, timeout while processing, out of space, response
# could not be provided, duplicate request, SDR in update mode, firmware update mode, initialization in progress)
BUSY_CODES = frozenset({0xC0, 0xC3, 0xC4, 0xCE, 0xCF, 0xD0, 0xD1, 0xD2})
AUTH_MAX_BACKOFF_S = 3600.0  # refused logins are retried at most this far apart (doubling from max_backoff_s)
# a supply that stops reading this soon after the last SDR download its silence caused (a flapping sensor) is a gap,
# with no new download: each one costs the BMC hundreds of requests and the node tens of seconds without a reading
SDR_REREAD_MIN_S = 120.0


def _pyghmi() -> tuple[Any, Any]:
    """pyghmi's Command class and Session class, with its lost-wakeup race fixed once per process.

    pyghmi 1.6 registers a caller's wait only after sending; a reply that lands in between is queued but nobody is
    woken, so the caller sleeps until the 0.5-1 s retransmit timer (on loopback most requests; the first SDR load
    then takes 10-20 s). The replacement registers the wait and then wakes at once if a reply is already queued.
    """
    from pyghmi.ipmi import command
    from pyghmi.ipmi.private import session as ps

    original = ps._io_wait
    needed = ("ioqueue", "iosockets", "myself", "selectdeadline", "sessionqueue", "_monotonic_time")
    if not getattr(original, "fixed", False) and all(hasattr(ps, name) for name in needed):  # else: pyghmi changed

        def io_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
            if evq is not None:  # waiting for another thread's command: unchanged
                return original(timeout, myaddr, evq)
            evt, deadline = threading.Event(), timeout + ps._monotonic_time()
            ps.ioqueue.append((deadline, evt, myaddr))
            handlers = list(ps.Session.bmc_handlers.get(myaddr, {}).values()) if myaddr else []
            if ps.sessionqueue if myaddr is None else any(s.pktqueue for s in handlers):
                evt.set()
            elif deadline < ps.selectdeadline:  # wake the I/O thread so it honours the earlier deadline
                ps.iosockets[0].sendto(b"\x01", (ps.myself, ps.iosockets[0].getsockname()[1]))
            evt.wait()

        io_wait.fixed = True
        ps._io_wait = io_wait
    return command.Command, ps.Session


class ReadUnderWay(RuntimeError):
    """A read of the BMC is under way and not late yet (a status probe's, say): no reading now, and no failure."""


class SdrLoading(ReadUnderWay):
    """The BMC's sensor repository is still downloading (the first SDR read): no reading yet, and no failure."""


class DcmiInactive(ReadUnderWay):
    """The BMC's DCMI power reading is marked not active soon after it measured (a reset): no reading now, and no
    failure (no backoff); DCMI is asked again at the next read."""


class SupplyChanged(ReadUnderWay):
    """A power supply sensor that read before gave no reading: no reading now (the others' sum is not the node's
    power), and no failure; the SDR is read anew at the next read."""


class BmcBusy(LookupError):
    """The BMC answered that it cannot answer just now: no reading, backed off as a failure, with the session and
    the sensor choice kept (DCMI is not taken for unsupported, nor the SDR read anew)."""


class IpmiSource(TelemetrySource):
    """Wall power of one node from its BMC (device_id "node")."""

    kind = SourceKind.IPMI

    def __init__(self, target: str | tuple[str, int], username: str, password: str, node_id: str, *,
                 timeout_s: float = 5.0, max_failures: int = 3, backoff_s: float = 1.0, max_backoff_s: float = 300.0,
                 dcmi_reprobe_s: float = 600.0, limit_refresh_s: float = 60.0, min_interval_s: float = 1.0,
                 frozen_after_s: float = 300.0, sdr_load_timeout_s: float = 300.0,
                 dcmi_inactive_grace_s: float = 60.0, login_timeout_s: float = 5.0) -> None:
        self.host, self.port = parse_bmc_target(target) if isinstance(target, str) else target
        self.username, self.node_id, self.label = username, node_id, f"ipmi ({self.host}:{self.port})"
        self.__password = password
        self.timeout_s, self.max_failures, self.min_interval_s = timeout_s, max_failures, min_interval_s
        # a read that logs in first may take longer than `timeout_s` (a collector's round may cut that short): a slow
        # BMC's login would otherwise time out, and its session be dropped, every time
        self.login_timeout_s = max(timeout_s, login_timeout_s)
        self.sdr_load_timeout_s, self.dcmi_inactive_grace_s = sdr_load_timeout_s, dcmi_inactive_grace_s
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.dcmi_reprobe_s, self.limit_refresh_s = dcmi_reprobe_s, limit_refresh_s
        self.method: str | None = None  # "dcmi" or "sdr", as of the last good read
        self.sensors_used: list[str] = []  # SDR sensor names summed or read by the last SDR read
        self._cmd: Any = None
        self._sdr: tuple[list[Any], Quality] | None = None  # chosen SDR entries and their quality
        # the chosen sensors (lun, number) without a reading at the SDR's first read and none since: empty bays
        self._absent: frozenset[tuple[int, int]] | None = None
        self._sdr_reread_at = float("-inf")  # monotonic time a supply's silence last had the SDR read again
        self._sdr_loading_since: float | None = None  # monotonic start of an SDR download under way
        self._dcmi_retry_at = 0.0  # monotonic time from which DCMI is tried (again)
        self._dcmi_measured = False  # DCMI gave a reading on this BMC: a later "not active" is a passing gap, a while
        self._dcmi_inactive_since: float | None = None  # the first "not active" answer of the gap now
        self._no_sdr_power_until = 0.0  # the SDR held no power sensor: not downloaded again before then
        self._limit: float | None = None
        self._limit_at = float("-inf")
        self._frozen = FrozenReading(frozen_after_s)  # a DCMI reading the BMC stopped updating is no reading
        self._call = BoundedCall(f"ipmi-{self.host}")
        self._failures, self._ever_ok = 0, False
        self._refusals = 0  # logins refused in a row (a wrong user or password): none once a read succeeds
        self._next_try, self._reason = 0.0, ""

    def __repr__(self) -> str:
        # the user is not named: where it equals the password (a common BMC default), naming it would tell it
        return f"IpmiSource(target='{self.host}:{self.port}', node_id={self.node_id!r})"

    __str__ = __repr__

    def available(self) -> tuple[bool, str]:
        if not self._ever_ok and not self._refusals and time.monotonic() >= self._next_try:
            self._attempt()  # never read yet: probe once (bounded by timeout_s), unless a read is under way
        if self._sdr_loading_since is not None or (not self._ever_ok and self._call.busy):
            return False, self._reason or "the first read is under way"
        if self._refusals or (self._failures and (not self._ever_ok or self._failures >= self.max_failures)):
            return False, self._reason
        return True, ""

    @property
    def first_read_under_way(self) -> bool:
        """Whether it has never read yet and its first read is still under way (a BMC sending its sensor repository
        takes tens of seconds): asked again later, it may be available."""
        return not self._ever_ok and not self._failures and (self._sdr_loading_since is not None or self._call.busy)

    def sample(self) -> list[TelemetrySample]:
        if time.monotonic() < self._next_try:
            return []  # backing off after a failure
        reading = self._attempt()
        return [reading] if reading else []

    def close(self) -> None:
        self._reset()
        self._sdr = None

    def _reset(self) -> None:
        """Drop the session; pyghmi shares sessions per BMC and user, so mark it broken to never get it back."""
        cmd, self._cmd = self._cmd, None
        if cmd is not None:
            cmd.ipmi_session.broken = True  # never handed out again; the logout below ends pyghmi's waits on it
            # log out in the background: a dead BMC must not hold anything up
            threading.Thread(target=self._quietly, args=(cmd.ipmi_session.logout,), daemon=True).start()

    # -- one bounded read ---------------------------------------------------------------------------------
    def _attempt(self) -> TelemetrySample | None:
        try:
            reading = self._bounded(self._read)
        except ReadUnderWay as loading:  # no failure: the next read finds it finished, or still under way
            self._reason = str(loading)
            if isinstance(loading, DcmiInactive):  # the BMC answers again: the backoff of its silence is over
                self._failures = 0
            return None
        except Exception as err:  # every failure becomes a reason
            self._fail(err)
            return None
        self._failures, self._ever_ok, self._refusals, self._reason = 0, True, 0, ""
        return reading

    def _bounded(self, fn: Any) -> Any:
        """`fn()` in the worker thread within `timeout_s` (`login_timeout_s` where it logs in first). The first SDR
        download, hundreds of requests that take a real BMC tens of seconds, is no stall: it is left to finish in its
        thread (SdrLoading) for up to `sdr_load_timeout_s`, and only then is the session dropped as for any stall."""
        limit = self._limit_s()
        try:
            return self._call.run(fn, limit)
        except (StillRunning, TimeoutError) as err:
            if isinstance(err, StillRunning):  # none started: the one under way is an earlier call, with its limit
                limit = self._call.limit_s or limit
            loading_since = self._sdr_loading_since
            if loading_since is not None:
                if time.monotonic() - loading_since < self.sdr_load_timeout_s:
                    raise SdrLoading(f"BMC {self.host}:{self.port}: downloading its sensor repository (SDR) for the "
                                     f"first read, {time.monotonic() - loading_since:.0f} s so far") from None
                self._reset()
                raise TimeoutError(f"BMC {self.host}:{self.port} did not finish sending its sensor repository (SDR) "
                                   f"within {self.sdr_load_timeout_s:g} s") from None
            if isinstance(err, StillRunning):
                if self._call.running_for() < limit:  # another caller's read, not late: no stall
                    raise ReadUnderWay(f"BMC {self.host}:{self.port}: a read is under way") from None
                self._reset()  # stalled past its limit: the session dropped (broken, logged out in the background)
                raise TimeoutError(f"BMC {self.host}:{self.port}: an earlier request is still stalled") from None
            self._reset()
            raise TimeoutError(f"BMC {self.host}:{self.port} did not answer within {limit:g} s") from None

    def _limit_s(self) -> float:
        """How long the read under way may take: longer while it must log in first."""
        return self.login_timeout_s if self._cmd is None else self.timeout_s

    def _fail(self, err: Exception) -> None:
        self._failures += 1
        raw = str(err) if err.args and err.args[0] else "no answer (session setup timed out)"
        text = self._redacted(raw)
        exponent = min(self._failures - 1, 30)  # past every cap; 2 ** 1024 would overflow a float
        delay, cap = self.backoff_s * 2 ** exponent, self.max_backoff_s
        if _AUTH.search(raw):  # BMCs lock accounts after failed logins: the longest wait, doubling at each refusal
            self._refusals, self._cmd = self._refusals + 1, None
            delay = self.max_backoff_s * 2 ** min(self._refusals - 1, 30)
            cap = max(self.max_backoff_s, AUTH_MAX_BACKOFF_S)
            # the user is not named: where it equals the password, naming it would tell the password
            text = f"authentication failed on {self.host}:{self.port} (check the BMC user and password)"
        elif not isinstance(err, TimeoutError):  # timeouts name the BMC and reset the session already
            if not isinstance(err, LookupError):  # a session error, not a missing sensor
                self._reset()
            text = f"BMC {self.host}:{self.port}: {text}"
        self._next_try = time.monotonic() + min(cap, delay) * random.uniform(0.5, 1.0)
        self._reason = text
        log.warning("IPMI read of %s failed (%d in a row): %s", self.node_id, self._failures, self._reason)

    def _redacted(self, text: str) -> str:
        """`text` with the password, where it stands as a token of its own, as ***: only whole tokens, so a short
        password never marks the letters it shares with sensor names (which would tell it)."""
        if not self.__password:
            return text
        return re.sub(rf"(?<!\w){re.escape(self.__password)}(?!\w)", "***", text)

    # -- inside the worker thread -------------------------------------------------------------------------
    def _read(self) -> TelemetrySample:
        if self._cmd is None:
            command, session = _pyghmi()
            # pyghmi 1.6 never drops its per-BMC "login in progress" entry (str key, bytes on delete), so after one
            # failed login every new Command would get that dead session back: forget it before logging in again.
            session.initting_sessions.pop((self.host, self.username, self.__password, self.port, None), None)
            self._cmd = command(bmc=self.host, userid=self.username, password=self.__password, port=self.port)
        cmd, now = self._cmd, time.monotonic()
        if now >= self._dcmi_retry_at:
            reading = self._dcmi(cmd, 0x02, (0xDC, 0x01, 0x00, 0x00),
                                 lambda data: (parse_dcmi_power_reading(data), dcmi_timestamp(data)))
            watts, stamp = reading or (None, None)
            if watts is None and reading is not None and self._dcmi_measured:
                # answered, not active, by a BMC that measured before (e.g. just reset: its first answers after the
                # reset): DCMI is asked again at the next read for a grace counted from the first such answer;
                # meanwhile the SDR's sensors where they are known, and after the grace the SDR as without DCMI
                if self._dcmi_inactive_since is None:
                    self._dcmi_inactive_since = now
                since = self._dcmi_inactive_since
                if now - since < self.dcmi_inactive_grace_s:
                    if self._sdr is None:
                        raise DcmiInactive(f"BMC {self.host}:{self.port}: its DCMI power reading is not active just "
                                           f"now ({now - since:.0f} s so far; it was before)")
                    return self._read_sdr(cmd)
            if watts is not None:
                if frozen := self._frozen.check(stamp, now):
                    raise LookupError(frozen)
                self._dcmi_measured, self._dcmi_inactive_since = True, None
                if now - self._limit_at >= self.limit_refresh_s:
                    self._refresh_limit(cmd, now)
                self.method, self.sensors_used = "dcmi", []
                return self._sample(watts, Quality.OK, self._limit)
            if now < self._no_sdr_power_until:  # nothing else to read: DCMI asked again after the usual backoff
                raise LookupError("no active DCMI power reading, and no node or PSU watts sensor in the SDR")
            log.info("BMC %s:%s has no DCMI power reading; using SDR sensors", self.host, self.port)
            self._dcmi_retry_at = now + self.dcmi_reprobe_s
        return self._read_sdr(cmd)

    def _refresh_limit(self, cmd: Any, now: float) -> None:
        """The power limit asked anew: the reading just taken stands whatever this answer is. A busy BMC is asked
        again at the next read; one that fails this query otherwise (refuses it, or drops it unanswered) keeps the
        last limit until the next refresh, rather than losing every reading to it. A dropped query outlasts the
        read's timeout (pyghmi retries it for about 9 s): that read is lost, once a refresh."""
        try:
            self._limit = self._dcmi(cmd, 0x03, (0xDC, 0x00, 0x00), parse_dcmi_power_limit)
        except BmcBusy:
            return
        except Exception as err:  # the reading is the point of the read; the limit is an extra
            log.warning("BMC %s:%s: its DCMI power limit could not be read (%s); asked again in %g s", self.host,
                        self.port, self._redacted(str(err) or type(err).__name__), self.limit_refresh_s)
        self._limit_at = now

    @staticmethod
    def _dcmi(cmd: Any, command_code: int, data: tuple[int, ...], parse: Any) -> Any:
        """`parse` of a DCMI answer; None where the BMC answers that it does not offer it."""
        from pyghmi.exceptions import IpmiException

        try:
            return parse(bytes(cmd.xraw_command(netfn=0x2C, command=command_code, data=data)["data"]))
        except IpmiException as err:
            code = getattr(err, "ipmicode", 0)
            if code in BUSY_CODES:
                raise BmcBusy(f"DCMI: {err}") from None
            if 0x80 <= code < 0xFF:  # another completion code: not offered / no limit set
                return None
            raise

    def _read_sdr(self, cmd: Any) -> TelemetrySample:
        if self._sdr is None:
            if time.monotonic() < self._no_sdr_power_until:  # a download takes tens of seconds of the BMC's time
                raise LookupError("no DCMI power reading and no node or PSU watts sensor in the SDR")
            self._sdr_loading_since = time.monotonic()
            try:
                sdr = cmd.init_sdr()
            finally:
                self._sdr_loading_since = None
            entries = {key: e for key, e in sdr.sensors.items() if getattr(e, "baseunit", None) == "W"}
            described = [PowerSensor(str(key), e.name, e.entity, e.baseunit, bool(e.unit_mod or e.percent))
                         for key, e in entries.items()]
            chosen, quality = select_power_sensors(described)
            if not chosen:  # DCMI is all there is: asked at every read (backing off), the SDR again after the reprobe
                self._no_sdr_power_until = time.monotonic() + self.dcmi_reprobe_s
                self._dcmi_retry_at = 0.0
                self._reset()  # pyghmi keeps a session's SDR: the next download needs a new session
                raise LookupError("no DCMI power reading and no node or PSU watts sensor in the SDR")
            self._sdr, self._absent = ([entries[s.key] for s in chosen], quality), None
            log.info("BMC %s:%s power from SDR sensors %s", self.host, self.port, [s.name for s in chosen])
        entries, quality = self._sdr
        values, read, unread, not_present = [], [], [], 0
        for entry in entries:
            rsp = cmd.raw_command(netfn=4, command=0x2D, rslun=entry.sensor_lun, data=(entry.sensor_number,))
            if "error" in rsp:
                code = rsp.get("code", 0xFFFF)
                if code >= 0xFF:  # no answer: a session problem
                    raise ConnectionError(f"sensor {entry.name!r}: {rsp['error']}")
                if code in BUSY_CODES:  # asked again after the backoff, the same sensors on the same session
                    raise BmcBusy(f"sensor {entry.name!r}: {rsp['error']}")
                if code == NOT_PRESENT and len(entries) > 1:  # e.g. an empty PSU bay: draws nothing, as pyghmi skips it
                    unread.append(entry)
                    not_present += 1
                    continue
                self._sdr = None  # re-read the SDR next time: the BMC may have changed it
                self._reset()  # on a new session: pyghmi keeps a session's SDR
                raise LookupError(f"sensor {entry.name!r}: {rsp['error']}")
            reading = entry.decode_sensor_reading(cmd, rsp["data"])
            if reading.value is not None and not reading.unavailable:
                values.append(reading.value)
                read.append(entry)
            else:  # a PSU without a reading (an empty bay, an unplugged cord) draws nothing
                unread.append(entry)
        if not_present == len(entries):  # none of them there any more: the BMC's SDR changed (e.g. a firmware update)
            self._sdr = None
            self._reset()
            raise LookupError(f"sensors {[e.name for e in entries]}: not present")
        if not values:
            raise LookupError(f"no reading from sensors {[e.name for e in entries]}")
        self._check_unread(unread, read)
        self.method, self.sensors_used = "sdr", [e.name for e in read]
        return self._sample(sum(values), quality, None)

    def _check_unread(self, unread: list[Any], read: list[Any]) -> None:
        """SupplyChanged unless the sum of the sensors that read is the node's power. The SDR's first read takes the
        sensors without a reading as empty bays, until one of them reads. One that read before and stops (the BMC
        may have renumbered its sensors, or a PSU failed) has the SDR read anew at the next read, and this read's
        sum is none (a gap, not a drop); what the fresh SDR cannot read counts as an empty bay. A sensor that
        stops again within SDR_REREAD_MIN_S of that re-read (a flapping one) gives gaps without another download."""
        def keys(entries: list[Any]) -> frozenset[tuple[int, int]]:
            return frozenset((e.sensor_lun, e.sensor_number) for e in entries)

        if self._absent is None:
            self._absent = keys(unread)
            return
        self._absent -= keys(read)  # a bay that reads holds a supply: its next silence is a change
        if keys(unread) <= self._absent:
            return
        names, now = [e.name for e in unread], time.monotonic()
        if now - self._sdr_reread_at < SDR_REREAD_MIN_S:
            raise SupplyChanged(f"BMC {self.host}:{self.port}: sensor(s) {names} gave no reading after reading "
                                f"before; its SDR was read again {now - self._sdr_reread_at:.0f} s ago, so this is a "
                                "gap")
        log.info("BMC %s:%s: sensor(s) among %s gave no reading; reading its SDR again", self.host, self.port, names)
        self._sdr, self._sdr_reread_at = None, now
        self._reset()
        raise SupplyChanged(f"BMC {self.host}:{self.port}: sensor(s) {names} gave no reading after reading before; "
                            "its SDR is read again")

    def _sample(self, watts: float, quality: Quality, limit: float | None) -> TelemetrySample:
        return TelemetrySample.reading(timestamp=datetime.now(UTC), node_id=self.node_id, source=SourceKind.IPMI,
                                       device_id="node", power_watts=watts, power_limit_watts=limit, quality=quality)

    @staticmethod
    def _quietly(fn: Any) -> None:
        try:
            fn()
        except Exception:  # best effort
            pass

"""Start and stop real BMCs on 127.0.0.1 for tests: OpenIPMI `ipmi_sim` (SDR power sensors, no DCMI) and the
pyghmi-based DCMI emulation (`dcmi_bmc.py`). Each runs in its own work dir and is stopped by its own PID."""

from __future__ import annotations

import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.factories import free_port

HERE = Path(__file__).resolve().parent
USER, PASSWORD = "admin", "password"
INSTALL_HINT = (
    "ipmi_sim (Debian package 'openipmi') is not installed; `make test` installs it "
    "(apt-get install -y --no-install-recommends openipmi)"
)
# The sensor number each emu profile polls from its power file.
PROFILES = {"system": 2, "psu": 3}
ASF_PING = bytes([0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x80, 0x01, 0x00, 0x00])


def rmcp_ping(port: int, timeout: float = 0.2) -> bool:
    """True when something answers an RMCP/ASF presence ping on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(ASF_PING, ("127.0.0.1", port))
            return bool(sock.recv(512))
        except OSError:
            return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3)


@dataclass
class IpmiSim:
    """A running ipmi_sim: IPMI on 127.0.0.1:port (UDP), emulator console on console_port (TCP)."""

    proc: subprocess.Popen
    workdir: Path
    port: int
    console_port: int
    polled_sensor: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def power_file(self) -> Path:
        return self.workdir / "power_watts"

    def set_polled_watts(self, watts: int) -> None:
        """Write the polled sensor's file; ipmi_sim re-reads it every second (wait > 1.1 s)."""
        tmp = self.workdir / "power_watts.tmp"
        tmp.write_text(f"{watts}\n")
        tmp.replace(self.power_file)

    def set_sensor_watts(self, sensor: int, watts: int) -> str:
        """Set a non-polled sensor at once through the console (raw byte = watts // 10)."""
        with socket.create_connection(("127.0.0.1", self.console_port), timeout=3) as conn:
            time.sleep(0.1)
            conn.recv(4096)  # telnet negotiation and the "> " prompt
            conn.sendall(f"sensor_set_value 0x20 0 {sensor} {min(watts // 10, 255)} 0\n".encode())
            time.sleep(0.2)
            return conn.recv(4096).decode(errors="replace")


@contextmanager
def ipmi_sim(workdir: Path, profile: str = "system", watts: int = 450, port: int | None = None) -> Iterator[IpmiSim]:
    """Run ipmi_sim with the emu profile ("system": node-total sensor; "psu": two PSU sensors, no total),
    on `port` or a free UDP port."""
    exe = shutil.which("ipmi_sim")
    if exe is None:
        raise RuntimeError(INSTALL_HINT)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "state").mkdir(exist_ok=True)
    (workdir / "power_watts").write_text(f"{watts}\n")
    emu = (HERE / f"{profile}.emu.in").read_text()
    emu = emu.replace("@POWER_FILE@", str(workdir / "power_watts")).replace("@POWER_RAW@", str(min(watts // 10, 255)))
    (workdir / "bmcsim.emu").write_text(emu)
    for _attempt in range(3):  # a free port can be taken between probing and binding: try again
        udp_port, console_port = port or free_port(socket.SOCK_DGRAM), free_port()
        lan = (HERE / "lan.conf.in").read_text().replace("@PORT@", str(udp_port))
        (workdir / "lan.conf").write_text(lan.replace("@CONSOLE_PORT@", str(console_port)))
        log = (workdir / "ipmi_sim.log").open("wb")
        cmd = [exe, "-c", workdir / "lan.conf", "-f", workdir / "bmcsim.emu", "-s", workdir / "state", "-n"]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        log.close()
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline and not rmcp_ping(udp_port):
            time.sleep(0.05)
        if proc.poll() is None and rmcp_ping(udp_port):
            break
        _stop(proc)
    else:
        raise RuntimeError(f"ipmi_sim did not start; log:\n{(workdir / 'ipmi_sim.log').read_text()}")
    try:
        yield IpmiSim(proc, workdir, udp_port, console_port, PROFILES[profile])
    finally:
        _stop(proc)


@dataclass
class DcmiBmc:
    """A running DCMI emulation on 127.0.0.1:port; its power reading follows watts_file."""

    proc: subprocess.Popen
    port: int
    watts_file: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_watts(self, watts: int) -> None:
        tmp = self.watts_file.with_suffix(".tmp")
        tmp.write_text(f"{watts}\n")
        tmp.replace(self.watts_file)


@contextmanager
def dcmi_bmc(workdir: Path, watts: int = 777, limit_watts: int = 0) -> Iterator[DcmiBmc]:
    """Run dcmi_bmc.py (same Python as the tests) on a port it picks; stop it by its PID."""
    workdir.mkdir(parents=True, exist_ok=True)
    watts_file = workdir / "watts"
    watts_file.write_text(f"{watts}\n")
    cmd = [sys.executable, str(HERE / "dcmi_bmc.py"), "--port", "0", "--watts-file", str(watts_file),
           "--limit-watts", str(limit_watts), "--user", USER, "--password", PASSWORD]
    with (workdir / "dcmi_bmc.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        line = proc.stdout.readline() if ready else ""  # "ready PORT" once bound; nothing is printed before it
        if not line.startswith("ready "):
            raise RuntimeError(f"dcmi_bmc.py did not start: {(workdir / 'dcmi_bmc.log').read_text()}")
        yield DcmiBmc(proc, int(line.split()[1]), watts_file)
    finally:
        _stop(proc)
        proc.stdout.close()

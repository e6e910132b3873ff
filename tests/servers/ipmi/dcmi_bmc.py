"""Minimal IPMI-over-LAN (RMCP+) BMC that answers DCMI Get Power Reading and Get Power Limit.

Built on pyghmi's own server-side BMC class (pyghmi.ipmi.bmc.Bmc); ipmi_sim has no DCMI.
Run:  python dcmi_bmc.py --port 0 --watts-file WATTS_FILE [--limit-watts 900]
It prints "ready PORT" once its UDP socket is bound (port 0 = pick a free one). The watts are re-read from
--watts-file on every request; --limit-watts 0 answers Get Power Limit with 0x80 "no active limit".
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time

import pyghmi.ipmi.bmc as bmc
import pyghmi.ipmi.private.serversession as serversession

# pyghmi's server always answers "cipher suite 3" (HMAC-SHA1), but pyghmi's client first asks for SHA-256 and
# does not check the answer. Refuse non-SHA1 requests with RMCP+ status 0x11 so the client retries with SHA1.
_orig_open = serversession.ServerSession.create_open_session_response


def _open_session_response(self, request):
    if len(request) > 12 and request[12] != 1:
        return bytearray([request[0], 0x11, 0, 0]) + bytearray(request[4:8])
    return _orig_open(self, request)


serversession.ServerSession.create_open_session_response = _open_session_response


class DcmiBmc(bmc.Bmc):
    def __init__(self, authdata, port, address, watts, watts_file, limit_watts):
        super().__init__(authdata, port=port, address=address)
        self.port = self.serversocket.getsockname()[1]  # pyghmi routes sessions by this port: resolve port 0
        self.watts, self.watts_file, self.limit_watts, self.powerstate = watts, watts_file, limit_watts, "on"

    def current_watts(self) -> int:
        if self.watts_file and os.path.exists(self.watts_file):
            with open(self.watts_file) as f:
                return int(float(f.read().strip() or 0))
        return self.watts

    def get_power_state(self):
        return self.powerstate

    def power_on(self):
        self.powerstate = "on"

    def power_off(self):
        self.powerstate = "off"

    def handle_raw_request(self, request, session):
        if request["netfn"] == 0x2C and request["command"] == 0x02:  # DCMI Get Power Reading
            w = self.current_watts()
            data = struct.pack("<BHHHHIIB", 0xDC, w, w, w, w, int(time.time()), 1000, 0x40)
            return session.send_ipmi_response(data=list(data))
        if request["netfn"] == 0x2C and request["command"] == 0x03:  # DCMI Get Power Limit
            if not self.limit_watts:
                return session.send_ipmi_response(code=0x80)  # no active power limit
            data = struct.pack("<BHBHIHH", 0xDC, 0, 0, self.limit_watts, 1000, 0, 1)
            return session.send_ipmi_response(data=list(data))
        if request["netfn"] == 0x2C and request["command"] == 0x01:  # DCMI Get Capabilities (param 1)
            return session.send_ipmi_response(data=[0xDC, 1, 5, 2, 0, 1, 0, 0, 0])
        return super().handle_raw_request(request, session)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", default="password")
    ap.add_argument("--watts", type=int, default=250)
    ap.add_argument("--watts-file")
    ap.add_argument("--limit-watts", type=int, default=0)
    a = ap.parse_args()
    server = DcmiBmc({a.user: a.password}, a.port, a.address, a.watts, a.watts_file, a.limit_watts)
    sys.stdout.write(f"ready {server.port}\n")
    sys.stdout.flush()
    server.listen()

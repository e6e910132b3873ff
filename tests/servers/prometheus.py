"""A real Prometheus (Debian `prometheus`) fed through its remote-write receiver.

`remote_write` hand-encodes a prometheus.WriteRequest protobuf and wraps it in snappy's block format
using literal elements only (valid snappy that does not compress), so no protobuf or snappy library is
needed. Samples become queryable at once; per series they must arrive in time order and within the
head block's range (the last hour or so).
"""

from __future__ import annotations

import struct
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.factories import free_port
from tests.servers import ServerProcess, require_binary

CONFIG = Path(__file__).with_name("prometheus.yml")
Series = tuple[Mapping[str, str], Iterable[tuple[int, float]]]  # labels incl. __name__, (ts_ms, value)


class Prometheus(ServerProcess):
    ready_path = "/-/ready"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = require_binary("prometheus", "prometheus")
        port = port or free_port()
        self.data_dir = Path(workdir) / "promdata"
        argv = [binary, f"--config.file={CONFIG}", f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver"]
        super().__init__(argv, port, Path(workdir) / "prometheus.log")

    def remote_write(self, series: Iterable[Series]) -> int:
        """POST series to /api/v1/write; returns the HTTP status (204 on success)."""
        request = urllib.request.Request(
            self.url + "/api/v1/write", data=snappy_block(write_request(series)), method="POST",
            headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                     "X-Prometheus-Remote-Write-Version": "0.1.0"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # a length-delimited protobuf field
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def write_request(series: Iterable[Series]) -> bytes:
    """prometheus.WriteRequest{timeseries: [TimeSeries{labels (sorted by name), samples}]}."""
    body = bytearray()
    for labels, samples in series:
        encoded = b"".join(_field(1, _field(1, k.encode()) + _field(2, v.encode())) for k, v in sorted(labels.items()))
        for ts_ms, value in samples:  # Sample{double value = 1; int64 timestamp = 2}
            encoded += _field(2, b"\x09" + struct.pack("<d", value) + b"\x10" + _varint(int(ts_ms)))
        body += _field(1, encoded)
    return bytes(body)


def snappy_block(data: bytes) -> bytes:
    """Snappy block format: uncompressed length, then literal elements of up to 64 KiB."""
    out = bytearray(_varint(len(data)))
    for begin in range(0, len(data), 65536):
        chunk = data[begin:begin + 65536]
        size = len(chunk) - 1
        if size < 60:
            out.append(size << 2)
        elif size < 256:
            out += bytes([60 << 2, size])
        else:
            out += bytes([61 << 2]) + size.to_bytes(2, "little")
        out += chunk
    return bytes(out)

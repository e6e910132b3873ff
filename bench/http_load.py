"""A tiny keep-alive HTTP/1.1 load generator on asyncio streams (light enough to share 2 cores with Serve)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LoadResult:
    """A load run: every request answered, the non-200 answers among them, and the latencies of the 200 answers."""

    requests: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray  # of the 200 answers only: a fast 503 is no prediction

    @property
    def throughput(self) -> float:
        """200 answers per second (an error answered fast does not count)."""
        return (self.requests - self.errors) / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else float("nan")

    def line(self, name: str) -> str:
        return (f"{name:<44} p50 {self.percentile(50):7.2f} ms  p99 {self.percentile(99):7.2f} ms  "
                f"{self.throughput:7.1f} req/s  ({self.requests} requests, {self.errors} errors)")


def encode_request(host: str, port: int, method: str, path: str, body: dict | None = None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: keep-alive\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
    return head.encode() + payload


async def _read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length, chunked = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "transfer-encoding" and "chunked" in value:
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(length)
    return status


async def _client(host: str, port: int, request: bytes, deadline: float, limit: int | None,
                  latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline and (limit is None or len(latencies) + len(errors) < limit):
            started = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            if status == 200:
                latencies.append((time.perf_counter() - started) * 1000.0)
            else:
                errors.append(status)
    finally:
        writer.close()


def run_load(host: str, port: int, request: bytes, *, clients: int, seconds: float,
             max_requests: int | None = None) -> LoadResult:
    """`clients` connections each sending `request` back to back until `seconds` pass (or max_requests)."""
    latencies: list[float] = []
    errors: list[int] = []

    async def main() -> float:
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(_client(host, port, request, deadline, max_requests, latencies, errors)
                               for _ in range(clients)))
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    return LoadResult(len(latencies) + len(errors), len(errors), elapsed, np.asarray(latencies))

"""The HTTP load generator counts what answered 200 as throughput and latency; an error answer is only an error."""

from __future__ import annotations

import asyncio
import threading

from bench.http_load import encode_request, run_load


def _server(port_found: list[int], ready: threading.Event, stop: threading.Event) -> None:
    """Answers 200 and 503 in turn, on a loopback port of its own."""
    async def main() -> None:
        answered = [0]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                answered[0] += 1
                status = b"200 OK" if answered[0] % 2 else b"503 Service Unavailable"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_found.append(server.sockets[0].getsockname()[1])
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        server.close()

    asyncio.run(main())


def test_error_answers_count_neither_as_throughput_nor_in_the_latencies():
    """Regression: a run full of fast 503s reported a higher throughput and a lower p50 than a healthy one."""
    port, ready, stop = [], threading.Event(), threading.Event()
    thread = threading.Thread(target=_server, args=(port, ready, stop), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        result = run_load("127.0.0.1", port[0], encode_request("127.0.0.1", port[0], "GET", "/healthz"), clients=1,
                          seconds=30.0, max_requests=10)
    finally:
        stop.set()
        thread.join(10)
    assert (result.requests, result.errors, len(result.latencies_ms)) == (10, 5, 5)
    assert result.throughput == 5 / result.seconds

"""The soak test's load: HTTP clients sending the API's request mix, and a telemetry writer pushing samples
through the store actor's client at a steady rate, counting what the store acknowledged."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import httpx

from bench.soak_report import Answer
from core.stores.base import StoreUnavailable, TelemetryStore
from core.telemetry import TelemetrySample

HORIZON = "10m"  # a whole number of steps for 1- and 2-minute models, inside their horizons
COST = {"resources": {"cpu_cores": 4, "memory_gb": 16}, "duration_hours": 1}


def request_mix(stored_node: str) -> list[tuple[str, str, str, dict | None]]:
    """(kind, method, path, body) of every request a client sends in turn."""
    history = {"workload_id": "soak", "features": {"power_watts": [240.0 + i % 7 for i in range(30)]},
               "prediction_horizon": HORIZON}
    return [
        ("power, history", "POST", "/api/v1/predict/power", history),
        ("power, stored node", "POST", "/api/v1/predict/power",
         {"workload_id": "soak", "node_id": stored_node, "prediction_horizon": HORIZON}),
        ("cost", "POST", "/api/v1/predict/cost", COST),
        ("policies", "GET", "/api/v1/scaling/policies", None),
        ("events", "GET", "/api/v1/scaling/events?limit=20", None),
        ("telemetry nodes", "GET", "/api/v1/telemetry/nodes", None),
    ]


def _app_error(response: httpx.Response) -> str | None:
    """The message of the API's own error body (a `detail` list and a request id); None for any other body."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not (isinstance(body, dict) and body.get("request_id") and isinstance(body.get("detail"), list)):
        return None
    return "; ".join(str(item.get("msg")) for item in body["detail"] if isinstance(item, dict))


class Clients:
    """`count` threads, each with its own keep-alive connection, sending the mix in turn until `stop`."""

    def __init__(self, base_url: str, count: int, mix: list[tuple[str, str, str, dict | None]], started: float,
                 timeout_s: float = 30.0):
        self.base_url, self.count, self.mix, self.started, self.timeout_s = base_url, count, mix, started, timeout_s
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), name=f"soak-client-{i}", daemon=True)
                         for i in range(count)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> list[Answer]:
        """Stop sending; every answer once the requests under way have come back."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)
        with self._lock:
            return list(self.answers)

    def _client(self, index: int) -> None:
        mine: list[Answer] = []
        with httpx.Client(base_url=self.base_url, timeout=self.timeout_s) as client:
            turn = index
            while not self._stop.is_set():
                kind, method, path, body = self.mix[turn % len(self.mix)]
                turn += 1
                mine.append(self._send(client, kind, method, path, body))
        with self._lock:
            self.answers.extend(mine)

    def _send(self, client: httpx.Client, kind: str, method: str, path: str, body: dict | None) -> Answer:
        begun = time.monotonic()
        try:
            response = client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            return Answer(begun - self.started, kind, 0, (time.monotonic() - begun) * 1000.0,
                          detail=f"{type(exc).__name__}: {exc}"[:200])
        latency = (time.monotonic() - begun) * 1000.0
        if response.status_code == 200:
            return Answer(begun - self.started, kind, 200, latency)
        message = _app_error(response)
        return Answer(begun - self.started, kind, response.status_code, latency, message is not None,
                      (message if message is not None else response.text)[:200])


class TelemetryWriter:
    """Writes one sample per node per `interval_s` (whole-second timestamps from `t0`), as a collector would:
    a batch the store did not acknowledge is kept and sent again with the next one, so nothing is dropped.

    `store` makes the client (RemoteStore); `watts` is each node's power, changeable while it runs (`set`).
    """

    def __init__(self, store: Callable[[], TelemetryStore], watts: Mapping[str, float], t0: datetime,
                 interval_s: int = 1):
        self.store, self.watts, self.t0, self.interval_s = store(), dict(watts), t0, interval_s
        self.written: Counter[str] = Counter()
        self.failed_writes = 0
        self.pending: list[TelemetrySample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-writer", daemon=True)

    def set(self, node: str, watts: float) -> None:
        self.watts[node] = watts

    def samples_at(self, at: datetime) -> list[TelemetrySample]:
        return [TelemetrySample(timestamp=at, node_id=node, source="ipmi", power_watts=watts)
                for node, watts in self.watts.items()]

    def backfill(self, minutes: int) -> None:
        """History before `t0`, one sample a minute, so forecasts from stored telemetry have a full window."""
        for minute in range(minutes, 0, -1):
            self.pending.extend(self.samples_at(self.t0 - timedelta(minutes=minute)))
        if not self._flush():
            raise RuntimeError("the telemetry store did not take the soak's history")

    def start(self) -> None:
        self._thread.start()

    def stop(self, flush_timeout_s: float = 60.0) -> None:
        """Stop writing, then send what is still unacknowledged until the store takes it or time runs out."""
        self._stop.set()
        self._thread.join()
        deadline = time.monotonic() + flush_timeout_s
        while self.pending and time.monotonic() < deadline and not self._flush():
            time.sleep(1.0)

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            now = datetime.now(UTC)
            while self.t0 + timedelta(seconds=tick * self.interval_s) <= now:
                self.pending.extend(self.samples_at(self.t0 + timedelta(seconds=tick * self.interval_s)))
                tick += 1
            self._flush()
            due = self.t0 + timedelta(seconds=tick * self.interval_s)
            self._stop.wait(max((due - datetime.now(UTC)).total_seconds(), 0.0))

    def _flush(self) -> bool:
        """Send the pending samples once; True when the store acknowledged every one."""
        if not self.pending:
            return True
        try:
            accepted = self.store.write(self.pending)
        except StoreUnavailable:
            self.failed_writes += 1
            return False
        if accepted != len(self.pending):
            raise RuntimeError(f"the store accepted {accepted} of {len(self.pending)} plausible samples")
        self.written.update(sample.node_id for sample in self.pending)
        self.pending = []
        return True

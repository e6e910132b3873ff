"""A TelemetryStore whose calls go to the cluster's store actor (collectors/store_actor.py runs it)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

import pandas as pd
import ray
from ray.exceptions import GetTimeoutError

from core.actors import ActorUnavailable, NamedActor
from core.names import STORE_ACTOR
from core.public_text import error_text
from core.stores.base import NodeLatest, StoreUnavailable, TelemetryStore, WriteRefused
from core.telemetry import TelemetrySample

logger = logging.getLogger(__name__)

CALL_TIMEOUT_S = 10.0
WRITE_CHUNK = 5000  # samples per write call (InfluxStore's batch: one HTTP write each)
WRITE_TIMEOUT_S = 30.0  # per write call: above InfluxStore's own 10 s request timeout
RETRAINING_TIMEOUT_S = 120.0  # per call of a retraining's read: weeks of one node at its step
Reader = Literal["api", "controller", "retraining"]
WINDOW_CALLS: dict[str, str] = {"api": "window", "controller": "control_window", "retraining": "retraining_window"}
LATEST_CALLS: dict[str, str] = {"api": "latest", "controller": "control_latest", "retraining": "latest"}


class StoreActorUnavailable(StoreUnavailable, ActorUnavailable):
    """The store actor is not running, did not answer, or its backend failed."""


class RemoteStore(TelemetryStore):
    """Forwards every call to the named store actor; any failure is StoreUnavailable (StoreActorUnavailable),
    except a write the backend refuses for good (WriteRefused). The scaling controller (`reader="controller"`) and a
    retraining (`reader="retraining"`) read windows in groups of the actor's own for each, so a flood of the API's
    stored-window forecasts never holds them, and a retraining's weeks of telemetry never hold the API's; the
    controller reads the latest readings in its group too."""

    def __init__(self, timeout_s: float = CALL_TIMEOUT_S, write_timeout_s: float = WRITE_TIMEOUT_S, *,
                 reader: Reader = "api", nodes_ttl_s: float = 0.0):
        """`nodes_ttl_s`: how long an answer of `nodes()` (without `since`) is reused; 0: never."""
        self.actor = NamedActor(STORE_ACTOR, "the telemetry store", timeout_s=timeout_s, error=StoreActorUnavailable)
        self.writer = NamedActor(STORE_ACTOR, "the telemetry store", timeout_s=write_timeout_s,
                                 error=StoreActorUnavailable)
        self._window_call, self._latest_call = WINDOW_CALLS[reader], LATEST_CALLS[reader]
        self._unanswered: ray.ObjectRef | None = None  # a write that timed out and may still wait in the queue
        self.nodes_ttl_s = nodes_ttl_s
        self._nodes: tuple[float, list[str]] | None = None  # (monotonic time it is reused until, the answer)
        self._writing = threading.Lock()

    def _call(self, method: str, *args):
        return _translated(lambda: self.actor.call(method, *args))

    def write(self, samples: Sequence[TelemetrySample]) -> int:
        """Write in calls of at most WRITE_CHUNK samples, each with its own WRITE_TIMEOUT_S: one call for a whole
        spilled segment could outlast any fixed timeout, and the caller then sent it again while the store actor
        was still writing it. A chunk refused for good does not stop the others (WriteRefused after them).

        A call that timed out goes on in the actor's queue: until it is answered, nothing more is sent (the samples
        stay with the caller, who tries again later), so a hung backend holds one write per client in the queue,
        not one more per retry."""
        samples, written, refused, reason = list(samples), 0, 0, ""
        with self._writing:
            for begin in range(0, len(samples), WRITE_CHUNK):
                try:
                    written += self._write_chunk(samples[begin:begin + WRITE_CHUNK])
                except WriteRefused as exc:
                    refused, written, reason = refused + exc.refused, written + exc.written, str(exc)
        if refused:
            raise WriteRefused(reason, refused, written)
        return written

    def _write_chunk(self, chunk: Sequence[TelemetrySample]) -> int:
        def send() -> int:
            if self._unanswered is not None:
                if not ray.wait([self._unanswered], timeout=0)[0]:  # a dead actor's call is ready: it failed
                    raise StoreActorUnavailable("the telemetry store has not answered an earlier write yet (queued "
                                                "behind a slow backend): nothing more is sent until it does")
                self._unanswered = None  # answered: whatever it wrote, these samples are sent again below
            call = self.writer.send("write", chunk)
            try:
                return self.writer.result(call)
            except StoreActorUnavailable as exc:
                if isinstance(exc.__cause__, GetTimeoutError):
                    self._unanswered = call
                raise

        return _translated(send)

    def window(self, node_id: str, start: datetime, end: datetime, step_s: int) -> pd.DataFrame:
        return self._in_group(self._window_call, "window", node_id, start, end, step_s)

    def latest(self, node_id: str | None = None) -> list[NodeLatest]:
        return self._in_group(self._latest_call, "latest", node_id)

    def _in_group(self, method: str, default: str, *args):
        """`method` (this reader's group), or `default` on a store actor started by an older version without it."""
        def call():
            try:
                return self.actor.call(method, *args)
            except AttributeError as exc:  # the handle's own (no such method); Ray's wrapper of one the actor raised
                if method == default or type(exc) is not AttributeError:  # is a subclass: a read that failed there
                    raise  # is not read again elsewhere
            return self.actor.call(default, *args)

        return _translated(call)

    def nodes(self, since: datetime | None = None) -> list[str]:
        if since is not None:
            return self._call("nodes", since)
        known = self._nodes
        if known is not None and time.monotonic() < known[0]:
            return list(known[1])
        found = self._call("nodes")  # (without `since`, as an older store actor takes it)
        if self.nodes_ttl_s > 0:
            self._nodes = (time.monotonic() + self.nodes_ttl_s, list(found))
        return found

    def is_read_only(self) -> bool:
        """True when the backend only reads (Prometheus): collectors then only export their gauges."""
        return self._call("is_read_only")

    def close(self) -> None:
        """Nothing to release: the actor outlives its callers."""


def _translated(call: Callable[[], Any]) -> Any:
    """`call()`; any failure is StoreActorUnavailable (a Ray error sending it too), but a write refused for good."""
    try:
        return call()
    except StoreActorUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - the backend failed behind the actor: "not now" too
        cause = getattr(exc, "cause", None) or exc  # Ray wraps the actor's exception
        if isinstance(cause, WriteRefused):  # for good, not "not now": the caller must not retry
            raise WriteRefused(str(cause), cause.refused, cause.written) from exc
        _log_reason(cause)  # the backend's reason (a 401, a missing bucket, unreachable): for the operator only
        raise StoreActorUnavailable(f"the telemetry store failed: {type(cause).__name__}") from exc


_logged: dict[str, float] = {}  # a backend failure's text -> when it was last logged (monotonic)
LOG_AGAIN_S = 60.0


def _log_reason(cause: BaseException) -> None:
    """Log why the backend failed, each distinct reason at most once a minute per process (a store down fails
    every collector flush and every read). API bodies and records say only its type: a backend's own words may
    name internal hosts, paths or users that no scrubbing catches."""
    text = error_text(cause)
    now = time.monotonic()
    if now - _logged.get(text, float("-inf")) >= LOG_AGAIN_S:
        if len(_logged) >= 100:  # texts that change every time (a timestamp in them): never a growing map
            _logged.clear()
        _logged[text] = now
        logger.warning("telemetry store: %s", text)

"""PowerPredictor: the Serve deployment that hosts the active power forecasters, one per served resolution.

It serves the default model (`model_id`, e.g. a 1-minute one) and every other resolution the config lists
(e.g. an hourly one) that the registry holds, and sends each forecast to the finest step whose horizon covers
it (training.power.routing). It batches concurrent requests into one forward pass per model
(`@serve.batch`), runs on CPU or GPU replicas as `ray_actor_options` say, and follows the registry: a new
active version of any of its models (or a pinned default in `user_config`) is loaded without restarting the
app. It forecasts from a history it is given (measured, or features only), or from the newest stored
telemetry of a node or of a configured workload's nodes. Its HTTP route is app/power_route.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import math
import pickle
import threading
import time
from collections.abc import Awaitable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from core.forecasts import ForecastRequestError, ModelNotLoaded, PowerForecast, PowerHistory, ServedModel
from core.held_threads import in_thread, run_holding
from core.public_text import error_text
from core.registry import ModelRegistry
from core.registry_metadata import ModelNotFoundError
from core.stores.base import StoreUnavailable
from core.stores.remote import RemoteStore
from deployments.forecast_gauges import UNASKED_AFTER_S, ForecastGauges
from deployments.latency import LatencyRecorder
from deployments.node_calibration import MAX_SERIES, WARM_ORIGINS, NodeCalibrations
from deployments.registry_follower import RETRY_FAILED_LOAD_S, RegistryFollower
from training.power.forecaster import PowerForecaster
from training.power.inference import check_history, forecast_histories
from training.power.routing import Coverage, route
from training.power.stored_history import (
    NoStoredTelemetry,
    StoredHistory,
    fill_from_store,
    past_windows,
    stored_history,
)
from training.power.workload import StoredForecast, WorkloadTelemetryMissing, sum_forecasts

logger = logging.getLogger("ray.serve")
PIN_RENEW_S = 3600.0  # how often a pinned replica renews its registry mark (core/registry.py PIN_TTL_S: a day)
FILL_TIMEOUT_S = 2.0  # a short power list completed from the store: the read waited for at most this long
FILL_PAUSE_S = 30.0  # after such a read failed or timed out: no more for this long (a timed-out read still runs)
MAX_FILLS = 2  # such reads under way at once per replica (the store actor answers 8 calls at once, for everyone)
MAX_STORED_READS = 3  # windows read at once per replica for requests without lists (the others wait their turn)
NODE_LIST_TTL_S = 30.0  # how long a replica reuses the store's node list (unknown vs stopped nodes)
STORED_READ_PAUSE_S = 10.0  # after reads of two nodes found the store unavailable: the others fail at once this long
WARM_NODES_PER_REQUEST = 4  # nodes whose online calibration one request warms (deployments/node_calibration.py)


class PowerPredictorUserConfig(BaseModel):
    """Live-tunable settings (`user_config` in serve_config.yaml); applied without a restart."""

    model_config = ConfigDict(extra="forbid")

    model_version: int | None = Field(None, description="pin a registry version of the default model; None "
                                                        "follows the active one")
    batching: bool = True
    max_batch_size: int = Field(16, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(0.0, ge=0.0, le=1.0)
    registry_poll_s: float = Field(10.0, gt=0.0, description="how often to look for a new active version")
    max_followed_nodes: int = Field(MAX_SERIES, ge=16, le=100_000,
                                    description="(model version, node) pairs whose stored-window forecasts a "
                                                "replica corrects online (deployments/node_calibration.py); beyond "
                                                "it the least recently forecast are dropped and warmed again when "
                                                "asked. Set it above the nodes forecast from the store times the "
                                                "resolutions they are forecast at: each pair takes about 100 KB at a "
                                                "60-step horizon, growing with the horizon's square")


@dataclass
class ServedPower:
    """One loaded model: its id and version, the forecaster, its provenance and its live latency."""

    model_id: str
    version: int
    forecaster: PowerForecaster
    synthetic: bool  # trained on generated data
    latency: LatencyRecorder
    registered_at: datetime  # when the version was published (its training data ended before)

    @property
    def model_version(self) -> str:
        return f"{self.model_id}/{self.version}"

    @property
    def blend_start(self) -> tuple[float, ...] | None:
        """The served blend's per-lead LSTM weight chosen on the calibration split, where the online blend follows
        it (training.power.online_blend); None for a model without both forecasts."""
        forecaster = self.forecaster
        return forecaster.served.lstm_weight if forecaster.blends_online else None

    @property
    def coverage(self) -> Coverage:
        step_s = self.forecaster.pipeline.step_s
        return Coverage(self.model_id, step_s, step_s * self.forecaster.horizon)

    def describe(self) -> ServedModel:
        forecaster = self.forecaster
        return ServedModel(model_version=self.model_version, step_seconds=forecaster.pipeline.step_s,
                           sequence_length=forecaster.sequence_length, horizon_steps=forecaster.horizon,
                           max_gap_seconds=forecaster.pipeline.max_gap_s, features=tuple(forecaster.pipeline.features),
                           latency_ms=self.latency.percentiles(), trained_on_synthetic_data=self.synthetic)


class PowerPredictor(RegistryFollower):
    """Serve replica holding a PowerForecaster per served resolution.

    `model_id` is the default model (it must be registered; the scaling controller's `describe` is its);
    `resolutions` the other model ids to serve, each loaded once the registry has an active version of it.
    `stale_after_s` is the config's telemetry.stale_after; `workloads` its workload id -> node ids map.
    """

    def __init__(self, model_path: str, model_id: str = "power_lstm", stale_after_s: float = 120.0,
                 workloads: Mapping[str, Sequence[str]] | None = None, resolutions: Sequence[str] = ()):
        self.registry = ModelRegistry(model_path)
        self.model_id = model_id
        self.model_ids = [model_id, *(other for other in dict.fromkeys(resolutions) if other != model_id)]
        self.stale_after_s = stale_after_s
        self.workloads = {workload: list(nodes) for workload, nodes in (workloads or {}).items()}
        # a node the store does not have is told from one whose power stopped by the store's node list: on InfluxDB a
        # 30-day scan, on Prometheus the whole database, so one list serves a replica's unknown nodes for a while
        self.store = RemoteStore(nodes_ttl_s=NODE_LIST_TTL_S)
        self.fill_store = RemoteStore(timeout_s=FILL_TIMEOUT_S)  # an optional read: never holds a forecast up long
        self._fill_paused_until = 0.0  # monotonic time until which no window is completed from the store
        self._fills = threading.BoundedSemaphore(MAX_FILLS)
        self._stored_reads = asyncio.Semaphore(MAX_STORED_READS)
        self._reads_paused_until = 0.0  # monotonic time until which stored reads fail at once (the store is down)
        self._read_failures: dict[str, float] = {}  # node -> monotonic time its stored read last failed
        self._read_failures_lock = threading.Lock()  # reads run on executor threads
        self.device = _default_device()
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="power-inference")
        self.settings = PowerPredictorUserConfig()
        self.forecast_gauges = ForecastGauges(max(UNASKED_AFTER_S, stale_after_s))
        self.node_calibrations = NodeCalibrations()  # online correction of the nodes' stored-window forecasts
        self._warming: set[tuple[str, str]] = set()  # (version, node) whose past windows are being replayed
        self._following: set[asyncio.Task] = set()  # the scaling controller's windows being followed
        self.served: dict[str, ServedPower] = {}
        self.unloaded: dict[str, Coverage] = {}  # what the version of a model that failed to load would answer
        self._pinned_at: float | None = None  # when this replica last marked its pinned version (time.monotonic)
        self._loading = threading.Lock()  # one load-and-swap at a time: the follower's, or a pin's (reconfigure)
        self._unloadable = self._load_default()  # why no default model is served (until a pin loads one), or ""
        try:
            self._refresh()
        except Exception:  # noqa: BLE001 - e.g. an unreadable registry: the other resolutions load on a later poll
            logger.exception("PowerPredictor: could not look up the resolutions of %s", self.model_ids)
        self._start_following(lambda: self.settings.registry_poll_s)

    async def reconfigure(self, user_config: dict) -> None:
        """Serve's user_config: batching and polling now; a pinned `model_version` is loaded (off the event loop)
        before it takes effect, so a version that cannot load leaves the settings and the served model as they
        were (the update fails with the reason)."""
        settings = PowerPredictorUserConfig.model_validate(user_config or {})
        await asyncio.to_thread(self._apply, settings)
        self._batched.set_max_batch_size(settings.max_batch_size)
        self._batched.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        self.node_calibrations.max_series = settings.max_followed_nodes

    def _apply(self, settings: PowerPredictorUserConfig) -> None:
        with self._loading:  # the follower cannot swap the default model between the pin's check and its load
            version = settings.model_version
            if version is not None:
                self._pinned_at = None  # (re)pinned: marked before it loads, so that pruning cannot take it meanwhile
                self._renew_pin(version)
                if version != self.version:
                    self._load(version)
            self.settings = settings

    def _load(self, version: int | None) -> None:
        self._load_model(self.model_id, version)

    def _load_model(self, model_id: str, version: int | None) -> None:
        folder, metadata = self.registry.get(model_id, version)
        forecaster = PowerForecaster.load(folder, device=self.device)
        former = self.served.get(model_id)
        latency = former.latency if former is not None else LatencyRecorder(model_id)
        if former is not None and former.version != metadata.version:
            latency.restart()  # describe() reports the version it names
        self.served[model_id] = ServedPower(model_id, metadata.version, forecaster,
                                            metadata.trained_on_synthetic_data, latency, metadata.created_at)
        logger.info("PowerPredictor: serving %s version %d on %s", model_id, metadata.version, self.device)

    def _refresh(self) -> None:
        """Load every served model's active version (the default stays on a pinned version). A version that cannot
        be loaded is logged and skipped: the model keeps the version it serves, and the others still move on."""
        with self._loading:
            self._follow_active()
        self.forecast_gauges.expire()  # a node no policy reads any more, while none is read at all

    def _follow_active(self) -> None:
        self._renew_pin(self.settings.model_version)
        for model_id in self.model_ids:
            if model_id == self.model_id and self.settings.model_version is not None:
                continue
            try:
                self._follow_model(model_id)
            except Exception:  # noqa: BLE001 - an unreadable pointer or history must not hold the others back
                logged = vars(self).setdefault("_follow_failure_logged", {})  # model -> when (at most every 5 min)
                if time.monotonic() >= logged.get(model_id, float("-inf")) + RETRY_FAILED_LOAD_S:
                    logged[model_id] = time.monotonic()
                    logger.exception("PowerPredictor: cannot follow %s's active version; its served one is kept",
                                     model_id)

    def _follow_model(self, model_id: str) -> None:
        """Load the model's version to serve, if it is not the one served."""
        # the default model as GET /api/v1/models and a new replica take it (the active version, else the
        # latest); another resolution only once a version of it was activated (README, model routes)
        wanted = (self.registry.served_version(model_id) if model_id == self.model_id
                  else self.registry.active_version(model_id))
        current = self.served.get(model_id)
        if wanted is None:
            self.unloaded.pop(model_id, None)  # no version to load (any more): nothing to come back for
            return
        if current is not None and current.version == wanted or not self._load_due(model_id, wanted):
            return
        if current is None:
            self._note_coverage(model_id, wanted)  # a request it would answer comes back once it has loaded
        try:
            self._load_model(model_id, wanted)
        except Exception:  # noqa: BLE001 - a broken version must not hold the other resolutions back
            self._load_failed(model_id, wanted)
            logger.exception("PowerPredictor: could not load %s version %d; keeping %s (tried again in %.0f s)",
                             model_id, wanted, f"version {current.version}" if current is not None else
                             "a version served before, if one loads", RETRY_FAILED_LOAD_S)
            if current is None:
                self._serve_a_former(model_id, wanted)
        else:
            self._load_failed(model_id, None)

    def _serve_a_former(self, model_id: str, failed: int) -> None:
        """Serve the newest version served before `failed` that loads, as `_load_default` does for the default model
        (a version this image cannot read, during a rolling upgrade, must not leave the resolution unserved here
        while older replicas serve it); nothing when none loads."""
        for version in self.registry.fallback_versions(model_id):
            if version == failed:
                continue
            try:
                self._load_model(model_id, version)
            except Exception:  # noqa: BLE001 - older still
                continue
            logger.error("PowerPredictor: serving %s version %d, served before version %d, which cannot be loaded",
                         model_id, version, failed)
            return

    def _renew_pin(self, version: int | None) -> None:
        """While pinned to `version`, mark it in the registry (hourly) so that pruning keeps it: a replica started
        later must find it."""
        if version is None or (self._pinned_at is not None and time.monotonic() - self._pinned_at < PIN_RENEW_S):
            return
        try:
            self.registry.pin(self.model_id, version)
            self._pinned_at = time.monotonic()
        except (ModelNotFoundError, OSError) as exc:  # tried again in RETRY_FAILED_LOAD_S, not at every poll
            self._pinned_at = time.monotonic() - PIN_RENEW_S + RETRY_FAILED_LOAD_S
            logger.warning("PowerPredictor: could not mark %s version %d as pinned (tried again in %.0f s): %s",
                           self.model_id, version, RETRY_FAILED_LOAD_S, exc)

    @property
    def version(self) -> int | None:
        """The default model's served version."""
        default = self.served.get(self.model_id)
        return default.version if default is not None else None

    def describe(self, model_id: str | None = None) -> ServedModel:
        """What the replica serves of a model (default: the default model): version, step, window, horizon,
        features, provenance and live latency.

        Raises:
            ModelNotFoundError: the replica does not serve `model_id`.
        """
        if model_id is None or model_id == self.model_id:
            described = self._default().describe()
            return described.model_copy(update={"pinned": self.settings.model_version is not None})
        if model_id not in self.served:
            raise ModelNotFoundError(model_id, reason="not served by the PowerPredictor")
        return self.served[model_id].describe()

    def _route(self, horizon_s: int, step_s: int | None = None) -> ServedPower:
        """The served model that answers a horizon: ModelNotLoaded when only a configured model whose version this
        replica failed to load would (`unloaded`), else ForecastRequestError when none does, naming the configured
        models not served (a version of one may be activated later)."""
        try:
            return self.served[route([served.coverage for served in list(self.served.values())], horizon_s, step_s)]
        except ForecastRequestError as refused:
            unserved = [model_id for model_id in self.model_ids if model_id not in self.served]
            if not unserved:
                raise
            answering = tuple(model_id for model_id in unserved if (coverage := self.unloaded.get(model_id))
                              is not None and coverage.answers(horizon_s, step_s))
            if answering:
                raise ModelNotLoaded(answering) from None
            raise ForecastRequestError(refused.field, f"{refused.message}; configured but not served here: "
                                                      f"{', '.join(unserved)} (no version activated yet, or its "
                                                      "version could not be loaded)") from None

    def _load_failed(self, model_id: str, version: int | None) -> None:
        """As the follower's, and what the version that failed would answer (`_note_coverage`); forgotten once a
        version loads."""
        super()._load_failed(model_id, version)
        if version is None:
            self.unloaded.pop(model_id, None)
        else:
            self._note_coverage(model_id, version)

    def _note_coverage(self, model_id: str, version: int) -> None:
        """What `version` of a model not served here would answer, from its registry metadata (read in the
        follower's thread: `_route` tells a request for it to come back, never reading files on the event loop)."""
        try:
            spec = self.registry.get(model_id, version)[1].feature_spec
            step_s = int(spec["step_s"])
            self.unloaded[model_id] = Coverage(model_id, step_s, step_s * int(spec["horizon_steps"]))
        except Exception:  # noqa: BLE001 - metadata unreadable too: a request for it is refused as unanswerable
            self.unloaded.pop(model_id, None)

    async def forecast(self, history: PowerHistory) -> PowerForecast:
        """Forecast one history with the finest model covering its horizon (batched with concurrent calls).

        Raises:
            ForecastRequestError: no served model covers the horizon, or the features cannot estimate power.
            ModelNotLoaded: only a configured model not loaded here would answer it.
        """
        return await self._forecast(history, self._route(history.horizon_s, history.step_s))

    async def _forecast(self, history: PowerHistory, served: ServedPower) -> PowerForecast:
        """`forecast` by `served`, chosen once per request: a reload meanwhile never answers part of a request (a
        workload's nodes, a node's warm-up windows) with another version."""
        check_history(served.forecaster, history)  # refuse before a batch
        answer = (await self._batched(history, served) if self.settings.batching
                  else (await self._off_the_loop([history], [served]))[0])
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def forecast_filled(self, history: PowerHistory, node_id: str) -> tuple[PowerForecast, int]:
        """Forecast a client's history, its front completed from the node's stored telemetry when it is shorter
        than the answering model's window; returns the forecast and how many power steps came from the store (0
        when the store has nothing there, or cannot be read: the client's lists alone then answer).

        Raises:
            ForecastRequestError: as `forecast`.
        """
        served = self._route(history.horizon_s, history.step_s)
        pipeline = served.forecaster.pipeline
        from_store = 0
        short = 0 < len(history.power_watts) < served.forecaster.sequence_length  # else no store read, no thread hop
        # a slow store is left alone a while, and never asked more than MAX_FILLS at once: the lists answer
        if short and time.monotonic() >= self._fill_paused_until and self._fills.acquire(blocking=False):
            try:  # the slot is freed when the read ends, not when a cancelled request stops waiting for it
                history, from_store = await in_thread(self._fills.release, functools.partial(
                    fill_from_store, self.fill_store, node_id, history, step_s=pipeline.step_s,
                    sequence_length=served.forecaster.sequence_length, max_gap_s=pipeline.max_gap_s))
            except StoreUnavailable as exc:
                self._fill_paused_until = time.monotonic() + FILL_PAUSE_S
                logger.warning("power forecast: windows not completed from the store for %.0f s: %s", FILL_PAUSE_S,
                               exc)
        return await self._forecast(history, served), from_store

    async def forecast_stored(self, nodes: Sequence[str], horizon_s: int, workload_type: str | None = None,
                              workload_id: str | None = None, step_s: int | None = None) -> StoredForecast:
        """Forecast from the nodes' newest stored windows (at `step_s`, when the caller asks for a step), summed
        over the nodes of a workload.

        `workload_id` says the nodes are that workload's (from `workloads`), not ones the caller named. A node's own
        forecast (no `workload_type`) is corrected online by the outcomes of the ones before it
        (deployments/node_calibration.py).

        Raises:
            ForecastRequestError: no served model covers the horizon.
            UnknownNode: nothing stored for a node the caller named.
            NoStoredTelemetry: no recent power stored for a node the caller named.
            WorkloadTelemetryMissing: either of the two for a node of `workload_id`.
            StoreUnavailable: the store could not be read.
        """
        served = self._route(horizon_s, step_s)
        stored = await _in_order([self._read_stored(served, node, horizon_s, workload_type, workload_id)
                                  for node in nodes])
        if len({s.history.end_time for s in stored}) > 1:  # summed lead by lead: every window ends at one bin
            # to the earliest last bin, at the oldest newest reading of the windows ending there: its age is theirs
            # (a window whose last bin is empty has its newest reading in an earlier bin: then the bin's start)
            first_end = min(s.history.end_time for s in stored)
            until = max(first_end, min(s.newest for s in stored if s.history.end_time == first_end))
            stored = await _in_order([_done(s) if s.history.end_time == first_end else
                                      self._read_stored(served, node, horizon_s, workload_type, workload_id, until)
                                      for node, s in zip(nodes, stored, strict=True)])
        own = workload_type is None  # a forecast the caller shaped with a workload type is not the node's own
        forecasts = await asyncio.gather(*(self._forecast(_node_window(s.history) if own else s.history, served)
                                           for s in stored))
        if own:
            try:
                forecasts = await self._follow_nodes(nodes, stored, forecasts)
            except Exception:  # noqa: BLE001 - the forecasts are made: answered with their static intervals
                logger.exception("power forecast: the windows of %d nodes not corrected online", len(nodes))
        age = max(s.age_s for s in stored)
        return StoredForecast(forecast=sum_forecasts(forecasts), age_s=age, stale=age > self.stale_after_s)

    async def forecast_windows(self, nodes: Sequence[str],
                               windows: Sequence[StoredHistory]) -> list[PowerForecast | Exception]:
        """The scaling controller's forecasts of its nodes' own stored windows (it reads them itself, at the served
        model's step), one per node in order; a failed one is its error, which never sinks the others.

        They are served with the blend the nodes' outcomes taught, but with the static calibration's intervals: the
        controller corrects its policies' peak bounds itself, from their own outcomes (autoscaler/policy_bounds.py),
        and the simulator replays just that (autoscaler/sim_forecast.py). After the answer, in the background, they
        are followed as a node's own `forecast_stored` is (each teaches its node's online calibration and its
        model's online blend, a node not followed yet warmed first), so a slow warm never holds up a tick.

        Raises:
            ValueError: not one node per window.
        """
        if len(nodes) != len(windows):
            raise ValueError(f"{len(nodes)} nodes for {len(windows)} windows: one node per window")
        answers = await asyncio.gather(*(self.forecast(_node_window(window.history)) for window in windows),
                                       return_exceptions=True)
        made = [row for row, answer in enumerate(answers) if isinstance(answer, PowerForecast)]
        if made:
            task = asyncio.get_running_loop().create_task(self._follow_quietly(
                [nodes[row] for row in made], [windows[row] for row in made], [answers[row] for row in made]))
            self._following.add(task)
            task.add_done_callback(self._following.discard)
        return [answer.model_copy(update={"blend_experts": None}) if isinstance(answer, PowerForecast) else
                _portable(answer) for answer in answers]

    async def _follow_quietly(self, nodes: Sequence[str], stored: Sequence[StoredHistory],
                              forecasts: Sequence[PowerForecast]) -> None:
        """`_follow_nodes` for windows already answered: a failure is logged, never raised."""
        try:
            await self._follow_nodes(nodes, stored, forecasts)
        except Exception:  # noqa: BLE001 - the controller has its forecasts; they only teach nothing this time
            logger.exception("power forecast: the scaling controller's windows of %d nodes not followed", len(nodes))

    async def _follow_nodes(self, nodes: Sequence[str], stored: Sequence[StoredHistory],
                            forecasts: Sequence[PowerForecast]) -> list[PowerForecast]:
        """The nodes' forecasts of their own stored windows corrected online, each kept to be scored on its node's
        next window (deployments/node_calibration.py; nodes not followed yet are warmed first, a few at a time),
        and published as the nodes' forecast gauges (those whose window is not stale)."""
        followed = await self._warm_calibrations(nodes, stored, forecasts)
        by_version = {version: self._served_at(version) for version in {f.model_version for f in forecasts}}
        corrected = []
        for node, window, forecast in zip(nodes, stored, forecasts, strict=True):
            served = by_version[forecast.model_version]
            if served is not None:  # else reloaded since the forecast: answered as made
                forecast = self.node_calibrations.correct(
                    node, window, forecast, served.forecaster.horizon,
                    follow=(forecast.model_version, node) in followed, blend_start=served.blend_start)
            if window.age_s <= self.stale_after_s:  # a window of a node silent for a while is no current forecast
                self.forecast_gauges.publish(node, forecast)
            else:
                self.forecast_gauges.withdraw(node, forecast.model_version)
            corrected.append(forecast)
        return corrected

    async def _warm_calibrations(self, nodes: Sequence[str], stored: Sequence[StoredHistory],
                                 forecasts: Sequence[PowerForecast]) -> set[tuple[str, str]]:
        """Warm the online calibration of the nodes this replica does not follow yet for their forecasts' model
        version (at most WARM_NODES_PER_REQUEST, concurrently, each once however many requests ask for it at a time;
        deployments/node_calibration.py); returns the (version, node) pairs followed now. A node whose replay
        failed, being replayed for another request, or beyond the first few, is warmed at a later request."""
        ready, cold = set(), {}
        for node, current, forecast in zip(nodes, stored, forecasts, strict=True):
            key = (forecast.model_version, node)
            if not self.node_calibrations.cold(*key):
                ready.add(key)
            elif len(cold) < WARM_NODES_PER_REQUEST and key not in self._warming:
                cold.setdefault(key, current)  # a node of two policies is replayed once
        self._warming.update(cold)
        try:
            replays = await asyncio.gather(*(self._replay(node, current, version)
                                             for (version, node), current in cold.items()))
        finally:
            self._warming.difference_update(cold)
        for (version, node), made in zip(cold, replays, strict=True):
            served = self._served_at(version)
            if made is None or served is None:
                continue
            if made and self.node_calibrations.cold(version, node):  # no other request warmed it meanwhile
                self.node_calibrations.warm(node, *zip(*made, strict=True), served.forecaster.horizon,
                                            served.blend_start)
            ready.add((version, node))
        return ready

    def _served_at(self, version: str) -> ServedPower | None:
        """The served model at `version` (e.g. "power_lstm/3"); None when none is (reloaded since)."""
        return next((s for s in list(self.served.values()) if s.model_version == version), None)

    async def _replay(self, node: str, current: StoredHistory,
                      version: str) -> list[tuple[StoredHistory, PowerForecast]] | None:
        """The node's windows before `current` since `version` was registered (`past_windows`), each with the
        forecast `version` makes from it over its whole horizon (every lead learns, whatever the request that warms
        the node asked for: each replica warms alike); None when they could not be read or forecast (logged)."""
        served = self._served_at(version)
        if served is None:  # reloaded since the request's forecast
            return None
        try:
            self._require_reads()
            windows = await run_holding(self._stored_reads, self._past_windows, served, node, current)
            answers = await asyncio.gather(*(self._forecast(_node_window(window.history, replay=True), served)
                                             for window in windows), return_exceptions=True)
        except Exception as exc:  # noqa: BLE001 - the node is answered all the same, and warmed at a later request
            logger.warning("power forecast: the online calibration of node %s not warmed yet: %s", node, exc,
                           exc_info=not isinstance(exc, StoreUnavailable))
            return None
        made = [(window, answer) for window, answer in zip(windows, answers, strict=True)
                if isinstance(answer, PowerForecast)]
        if windows and not made:
            logger.warning("power forecast: the online calibration of node %s not warmed yet: none of its %d past "
                           "windows could be forecast", node, len(windows))
            return None
        return made

    def _past_windows(self, served: ServedPower, node: str, current: StoredHistory) -> list[StoredHistory]:
        """The node's past windows for a warm-up replay (`past_windows`), counted towards the pause of stored reads
        as `_stored_history`'s reads are."""
        self._require_reads()
        try:
            windows = past_windows(self.store, node, current, sequence_length=served.forecaster.sequence_length,
                                   count=WARM_ORIGINS, since=served.registered_at,
                                   max_gap_s=served.forecaster.pipeline.max_gap_s,
                                   horizon_s=served.forecaster.horizon * served.forecaster.pipeline.step_s)
        except StoreUnavailable:
            self._note_read(node, failed=True)
            raise
        self._note_read(node, failed=False)
        return windows

    async def _read_stored(self, *args: Any) -> StoredHistory:
        """`_stored_history` off the event loop, at most MAX_STORED_READS at once per replica: requests without
        lists wait their turn rather than take every call the store actor answers (the collectors' writes and the
        scaling controller's reads share them); a read whose request was cancelled keeps its slot until it ends.
        During a pause of stored reads it fails at once, without waiting for a slot."""
        self._require_reads()
        return await run_holding(self._stored_reads, self._stored_history, *args)

    def _require_reads(self) -> None:
        """StoreUnavailable during a pause of stored reads (`_stored_history`)."""
        if (paused_s := self._reads_paused_until - time.monotonic()) > 0:
            raise StoreUnavailable(f"the telemetry store did not answer reads just now; reads resume in "
                                   f"{math.ceil(paused_s)} s")

    def _stored_history(self, served: ServedPower, node_id: str, horizon_s: int, workload_type: str | None,
                        workload_id: str | None, until: datetime | None = None) -> StoredHistory:
        """The model's window for the node, ending at its newest stored sample (or at the bin of `until`). Once reads
        of two nodes found the store unavailable within STORED_READ_PAUSE_S, the reads of the next STORED_READ_PAUSE_S
        fail at once (a read that succeeds meanwhile ends the pause): a store that hangs held every read slot for its
        timeout, and requests queued behind them for minutes. One node's own failures (a query too large for its
        backend) never pause the others'."""
        self._require_reads()
        try:
            stored = stored_history(self.store, node_id, step_s=served.forecaster.pipeline.step_s,
                                    sequence_length=served.forecaster.sequence_length, horizon_s=horizon_s,
                                    workload_type=workload_type, until=until, tell_stopped=True,
                                    max_gap_s=served.forecaster.pipeline.max_gap_s)
        except StoreUnavailable:
            self._note_read(node_id, failed=True)
            raise
        except NoStoredTelemetry as exc:
            self._note_read(node_id, failed=False)  # the store answered
            if workload_id is None:
                raise
            raise WorkloadTelemetryMissing(f"{exc} (workload {workload_id!r})") from exc
        self._note_read(node_id, failed=False)
        return stored

    def _note_read(self, node_id: str, *, failed: bool) -> None:
        """Count a stored read's outcome towards the pause of `_stored_history`."""
        with self._read_failures_lock:
            now = time.monotonic()
            if not failed:
                self._read_failures.clear()
                self._reads_paused_until = 0.0
                return
            self._read_failures = {node: at for node, at in self._read_failures.items()
                                   if now - at < STORED_READ_PAUSE_S}
            self._read_failures[node_id] = now
            if len(self._read_failures) >= 2:
                self._reads_paused_until = now + STORED_READ_PAUSE_S

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _batched(self, histories: list[PowerHistory],
                       served: list[ServedPower]) -> list[PowerForecast | Exception]:
        return await self._off_the_loop(histories, served)

    async def _off_the_loop(self, histories: list[PowerHistory],
                            served: list[ServedPower]) -> list[PowerForecast | Exception]:
        """`_infer` on the replica's inference thread, so that the event loop goes on answering (other requests, the
        health check, the registry follower) during a forward pass. One thread: the models' calls stay one at a
        time. The online blends' weights are read here, on the loop, which alone changes them."""
        weights = {model.model_version: self.node_calibrations.lstm_weight(model.model_version)
                   for history, model in zip(histories, served, strict=True) if history.node_window}
        infer = functools.partial(contextvars.copy_context().run, self._infer, histories, served, weights)
        return await asyncio.get_running_loop().run_in_executor(self._inference, infer)  # logs keep the request id

    def _infer(self, histories: list[PowerHistory], served: list[ServedPower],
               weights: Mapping[str, Any]) -> list[PowerForecast | Exception]:
        """One forward pass per served model version (and mode) for the histories it was chosen for; each history's
        forecast, or the error that its own pass raised (a pass that fails is retried one history at a time, so one
        history the model cannot take never fails the requests batched with it). `weights`: each version's online
        blend weight for the nodes' own windows."""
        groups: dict[tuple[str, bool], list[int]] = {}
        models: dict[str, ServedPower] = {}
        answers: dict[int, PowerForecast | Exception] = {}
        for index, (history, model) in enumerate(zip(histories, served, strict=True)):
            models[model.model_version] = model  # a batch across a reload: one pass per version
            groups.setdefault((model.model_version, history.node_window, history.replay), []).append(index)
        for (version, node_windows, replays), rows in groups.items():
            try:
                answers.update(zip(rows, self._pass(models[version], [histories[i] for i in rows],
                                                    weights, node_windows, timed=not replays), strict=True))
            except Exception as exc:  # noqa: BLE001 - answered per history below
                if len(rows) == 1:
                    answers[rows[0]] = exc
                    continue
                logger.warning("PowerPredictor: a batch of %d failed (%s); answering one by one", len(rows),
                               type(exc).__name__)
                for row in rows:
                    answers[row] = self._alone(models[version], histories[row], weights, node_windows,
                                               timed=not replays)
        return [answers[index] for index in range(len(histories))]

    def _pass(self, served: ServedPower, histories: list[PowerHistory], weights: Mapping[str, Any],
              node_windows: bool, *, timed: bool = True) -> list[PowerForecast]:
        """One forward pass; nodes' own stored windows (`node_windows`: a node's `forecast_stored`, the scaling
        controller's windows) with the blend their outcomes taught, any other history (a client's lists) with the
        calibration split's."""
        started = time.perf_counter()
        weight = weights.get(served.model_version) if node_windows else None
        forecasts = forecast_histories(served.forecaster, histories, served.model_version, synthetic=served.synthetic,
                                       lstm_weight=weight, follow_blend=node_windows)
        if timed:  # (not a warm-up replay: no request waited on it)
            served.latency.record((time.perf_counter() - started) * 1000.0, count=len(histories))
        return forecasts

    def _alone(self, served: ServedPower, history: PowerHistory, weights: Mapping[str, Any], node_window: bool, *,
               timed: bool = True) -> PowerForecast | Exception:
        try:
            return self._pass(served, [history], weights, node_window, timed=timed)[0]
        except Exception as exc:  # noqa: BLE001 - this history's own error, raised to its caller
            return exc

    def _default(self) -> ServedPower:
        if self.model_id not in self.served:
            raise RuntimeError(f"no model loaded: {self._unloadable or 'none yet'}")
        return self.served[self.model_id]

    def check_health(self) -> None:
        self._default()


def _node_window(history: PowerHistory, *, replay: bool = False) -> PowerHistory:
    """`history`, a node's own stored window, marked as one the replica follows online (`replay`: a past one, replayed
    to warm the node's online calibration)."""
    return history.model_copy(update={"node_window": True, "replay": replay})


async def _in_order(reads: list[Awaitable[StoredHistory]]) -> list[StoredHistory]:
    """The nodes' window reads at once (each waits for a read slot), answered in the nodes' order; where reads fail,
    the error of the first failed node in that order, once every read has ended."""
    found = await asyncio.gather(*reads, return_exceptions=True)
    for item in found:
        if isinstance(item, BaseException):
            raise item
    return found


async def _done(stored: StoredHistory) -> StoredHistory:
    """A window already read, as a read to wait for."""
    return stored


def _portable(error: BaseException) -> Exception:
    """A forecast's error as the controller gets it back: itself where it survives pickling, else a RuntimeError
    with its text (a cancellation, or an error whose class cannot be rebuilt from its arguments)."""
    try:
        if isinstance(error, Exception) and isinstance(pickle.loads(pickle.dumps(error)), Exception):
            return error
    except Exception:  # noqa: BLE001 - our own bytes, read straight back
        pass
    return RuntimeError(error_text(error))


def _default_device() -> str:
    """cuda where Ray gave this replica a GPU (`num_gpus`), else cpu: at 0 GPUs Ray leaves CUDA_VISIBLE_DEVICES as it
    is, so a replica without one sees every GPU of its node and would load onto one nothing reserved for it."""
    import ray
    import torch

    assigned = ray.is_initialized() and bool(ray.get_gpu_ids())
    return "cuda" if assigned and torch.cuda.is_available() else "cpu"

"""Time of one scaling-controller tick over 100 predictive policies (2 nodes each), in process, on 2 cores.

    python bench/bench_controller.py [--policies 100] [--nodes-per-policy 2] [--fleet-nodes 0] [--sequence-length 60]
                                     [--runs 10]

With `--fleet-nodes N` the policies share a fleet of N nodes (policy i lists N's nodes from i x nodes-per-policy on,
wrapping around), as policies over one cluster do: `--policies 200 --nodes-per-policy 1000 --fleet-nodes 1000` is
the largest configuration the API accepts at the default `auto_scaling.max_policies`, every policy listing every
node. Without it each policy has its own nodes.

ScalingController.tick() end to end against an embedded SqliteStore holding 1-minute telemetry (IPMI power + host
CPU utilization) for every node, ending now; the forecaster is an in-process PowerForecaster called once per tick
with the whole batch through `forecast_histories` and the online correction that follows each node's window (what
a PowerPredictor replica runs for `forecast_windows`, less the Serve hop, which is bench_serve's), and the
actuator is a dry run returning a fixed replica count. Store, forecaster and state are wrapped in timing proxies
to split the tick into store reads, history building, forecast, and the rest (decide + event writes). No Ray.
Weights are untrained: latency does not depend on their values.
Target: a tick under 1 s for 100 policies on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import autoscaler.controller as controller_module  # noqa: E402
from autoscaler.actuators import Actuator, Actuators, Scaled  # noqa: E402
from autoscaler.controller import ModelShape, ScalingController  # noqa: E402
from autoscaler.schema import ScalingTarget  # noqa: E402
from autoscaler.state import ControllerState  # noqa: E402
from core.forecasts import PowerForecast  # noqa: E402
from core.stores.sqlite import SqliteStore  # noqa: E402
from core.telemetry import Quality, SourceKind, TelemetrySample  # noqa: E402
from deployments.node_calibration import NodeCalibrations  # noqa: E402
from training.power.calibration import Calibration  # noqa: E402
from training.power.features import FeaturePipeline  # noqa: E402
from training.power.fit import build_model  # noqa: E402
from training.power.forecaster import Architecture, PowerForecaster  # noqa: E402
from training.power.inference import forecast_histories  # noqa: E402
from training.power.stored_history import StoredHistory  # noqa: E402

STEP_S = 60
HORIZON_STEPS = 30
LOOKAHEAD_MINUTES = 15
MARGIN_MINUTES = 180  # telemetry kept beyond the model window
REPLICAS = 3
BATCH = 10_000


class Timings:
    """Seconds and calls per label, reset every tick."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - began
                self.calls[label] += 1

        return timed


class TimedProxy:
    """Forwards every attribute to `target`; the named methods are timed under `prefix.method`."""

    def __init__(self, target: Any, timings: Timings, prefix: str, methods: Sequence[str]):
        self._target = target
        self._timed = {name: timings.wrap(f"{prefix}.{name}", getattr(target, name)) for name in methods}

    def __getattr__(self, name: str) -> Any:
        timed = self.__dict__.get("_timed", {})
        return timed[name] if name in timed else getattr(self._target, name)


class TimedStore(TimedProxy):
    """The store with `window` timed, and `latest` timed apart for all nodes (the tick) and one node (history)."""

    def __init__(self, target: SqliteStore, timings: Timings):
        super().__init__(target, timings, "store", ("window",))
        self._all = timings.wrap("store.latest_all", target.latest)
        self._one = timings.wrap("store.latest_node", target.latest)

    def latest(self, node_id: str | None = None) -> list:
        return self._all() if node_id is None else self._one(node_id)


class LocalForecaster:
    """The controller's `Forecaster` over an in-process PowerForecaster: one forward pass per batch, then each node's
    window followed online as a replica follows it (`NodeCalibrations.correct`; no warm replay: the model counts as
    registered when the bench starts, so there are no windows since to replay)."""

    def __init__(self, forecaster: PowerForecaster, version: str):
        self.forecaster, self.version = forecaster, version
        self.calibrations = NodeCalibrations()

    def shape(self) -> ModelShape:
        return ModelShape(model_version=self.version, step_s=self.forecaster.pipeline.step_s,
                          sequence_length=self.forecaster.sequence_length, horizon_steps=self.forecaster.horizon,
                          max_gap_s=self.forecaster.pipeline.max_gap_s)

    def forecast(self, nodes: Sequence[str], windows: Sequence[StoredHistory]) -> list[PowerForecast | Exception]:
        answers = forecast_histories(self.forecaster, [window.history for window in windows], self.version)
        for node, window, answer in zip(nodes, windows, answers, strict=True):
            self.calibrations.correct(node, window, answer, self.forecaster.horizon)
        return list(answers)


class DryRunActuator(Actuator):
    """Every kind has a fixed replica count; policies are dry_run, so `scale` is never reached."""

    kinds = ("ray_serve", "deployment", "statefulset", "raycluster")

    def replicas(self, target: ScalingTarget) -> int:
        return REPLICAS

    def scale(self, target: ScalingTarget, replicas: int) -> Scaled:
        raise AssertionError("dry_run policies must not scale")


def build_forecaster(sequence_length: int, hidden_size: int) -> PowerForecaster:
    """Untrained weights, scalers and a calibration as a trained artifact would have (like bench_inference)."""
    features = ("cpu_utilization", "memory_usage", "gpu_utilization", "npu_utilization", "temperature",
                "workload_type")
    pipeline = FeaturePipeline(features=features, step_s=STEP_S, power_mean=1200.0, power_std=300.0,
                               numeric_mean=dict.fromkeys(features[:5], 50.0),
                               numeric_std=dict.fromkeys(features[:5], 20.0),
                               workload_vocab=("batch", "idle", "inference", "training"))
    n_features = len(pipeline.feature_names)
    architecture = Architecture(n_features=n_features, sequence_length=sequence_length, horizon=HORIZON_STEPS,
                                hidden_size=hidden_size, num_layers=2, dropout=0.1)
    model = build_model(n_features, HORIZON_STEPS, hidden_size, 2, 0.1)
    calibration = Calibration(coverage=0.8, tolerance=0.1, margins_watts=tuple([150.0] * HORIZON_STEPS),
                              raw_knots=(0.0, 1.0), rate_knots=(0.0, 1.0), calibration_points=1000,
                              calibration_coverage=0.8)
    return PowerForecaster(model.state_dict(), architecture, pipeline, calibration)


def fill(store: SqliteStore, nodes: list[str], minutes: int) -> int:
    """1-minute IPMI power + host CPU utilization for every node, the newest sample now."""
    end = datetime.now(UTC).replace(microsecond=0)
    make = TelemetrySample.model_construct
    rng = np.random.default_rng(0)
    samples, written = [], 0
    for minute in range(minutes - 1, -1, -1):
        moment = end - timedelta(minutes=minute)
        load = 0.5 + 0.4 * np.sin(2 * np.pi * minute / 1440)
        for n, node in enumerate(nodes):
            samples.append(make(timestamp=moment, node_id=node, source=SourceKind.IPMI, device_id="node",
                                power_watts=float(800 + 600 * load + n % 50 + rng.normal(0, 20)), utilization=None,
                                memory_usage=None, temperature=None, power_limit_watts=None, energy_joules=None,
                                quality=Quality.OK))
            samples.append(make(timestamp=moment, node_id=node, source=SourceKind.HOST, device_id="node",
                                power_watts=None, utilization=float(100 * load), memory_usage=None, temperature=None,
                                power_limit_watts=None, energy_joules=None, quality=Quality.OK))
        if len(samples) >= BATCH:
            written += store.write(samples)
            samples = []
    return written + store.write(samples)


def policy(index: int, nodes: list[str]) -> dict[str, Any]:
    return {"name": f"policy-{index:03d}", "target": {"kind": "deployment", "name": f"app-{index:03d}"},
            "nodes": nodes, "min_replicas": 1, "max_replicas": 20, "mode": "dry_run",
            # the bench runs up to ~2 min after the fill; the store's default 120 s could turn late ticks stale
            "stale_after_s": 600,
            "power_based": {"enabled": True, "max_power_budget": 2000},
            "predictive_scaling": {"enabled": True, "lookahead_minutes": LOOKAHEAD_MINUTES,
                                   "confidence_threshold": 0.8}}


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policies", type=int, default=100)
    parser.add_argument("--nodes-per-policy", type=int, default=2)
    parser.add_argument("--fleet-nodes", type=int, default=0, help="policies share this many nodes (0: none shared)")
    parser.add_argument("--sequence-length", type=int, default=60)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if 0 < args.fleet_nodes < args.nodes_per_policy:
        parser.error("--fleet-nodes must be at least --nodes-per-policy (a policy lists each node once)")
    torch.set_num_threads(2)
    began = time.perf_counter()
    n_nodes = args.fleet_nodes or args.policies * args.nodes_per_policy
    nodes = [f"node-{n:04d}" for n in range(n_nodes)]
    timings = Timings()

    with tempfile.TemporaryDirectory() as scratch:
        store = SqliteStore(Path(scratch) / "telemetry")
        minutes = args.sequence_length + MARGIN_MINUTES
        filled_at = time.perf_counter()
        samples = fill(store, nodes, minutes)
        out(f"store: {samples:,} samples ({n_nodes} nodes x {minutes} min x 2 sources) written in "
            f"{time.perf_counter() - filled_at:.1f} s")

        forecaster = LocalForecaster(build_forecaster(args.sequence_length, args.hidden_size), "power_lstm/bench")
        state = ControllerState(Path(scratch) / "state" / "autoscaler.sqlite")
        controller = ScalingController(
            TimedProxy(state, timings, "state", ("policies", "policy_state", "record")),
            TimedStore(store, timings),
            TimedProxy(forecaster, timings, "forecaster", ("shape", "forecast")),
            Actuators([DryRunActuator()]))
        # stored_history's own work (pandas fill, PowerHistory) between its store reads, timed in place
        controller_module.stored_history = timings.wrap("history", controller_module.stored_history)
        for index in range(args.policies):
            first = index * args.nodes_per_policy
            controller.put_policy(policy(index, [nodes[(first + k) % n_nodes] for k in range(args.nodes_per_policy)]))

        ticks, parts, counts, unused = [], defaultdict(list), [], []
        for run in range(args.runs + 1):
            timings.reset()
            started = time.perf_counter()
            events = controller.tick()
            elapsed = time.perf_counter() - started
            if run == 0:
                out(f"warm-up tick: {elapsed:.3f} s")
                continue
            ticks.append(elapsed)
            s = timings.seconds
            split = {
                "store.latest(), all nodes": s["store.latest_all"],
                "store.latest(node), per node": s["store.latest_node"],
                "store.window(), per node": s["store.window"],
                "history build": s["history"] - s["store.latest_node"] - s["store.window"],
                "forecaster (1 batch)": s["forecaster.forecast"] + s["forecaster.shape"],
                "state reads (policies)": s["state.policies"] + s["state.policy_state"],
                "state.record (event writes)": s["state.record"],
            }
            split["rest (observe, decide, views)"] = elapsed - sum(split.values())
            for label, value in split.items():
                parts[label].append(value)
            parts["= store reads in all"].append(s["store.latest_all"] + s["store.latest_node"] + s["store.window"])
            counts.append((len(events), sum(e.signal == "forecast" for e in events),
                           sum(e.confidence is not None for e in events), timings.calls["store.window"],
                           timings.calls["store.latest_all"] + timings.calls["store.latest_node"],
                           timings.calls["forecaster.forecast"]))
            unused = [e.reason for e in events if e.signal != "forecast"]
        store.close()
        state.close()

    p50, p90 = np.percentile(ticks, [50, 90])
    worst = max(ticks)
    out(f"tick, {args.policies} policies x {args.nodes_per_policy} nodes ({n_nodes} distinct), sequence "
        f"{args.sequence_length}, hidden {args.hidden_size}, horizon {HORIZON_STEPS}, 2 threads, {args.runs} runs: "
        f"p50 {p50:.3f} s  p90 {p90:.3f} s  max {worst:.3f} s")
    out("breakdown, median seconds per tick (share of the p50 tick):")
    for label, values in parts.items():
        median = float(np.median(values))
        out(f"  {label:<30} {median:7.3f} s  {100 * median / p50:5.1f} %")
    events, forecast, confident, windows, latests, batches = counts[-1]
    out(f"per tick: {events} events written, {forecast} with signal == 'forecast', {confident} with a forecast "
        f"confidence (forecast used); store.window calls {windows}, store.latest calls {latests}, "
        f"forecaster.forecast calls {batches}")
    if unused:
        out(f"  first event not on the forecast signal: {unused[0]}")
    out(f"verdict: p50 tick {p50:.3f} s, max {worst:.3f} s vs target < 1 s for {args.policies} policies: "
        f"{'met' if worst < 1 else 'p50 met, max NOT met' if p50 < 1 else 'NOT met'}")
    out(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()

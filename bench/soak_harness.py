"""The soak test of issue 10 against a running app: clients, a telemetry writer and scaling policies, while the
store actor, a PowerPredictor replica and the scaling controller are killed in turn.

The app must already run on this driver's Ray (bench/soak.py starts one; tests/integration/test_soak.py uses
the test session's), with its scaling controller ticking every few seconds. `SoakRun.run` deploys two Serve
targets and one policy for each, so the scale actions to expect are certain:

- `soak-steady`: its node draws 95 % of its budget from the start: one scale-out, 1 -> 2 replicas (the step
  limit allows +1 per change), then its cooldown holds it there for the rest of the soak, across the controller's
  restart (a lost cooldown would scale it again, 2 -> 3);
- `soak-step`: its node draws 30 % until a second before the controller is killed, then 95 %: one scale-out
  applied around the kill, whichever side of it the tick falls (an intent whose write landed is completed, never
  repeated; one the kill stopped before its write is failed, and tried again once that write can no longer land).

Faults are injected at 1/4, 1/2 and 3/4 of the duration; each window's requests are counted apart.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
from pydantic import BaseModel, Field
from ray import serve

from bench.soak_faults import CONTROLLER_FAULT, REPLICA_FAULT, faults, wait_back
from bench.soak_load import Clients, TelemetryWriter, request_mix
from bench.soak_report import (
    FaultRecord,
    FaultSpan,
    SampleFigures,
    ScalingFigures,
    SoakReport,
    criteria,
    window_figures,
)
from core.names import POWER_APP
from core.stores.remote import RemoteStore

TARGET_DEPLOYMENT = "SoakWorker"
STEADY, STEP = "soak-steady", "soak-step"
HIGH_WATTS, LOW_WATTS = 950.0, 300.0  # of a 1000 W budget: above the 80 % scale-out, below the 50 % scale-in
NODES = {f"{STEADY}-node": HIGH_WATTS, f"{STEP}-node": LOW_WATTS, "soak-node-a": 240.0, "soak-node-b": 410.0}
BACKFILL_MINUTES = 40


@serve.deployment(name=TARGET_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0})
class SoakWorker:
    """A deployment that only exists to be scaled."""

    def __call__(self) -> str:
        return "ok"


class SoakPlan(BaseModel):
    """How long, how many clients, which app; the controller's tick interval is the app's."""

    duration_s: float = Field(180.0, ge=20)
    clients: int = Field(16, ge=1, le=64)
    power_app: str = POWER_APP
    recovery_timeout_s: float = Field(90.0, gt=0, description="how long a killed part may take to answer again")
    settle_s: float = Field(8.0, ge=0, description="wait after the load for the controller's last ticks")


def _target_app(policy: str) -> str:
    return f"{policy}-target"


def policy_body(name: str, predictive: bool) -> dict:
    """An enforced policy over a SoakWorker target and one node, +1 replica per change, a cooldown longer
    than any soak."""
    return {"name": name, "mode": "enforce", "min_replicas": 1, "max_replicas": 3, "nodes": [f"{name}-node"],
            "target": {"kind": "ray_serve", "app": _target_app(name), "deployment": TARGET_DEPLOYMENT},
            "power_based": {"max_power_budget": 1000, "scale_out_threshold": 80, "scale_in_threshold": 50,
                            "cooldown_period": "30min"},
            "predictive_scaling": {"enabled": predictive, "lookahead_minutes": 6, "confidence_threshold": 0.8},
            "behavior": {"scale_up": {"step_replicas": 1, "step_percent": 0}}}


def running_replicas(app: str) -> int | None:
    try:
        return serve.status().applications[app].deployments[TARGET_DEPLOYMENT].replica_states.get("RUNNING", 0)
    except KeyError:
        return None


def _wait_replicas(app: str, wanted: int, timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while (count := running_replicas(app)) != wanted and time.monotonic() < deadline:
        time.sleep(0.5)
    return count


class SoakRun:
    """One soak against the app at `base_url` (writes with `token`)."""

    def __init__(self, base_url: str, token: str, plan: SoakPlan | None = None):
        self.base_url, self.plan = base_url, plan or SoakPlan()
        self.auth = {"Authorization": f"Bearer {token}"}
        self.t0 = datetime.now(UTC).replace(microsecond=0)
        self.writer = TelemetryWriter(RemoteStore, NODES, self.t0)

    def run(self) -> SoakReport:
        """Set up, load, inject the faults, check; targets and policies are removed whatever happens."""
        with httpx.Client(base_url=self.base_url, timeout=60, headers=self.auth) as api:
            try:
                self._setup(api)
                return self._soak(api)
            finally:
                for name in (STEADY, STEP):
                    api.delete(f"/api/v1/scaling/policies/{name}")
                    serve.delete(_target_app(name))

    def _setup(self, api: httpx.Client) -> None:
        for name in (STEADY, STEP):
            serve.run(SoakWorker.bind(), name=_target_app(name), route_prefix=None, external_scaler_enabled=True)
        self.writer.backfill(BACKFILL_MINUTES)
        for name, predictive in ((STEADY, True), (STEP, False)):
            response = api.post("/api/v1/scaling/policies", json=policy_body(name, predictive))
            if response.status_code != 201:
                raise RuntimeError(f"policy {name}: {response.status_code} {response.text[:300]}")

    def _soak(self, api: httpx.Client) -> SoakReport:
        plan = self.plan
        started = time.monotonic()
        clients = Clients(self.base_url, plan.clients, request_mix(f"{STEADY}-node"), started)
        self.writer.start()
        clients.start()
        try:
            kills = self._inject_faults(started)
            # a slow recovery delays the faults after it: the last one still gets a quarter of the duration
            end = started + max(plan.duration_s, kills[-1][1].killed_at_s + plan.duration_s / 4)
            time.sleep(max(end - time.monotonic(), 0.0))
        finally:  # no thread outlives the soak
            answers = clients.stop()
            duration_s = time.monotonic() - started
            self.writer.stop()
        time.sleep(plan.settle_s)  # the controller's last ticks complete what an interrupted one left
        bounds = [0.0, *(span.killed_at_s for _, span in kills),
                  max([duration_s, *(a.done_s for a in answers)]) + 0.001]
        spans = [None, *(span for _, span in kills)]
        names = ["baseline", *(record.name for record, _ in kills)]
        all_faults = [span for _, span in kills]
        windows = [window_figures(answers, *window, all_faults=all_faults)
                   for window in zip(names, bounds[:-1], bounds[1:], spans, strict=True)]
        records = [record for record, _ in kills]
        samples = self._samples()
        scaling = [self._scaling(api, name) for name in (STEADY, STEP)]
        return SoakReport(clients=plan.clients, duration_s=round(duration_s, 1), windows=windows, faults=records,
                          samples=samples, scaling=scaling, criteria=criteria(windows, records, samples, scaling))

    def _inject_faults(self, started: float) -> list[tuple[FaultRecord, FaultSpan]]:
        """Each fault at its share of the duration, once the one before is back; times since `started`."""
        kills = []
        for index, fault in enumerate(faults(self.plan.power_app), start=1):
            due = started + self.plan.duration_s * index / 4
            if fault.name == CONTROLLER_FAULT:  # the step policy's scale-out falls due around the kill
                time.sleep(max(due - 1.0 - time.monotonic(), 0.0))
                self.writer.set(f"{STEP}-node", HIGH_WATTS)
            time.sleep(max(due - time.monotonic(), 0.0))
            kill = fault.kill()
            killed_at, killed = kill.at, kill.killed
            back = wait_back(fault, killed_at, self.plan.recovery_timeout_s)
            span = FaultSpan(killed_at - started, None if back is None else killed_at - started + back,
                             replica=fault.name == REPLICA_FAULT)
            kills.append((FaultRecord(name=fault.name, at_s=round(span.killed_at_s, 1), killed=killed,
                                      recovered_after_s=back), span))
        return kills

    def _samples(self) -> SampleFigures:
        """What the writer had acknowledged against what the store holds, node by node, read back at 1 s."""
        store = RemoteStore(timeout_s=30.0)
        start = self.t0 - timedelta(minutes=BACKFILL_MINUTES)
        end = datetime.now(UTC) + timedelta(seconds=1)
        per_node = {}
        for node in NODES:
            frame = store.window(node, start, end, 1)
            per_node[node] = (self.writer.written[node], int(frame["power_watts"].notna().sum()))
        return SampleFigures(written=sum(self.writer.written.values()), unacknowledged=len(self.writer.pending),
                             stored=sum(stored for _, stored in per_node.values()),
                             failed_writes=self.writer.failed_writes, per_node=per_node)

    def _scaling(self, api: httpx.Client, name: str) -> ScalingFigures:
        """The policy's scale events over the soak, read once its target's running replicas settle (a change the
        controller's kill interrupted before its write is tried again once that write can no longer land)."""
        replicas = _wait_replicas(_target_app(name), 2, 60.0)
        response = api.get("/api/v1/scaling/events", params={"policy": name, "limit": 1000})
        response.raise_for_status()
        changes = [e for e in response.json()["events"] if e["action"] != "hold"]
        statuses = [e["actuation"]["status"] for e in changes]
        failures = [e["actuation"]["detail"] for e in changes if e["actuation"]["status"] == "failed"]
        return ScalingFigures(policy=name, expected_actions=1, applied_actions=statuses.count("applied"),
                              failed_actions=len(failures), failures=failures,
                              pending_actions=statuses.count("pending"), expected_replicas=2, replicas=replicas)

"""Collector actors on a real local Ray: supervisor, store actor, replayed telemetry, and the API reading it."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import pandas as pd
import pytest
import ray

from collectors.settings import CollectorConfig
from collectors.store_actor import TelemetryStoreService, start_store_actor, store_actor_class
from collectors.supervisor import start_telemetry, stop_telemetry
from core.actors import find_actor
from core.names import NAMESPACE, STORE_ACTOR, SUPERVISOR_ACTOR, collector_actor
from core.stores.remote import RemoteStore
from core.stores.sqlite import DB_FILENAME
from core.stores.window import replay_samples
from core.telemetry_csv import load_telemetry_csv

pytestmark = pytest.mark.integration


def session_store(folder) -> dict[str, str]:
    """The session's store actor's settings (tests/conftest.py): the same settings find it, others replace it."""
    return {"TELEMETRY_DATA_DIR": str(folder)}


def _wait(predicate, timeout_s: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def telemetry(telemetry_store, ray_cluster, api, upm_sample, tmp_path_factory):
    """The session's store actor + a supervisor with the host source and a 1-minute replay at 600x. After the
    session's app: building it (telemetry off in its args) stops any supervisor."""
    folder = tmp_path_factory.mktemp("telemetry")
    frame = load_telemetry_csv(upm_sample)
    minute = (frame.set_index("timestamp").groupby("node_id")[["power_watts", "cpu_utilization"]]
              .resample("60s").mean().dropna(subset=["power_watts"]).reset_index())
    # The runs were days apart; start them together so every node replays at once.
    minute["timestamp"] -= minute.groupby("node_id")["timestamp"].transform("min") - pd.Timestamp(0, tz="UTC")
    replay_csv = folder / "replay.csv"
    minute.to_csv(replay_csv, index=False)
    config = CollectorConfig.model_validate({"telemetry": {"sampling_interval": "1s", "flush_interval": "1s",
                                                           "spill_dir": str(folder / "spill")}})
    supervisor = start_telemetry(config, selected=["host"], replay={"path": str(replay_csv), "speed": 600},
                                 store_settings=session_store(telemetry_store), reconcile_s=1.0)
    yield supervisor
    stop_telemetry()  # already done where the last test ran


def test_collectors_fill_the_store(telemetry):
    store = RemoteStore()
    nodes = _wait(lambda: {"hybrid_1", "radiance_1", "sysbench_2"} <= set(store.nodes()) and store.nodes(),
                  what="replayed nodes in the store")
    status = ray.get(telemetry.status.remote(), timeout=30)
    assert "replay" in status and any(key.startswith("node-") for key in status)
    host = next(value for key, value in status.items() if key.startswith("node-"))
    assert host["rounds"] >= 1 and host["sources"]
    [ray_node] = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    assert ray.get(telemetry.node_names.remote(), timeout=30) == {ray_node: host["node_id"]}  # the controller's map
    latest = {n.node_id: n for n in store.latest()}
    assert set(nodes) >= set(latest) >= {"hybrid_1"}
    assert latest["hybrid_1"].age_s < 30
    # Replay at 600x stamps a trace minute every 0.1 s of wall time: read it back at a 1-second step.
    def recent_bins() -> int:
        now = pd.Timestamp.now(tz="UTC")
        return int(store.window("hybrid_1", now - pd.Timedelta(seconds=20), now, 1)["power_watts"].notna().sum())

    assert _wait(lambda: recent_bins() >= 3, 30, "several recent one-second bins")


def test_supervisor_restarts_a_killed_collector(telemetry):
    status = ray.get(telemetry.status.remote(), timeout=30)
    key = next(k for k in status if k.startswith("node-"))
    ray.kill(ray.get_actor(collector_actor(key), namespace=NAMESPACE), no_restart=True)

    def restarted():
        try:
            return ray.get(ray.get_actor(collector_actor(key), namespace=NAMESPACE).status.remote(), timeout=5)
        except Exception:  # noqa: BLE001 - not back yet
            return None

    assert _wait(restarted, 60, "a new collector")["node_id"]


def test_store_outage_loses_nothing(telemetry):
    store = RemoteStore()
    _wait(lambda: store.latest("hybrid_1"), what="hybrid_1 data")
    ray.kill(ray.get_actor(STORE_ACTOR, namespace=NAMESPACE), no_restart=False)  # restarts from its SQLite file
    time.sleep(3)  # collectors keep sampling into their buffers meanwhile
    before = time.time()
    assert _wait(lambda: (latest := store.latest("hybrid_1")) and latest[0].timestamp.timestamp() > before,
                 90, "fresh samples after the restart")
    replay = ray.get(telemetry.status.remote(), timeout=30)["replay"]
    assert replay["dropped"] == {}, replay  # buffered through the outage, none dropped (counted in the next test)


def test_every_replayed_sample_is_stored_exactly_once(telemetry, telemetry_store):
    """After the outage above: stop the replay collector (it flushes) and count what reached the store."""
    replay = ray.get_actor(collector_actor("replay"), namespace=NAMESPACE)
    ray.get(replay.stop.remote(), timeout=90)
    status = ray.get(replay.status.remote(), timeout=30)
    assert status["buffered"] == 0 and status["samples"] > 100
    nodes = ("hybrid_1", "radiance_1", "sysbench_2")
    with closing(sqlite3.connect(f"file:{telemetry_store / DB_FILENAME}?mode=ro", uri=True)) as db:
        stored = db.execute(f"SELECT COUNT(*) FROM telemetry WHERE node_id IN ({','.join('?' * len(nodes))})",
                            nodes).fetchone()[0]
    assert stored == status["samples"]  # none lost in the outage, none stored twice by the replay


def test_api_lists_nodes_and_forecasts_from_stored_telemetry(telemetry, api, upm_sample):
    # The last 40 minutes of a real run, written at its own 1-minute spacing and ending now.
    frame = load_telemetry_csv(upm_sample)
    run = frame[frame["node_id"] == "hybrid_1"].set_index("timestamp")[["power_watts", "cpu_utilization"]]
    minutes = run.resample("60s").mean().dropna().iloc[-40:]
    now = pd.Timestamp.now(tz="UTC").floor("60s")
    samples = []
    for offset, (_, row) in enumerate(minutes.iterrows()):
        stamp = (now - pd.Timedelta(minutes=len(minutes) - 1 - offset)).to_pydatetime()
        samples += replay_samples(stamp, "api-node", row.to_dict())
    assert RemoteStore().write(samples) == len(samples)

    listed = {n["node_id"]: n for n in api.get("/api/v1/telemetry/nodes").json()["nodes"]}
    assert listed["api-node"]["power_watts"] > 0 and listed["api-node"]["stale"] is False
    response = api.post("/api/v1/predict/power", json={"workload_id": "w", "node_id": "api-node",
                                                       "prediction_horizon": "10m"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["history_source"] == "store" and body["stale"] is False and body["data_age_seconds"] < 120
    assert len(body["predictions"]) == 5 and body["window_coverage"] == 1.0
    # A short power list with the node_id: completed at the front from the node's stored telemetry
    short = {"workload_id": "w", "features": {"power_watts": [400.0, 410.0, 420.0]}, "prediction_horizon": "10m"}
    alone = api.post("/api/v1/predict/power", json=short).json()
    completed = api.post("/api/v1/predict/power", json={**short, "node_id": "api-node"}).json()
    assert alone["store_filled_steps"] == 0 and alone["padded_steps"] > 0
    assert completed["store_filled_steps"] > 0 and completed["history_source"] == "request"
    assert completed["padded_steps"] == alone["padded_steps"] - completed["store_filled_steps"]
    assert completed["window_coverage"] > alone["window_coverage"]
    unknown = api.post("/api/v1/predict/power", json={"workload_id": "w", "node_id": "no-such-node",
                                                      "prediction_horizon": "10m"})
    assert unknown.status_code == 404 and "no-such-node" in unknown.text

    # A workload of the config's `workloads` map: its second node has no telemetry yet, then it has.
    workload = {"workload_id": "api-workload", "prediction_horizon": "10m"}
    missing = api.post("/api/v1/predict/power", json=workload)
    assert missing.status_code == 503 and "api-node-2" in missing.text
    assert RemoteStore().write([s.model_copy(update={"node_id": "api-node-2"}) for s in samples]) == len(samples)
    summed = api.post("/api/v1/predict/power", json=workload)
    assert summed.status_code == 200, summed.text
    total = summed.json()
    assert total["nodes"] == ["api-node", "api-node-2"] and total["history_source"] == "store"
    one_node = body["predictions"]
    for node_point, workload_point in zip(one_node, total["predictions"], strict=True):
        assert workload_point["predicted_power"] == pytest.approx(2 * node_point["predicted_power"], abs=0.05)
        # each node's upper as corrected online when answered: api-node-2's first answer replayed its stored windows
        # (deployments/node_calibration.py), which moved the model's pooled correction a little
        assert workload_point["upper"] == pytest.approx(2 * node_point["upper"], rel=0.01)
    unmapped = api.post("/api/v1/predict/power", json={"workload_id": "not-in-config"})
    assert unmapped.status_code == 422 and "workloads" in unmapped.text


def test_stopping_telemetry_ends_the_supervisor_and_every_collector_and_keeps_the_store(telemetry):
    """Last in the module (it ends the fixture's telemetry): what the bootstrap does when telemetry is turned off."""
    collectors = [key for key in ray.get(telemetry.status.remote(), timeout=30)
                  if key == "replay" or key.startswith("node-")]
    assert collectors and stop_telemetry() is True
    assert find_actor(SUPERVISOR_ACTOR) is None
    _wait(lambda: all(find_actor(collector_actor(key)) is None for key in collectors), 60, "the collectors to end")
    assert "hybrid_1" in RemoteStore().nodes()  # the store actor and what it holds stay
    assert stop_telemetry() is False


def test_other_telemetry_settings_replace_the_supervisor_and_its_collectors(telemetry_store, tmp_path):
    """A redeploy with the same settings finds the running supervisor; with others (collectors are found by
    name, so they would keep the old ones) both are replaced."""
    def config(sampling: str) -> CollectorConfig:
        return CollectorConfig.model_validate({"telemetry": {"sampling_interval": sampling, "flush_interval": "1s",
                                                             "spill_dir": str(tmp_path / "spill")}})

    def node_collector(supervisor) -> str:
        key = _wait(lambda: next((k for k in ray.get(supervisor.status.remote(), timeout=30)
                                  if k.startswith("node-")), None), 60, "a node collector")
        return ray.get_actor(collector_actor(key), namespace=NAMESPACE)._actor_id.hex()

    store = session_store(telemetry_store)
    try:
        first = start_telemetry(config("1s"), selected=["host"], store_settings=store, reconcile_s=1.0)
        collector = node_collector(first)
        again = start_telemetry(config("1s"), selected=["host"], store_settings=store, reconcile_s=1.0)
        assert again._actor_id == first._actor_id and node_collector(again) == collector
        other = start_telemetry(config("2s"), selected=["host"], store_settings=store, reconcile_s=1.0)
        assert other._actor_id != first._actor_id and node_collector(other) != collector
    finally:
        stop_telemetry()


def test_other_store_settings_replace_the_store_actor_and_its_data_stays_on_disk(telemetry_store, tmp_path):
    session = session_store(telemetry_store)
    first = start_store_actor(session)
    assert start_store_actor(session)._actor_id == first._actor_id
    try:
        moved = start_store_actor({"TELEMETRY_DATA_DIR": str(tmp_path / "moved")})
        assert moved._actor_id != first._actor_id
        assert RemoteStore().nodes() == []  # the new backend: an empty store
    finally:
        start_store_actor(session)
    assert "hybrid_1" in RemoteStore().nodes()  # the session's data, on disk all along


def test_window_reads_never_hold_the_controller_the_latest_readings_or_the_writes(ray_cluster):
    """The actor answered 8 calls of any kind at once: anonymous stored-window forecasts from a few replicas filled
    them, and the scaling controller's latest readings timed out (every policy held on "store unavailable"). Its
    window reads then still waited behind such a flood, in the one window group, as did a retraining's (and the
    API's behind a retraining's weeks of telemetry)."""

    class SlowWindows:  # defined here: Ray sends it by value to its worker
        """A backend whose window reads take 3 s each (a flood of 7-day stored-window forecasts), but node "fast"'s."""

        def window(self, node_id, *args):
            if node_id != "fast":
                time.sleep(3)
            return "window"

        long_window = window  # a retraining's read (TelemetryStore.long_window)

        def latest(self, node_id=None):
            if node_id == "slow":  # a stored-window forecast's read of its node, on a slow backend
                time.sleep(3)
            return []

        def write(self, samples):
            return len(samples)

    class Service(TelemetryStoreService):  # the store actor's own methods, on that backend
        def __init__(self) -> None:
            self.store, self.future_tolerance_s = SlowWindows(), 60.0

    actor = store_actor_class(Service).options(max_concurrency=4).remote()
    try:
        ray.get(actor.latest.remote())
        windows = [actor.window.remote("n1", None, None, 60) for _ in range(12)]
        time.sleep(0.5)
        started = time.monotonic()
        assert ray.get(actor.latest.remote(), timeout=2) == [] and ray.get(actor.write.remote([]), timeout=2) == 0
        assert ray.get(actor.control_window.remote("fast", None, None, 60), timeout=2) == "window"
        assert ray.get(actor.retraining_window.remote("fast", None, None, 60), timeout=2) == "window"
        assert time.monotonic() - started < 2
        latest_flood = [actor.latest.remote("slow") for _ in range(8)]  # the default group's 4 slots, twice over
        time.sleep(0.3)
        assert ray.get(actor.control_latest.remote(), timeout=2) == []  # the controller's tick is not held
        queued = actor.window.remote("fast", None, None, 60)  # the same read in the API's group waits its turn
        assert not ray.wait([queued], timeout=1.5)[0]
        assert ray.get(windows, timeout=30) == ["window"] * 12 and ray.get(latest_flood, timeout=30) == [[]] * 8
        weeks = [actor.retraining_window.remote("n1", None, None, 60) for _ in range(4)]  # a retraining's slow reads
        time.sleep(0.5)
        assert ray.get(actor.window.remote("fast", None, None, 60), timeout=2) == "window"  # never hold the API's
        assert ray.get(weeks, timeout=30) == ["window"] * 4
    finally:
        ray.kill(actor)

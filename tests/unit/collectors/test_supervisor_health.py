"""When the supervisor replaces a collector: at once when it is dead, after UNANSWERED_PINGS unanswered pings in a
row when it is wedged or its sampling has stalled, never for one slow answer (a status call probing a slow NPU
tool made the health check time out, and the replacement lost the samples the collector had not flushed); at once
too when it runs with other settings (left by a replaced supervisor). Ray's calls are stood in for; no Ray."""

from __future__ import annotations

import logging
import threading

import pytest
from ray.exceptions import GetTimeoutError, RayActorError

from collectors import supervisor
from collectors.collector_actor import collector_fingerprint
from collectors.settings import CollectorConfig
from collectors.store_actor import store_fingerprint
from collectors.supervisor import UNANSWERED_PINGS, CollectorSupervisor

CONFIG = {"telemetry": {"sampling_interval": "10s"}}
SAME = collector_fingerprint(CONFIG, None, None)


class Method:
    def __init__(self, name: str, calls: list[str]):
        self.name, self.calls = name, calls

    def remote(self) -> str:
        self.calls.append(self.name)
        return self.name


class Handle:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.health, self.status = Method("health", self.calls), Method("status", self.calls)
        self.stop = Method("stop", self.calls)


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> list[Exception | float | None]:
    """What each ping gets, in order: None answers (a round just finished), a number is the seconds since the last
    round, an exception is raised by ray.get, a (fingerprint, seconds) pair is answered as it is."""
    queue: list[Exception | float | None] = []

    def get(_ref, timeout=None):
        outcome = queue.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, tuple):
            return outcome
        return SAME, 0.5 if outcome is None else outcome

    monkeypatch.setattr(supervisor.ray, "get", get)
    monkeypatch.setattr(supervisor.ray, "wait", lambda refs, num_returns=1, timeout=None: (refs, []))
    return queue


def bare() -> CollectorSupervisor:
    instance = object.__new__(CollectorSupervisor)
    instance._misses, instance._deaths, instance._restart_at = {}, {}, {}
    instance.reconcile_s = 10.0
    instance._stop = threading.Event()
    instance.stall_after_s = 120.0
    instance.config_data, instance.selected, instance.replay, instance.store = CONFIG, None, None, None
    return instance


def test_a_wedged_collector_is_replaced_only_after_pings_in_a_row_go_unanswered(answers):
    watcher, handle = bare(), Handle()
    answers += [GetTimeoutError()] * (UNANSWERED_PINGS - 1) + [None] + [GetTimeoutError()] * UNANSWERED_PINGS
    verdicts = [watcher._must_replace("node-a", handle) for _ in range(2 * UNANSWERED_PINGS)]
    assert verdicts == [False] * (2 * UNANSWERED_PINGS - 1) + [True]  # the answer in between reset the count
    assert set(handle.calls) == {"health"}  # the ping probes no source


def test_a_dead_collector_is_replaced_at_once(answers):
    answers.append(RayActorError())
    assert bare()._must_replace("node-a", Handle())


def test_a_collector_that_dies_at_every_start_is_logged_once_and_started_again_ever_less_often(
        answers, monkeypatch, caplog):
    """Before, a collector that could not start on its node (a bad setting in the node's environment) was killed and
    started again every round for ever, and why it died was never logged."""
    now, started = [0.0], []
    monkeypatch.setattr(supervisor.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(supervisor.ray, "nodes", lambda: [{"NodeID": "a", "Alive": True}])
    monkeypatch.setattr(supervisor, "kill_and_wait", lambda *args: True)
    watcher = bare()
    watcher.collectors = {"node-a": Handle()}
    watcher._start = lambda key, node_id: started.append(now[0]) or Handle()
    died = RayActorError()
    monkeypatch.setattr(RayActorError, "__str__", lambda self: "actor_id=1 ip=10.0.0.7\nConfigError: NODE_NAME: bad")
    for _ in range(100):  # every collector started dies in its constructor
        answers.append(died)
        watcher._reconcile()
        answers.clear()
        now[0] += watcher.reconcile_s
    # each death is found at the round after its start; started again at once, then 10, 20, 40, 80 s after that
    assert started[:5] == [0.0, 20.0, 50.0, 100.0, 190.0]
    assert started[-1] - started[-2] == supervisor.MAX_RESTART_WAIT_S + watcher.reconcile_s
    logged = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(logged) == 1 and "ConfigError: NODE_NAME: bad" in logged[0].getMessage()
    now[0] += supervisor.MAX_RESTART_WAIT_S
    watcher._reconcile()  # started again, without a ping
    answers.append(None)  # and it answers: its next death is replaced at once again
    watcher._reconcile()
    assert watcher._deaths == {} and watcher._restart_at == {}


def test_a_collector_whose_name_is_not_freed_in_time_is_started_later_not_found_again_dead(answers, monkeypatch):
    """Regression: get_if_exists handed back the ended actor, whose every call then failed."""
    now, started, freed = [0.0], [], [False]
    monkeypatch.setattr(supervisor.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(supervisor.ray, "nodes", lambda: [{"NodeID": "a", "Alive": True}])
    monkeypatch.setattr(supervisor, "kill_and_wait", lambda *args: freed[0])
    watcher = bare()
    watcher.collectors = {"node-a": Handle()}
    watcher._start = lambda key, node_id: started.append(now[0]) or Handle()
    answers.append(RayActorError())
    actions = watcher._reconcile()
    assert started == [] and "not freed" in actions["node-a"]
    freed[0], now[0] = True, supervisor.HEALTH_TIMEOUT_S
    watcher._reconcile()
    assert started == [supervisor.HEALTH_TIMEOUT_S]


def test_a_collector_whose_sampling_stalled_is_replaced_though_it_answers(answers):
    """A GPU read hung in the driver stops the sampling thread while the actor still answers: before, the ping
    (node_id) kept such a collector for ever and the node's telemetry had stopped unseen."""
    watcher = bare()
    answers += [500.0] * UNANSWERED_PINGS
    assert [watcher._must_replace("node-a", Handle()) for _ in range(UNANSWERED_PINGS)] == (
        [False] * (UNANSWERED_PINGS - 1) + [True])


def test_a_round_that_waits_out_a_long_read_timeout_is_no_stall():
    """Regression: the stall limit was 2 min whatever `read_timeout` (up to 10 min) allowed a round to wait for a
    hung source, so such a round got the collector replaced and the samples its other sources had read lost."""
    assert supervisor.stall_limit_s(5.0, 15.0) == supervisor.MIN_STALL_S  # the defaults: as before
    assert supervisor.stall_limit_s(30.0, 15.0) == 315.0  # 10 intervals and the read timeout
    assert supervisor.stall_limit_s(5.0, 300.0) == 350.0


def test_a_collector_started_with_other_settings_is_replaced_at_once(answers):
    """A supervisor replaced before it could stop its collectors (they did not answer in time) left them running
    with the old settings; the new one found them by name and kept them."""
    other = collector_fingerprint({"telemetry": {"sampling_interval": "1s"}}, None, None)
    answers += [(other, 0.5), (SAME, 0.5)]
    watcher = bare()
    assert watcher._must_replace("node-a", Handle())
    assert not watcher._must_replace("node-a", Handle())


def test_a_collector_started_against_another_store_is_replaced_at_once(answers):
    """Regression: the store's settings were no part of the fingerprints, so collectors that decided against
    Prometheus never to write kept running after the store moved to InfluxDB or SQLite (and the other way round
    every write failed)."""
    watcher = bare()
    watcher.store = store_fingerprint({"INFLUX_HOST": "http://influx:8086"}, None)
    answers += [(SAME, 0.5), (collector_fingerprint(CONFIG, None, None, watcher.store), 0.5)]
    assert watcher._must_replace("node-a", Handle())
    assert not watcher._must_replace("node-a", Handle())


def test_the_store_settings_are_part_of_the_supervisor_s_fingerprint(monkeypatch):
    started = []
    monkeypatch.setattr(supervisor, "start_store_actor", lambda *args: None)
    monkeypatch.setattr(supervisor, "start_head_singleton",
                        lambda service, name, fingerprint, stop, *args: started.append((fingerprint, args[-1])))
    for settings in ({"PROMETHEUS_URL": "http://prom:9090"}, {"PROMETHEUS_URL": "http://prom:9090"},
                     {"TELEMETRY_DATA_DIR": "/data/store"}, None):
        supervisor.start_telemetry(CollectorConfig(), store_settings=settings)
    prometheus, again, sqlite, default = started
    assert prometheus == again
    assert len({prometheus[0], sqlite[0], default[0]}) == 3
    assert sqlite[1] == supervisor.store_key({"TELEMETRY_DATA_DIR": "/data/store"}, None)  # what its collectors carry


def test_a_collector_answers_its_pings_beside_its_other_calls_which_stay_one_at_a_time():
    """Its status probes its sources (nvmlInit, npu-smi, a first IPMI read) outside any time limit: on an actor that
    answers one call at a time a hung driver held the health ping, and the collector was replaced for it; the
    other calls stay serialized; a stop starts at once, never behind queued status calls."""
    from collectors.collector_actor import PINGS, STOPS, CollectorActor

    groups = {name: getattr(method, "__ray_concurrency_group__", None) for name, method in vars(CollectorActor).items()
              if callable(method) and not name.startswith("_")}
    assert groups == {"node_id": PINGS, "health": PINGS, "status": None, "flush": None, "stop": STOPS}


def test_a_live_collector_replaced_flushes_what_it_holds_before_it_is_ended(answers, monkeypatch):
    """Regression (review): a collector replaced for other settings (or wedged) was killed at once, losing up to a
    flush interval of accepted samples held in memory, where the supervisor's own stop asks each to flush first."""
    monkeypatch.setattr(supervisor.ray, "nodes", lambda: [{"NodeID": node, "Alive": True} for node in "ab"])
    waits, order = [], []
    monkeypatch.setattr(supervisor.ray, "wait", lambda refs, num_returns=1, timeout=None: waits.append(
        (list(refs), num_returns, timeout)) or (refs, []))
    monkeypatch.setattr(supervisor, "kill_and_wait", lambda name, handle, timeout: order.append(list(handle.calls)))
    watcher = bare()
    watcher.collectors = {"node-a": Handle(), "node-b": Handle()}
    watcher._start = lambda key, node_id: Handle()
    other = collector_fingerprint({"telemetry": {"sampling_interval": "1s"}}, None, None)
    answers += [(other, 0.5), (other, 0.5)]
    watcher._reconcile()
    assert order == [["health", "stop"]] * 2  # each stopped (and so flushed) before it was killed
    assert waits == [(["stop", "stop"], 2, supervisor.HEALTH_TIMEOUT_S)]  # all at once, one deadline

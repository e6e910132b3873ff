"""The main ingress's routes around a stand-in replica: domain errors become the same HTTP answers (no Ray)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from app.access import Access
from app.ingress import api
from app.replica import serving_replica
from autoscaler.schema import ActuationResult, InvalidStoredPolicy, ScalingEvent, StoredPolicies
from autoscaler.settings import AutoScalingConfig
from autoscaler.state import (
    ControllerState,
    OverReplicasCap,
    StateUnavailable,
    TooManyPolicies,
    passing_errors_unavailable,
)
from core.actors import ActorUnavailable
from core.records import RecordNotFound
from core.registry_metadata import ModelNotFoundError
from core.stores.base import StoreUnavailable
from core.stores.remote import StoreActorUnavailable
from tests.factories import policy_data, unreadable

HINT = " (enable it with args.autoscaler.enabled)"
AUTH = {"Authorization": "Bearer t"}


class Unavailable:
    """A controller or store client whose actor is gone."""

    def __init__(self, error: Exception):
        self.error = error

    def call(self, method, *args):
        raise self.error

    async def call_async(self, method, *args):
        raise self.error

    def latest(self):
        raise self.error


class Controller:
    def __init__(self):
        self.calls: list = []

    def call(self, method, *args):
        self.calls.append((method, args))
        return {"stored_policy": None, "stored_policies": StoredPolicies(), "delete_policy": False,
                "put_policy": True}.get(method, [])

    async def call_async(self, method, *args):  # the actor client's, over this double's answers
        return self.call(method, *args)


class Records:
    def get(self, record_id):
        raise RecordNotFound("batches", record_id)


class Registry:
    def active_version(self, model_id):
        return None  # no pointer, as for a model never registered

    def get(self, model_id, version=None):
        raise ModelNotFoundError(model_id, version, "no versions under /srv/secret/trained_models")


class Replica:
    """Stands in for the ApiIngress replica."""

    scaling_defaults = AutoScalingConfig()
    batches = Records()
    registry = Registry()
    args = SimpleNamespace(power_model_id="power_lstm", cost_model_id="cost_gbm")

    def __init__(self):
        self.access = Access("t")
        self.controller = Controller()
        self.store = Unavailable(StoreActorUnavailable("the telemetry store is not running"))


@pytest.fixture
def replica():
    stand_in = Replica()
    api.dependency_overrides[serving_replica] = lambda: stand_in
    yield stand_in
    api.dependency_overrides.clear()


@pytest.fixture
def client(http):
    return http(api)


def detail(response) -> dict:
    [only] = response.json()["detail"]
    return only


def test_a_missing_controller_is_503_saying_how_to_enable_it(replica, client):
    replica.controller = Unavailable(ActorUnavailable(f"the scaling controller is not running{HINT}"))
    for response in (client.get("/api/v1/scaling/policies"), client.get("/api/v1/scaling/events")):
        assert response.status_code == 503
        assert detail(response) == {"loc": [], "msg": f"the scaling controller is not running{HINT}",
                                    "type": "unavailable"}


def test_policies_go_to_the_controller_and_unknown_names_are_404(replica, client):
    created = client.post("/api/v1/scaling/policies", json=policy_data(name="p1"), headers=AUTH)
    assert created.status_code == 201 and created.json()["name"] == "p1"
    assert replica.controller.calls[-1][0] == "put_policy"
    assert client.post("/api/v1/scaling/policies", json=policy_data(name="p1")).status_code == 401
    missing = client.get("/api/v1/scaling/policies/p2")
    assert missing.status_code == 404 and detail(missing)["loc"] == ["path", "name"]
    gone = client.delete("/api/v1/scaling/policies/p2", headers=AUTH)
    assert gone.status_code == 404 and "'p2'" in detail(gone)["msg"]


def test_store_errors_are_503_without_addresses(replica, client):
    response = client.get("/api/v1/telemetry/nodes")
    assert response.status_code == 503 and detail(response)["msg"] == "the telemetry store is not running"
    replica.store = Unavailable(StoreUnavailable("InfluxDB query at http://10.1.2.3:8086 failed"))
    response = client.get("/api/v1/telemetry/nodes")
    assert response.status_code == 503 and "10.1.2.3" not in response.text


def test_unknown_ids_are_404_without_paths(replica, client):
    batch = client.get("/api/v1/predict/batch/0123456789abcdef")
    assert batch.status_code == 404 and detail(batch)["loc"] == ["path", "batch_id"]
    model = client.get("/api/v1/models/nope/metrics")
    assert model.status_code == 404 and detail(model)["loc"] == ["path", "model_id"]
    assert "/srv/secret" not in model.text and "'nope'" in detail(model)["msg"]


def test_a_batch_power_item_without_history_is_422_naming_the_item(replica, client):
    items = [{"type": "power", "request": {"workload_id": "w"}}]
    response = client.post("/api/v1/predict/batch", json={"items": items}, headers=AUTH)
    assert response.status_code == 422
    assert detail(response)["loc"] == ["body", "items", 0, "request", "features"]
    assert "stored telemetry is not read" in detail(response)["msg"]


def test_route_methods_carry_resolved_annotations():
    """Serve pickles ApiIngress's route methods by value; string annotations would not resolve in the replica."""
    from app.ingress import ApiIngress

    for method in (ApiIngress.retrain, ApiIngress.retrain_status):
        assert not any(isinstance(annotation, str) for annotation in method.__annotations__.values()), method


class StoredInvalid(Controller):
    """A controller whose state holds one policy that no longer validates."""

    invalid = InvalidStoredPolicy(name="old", reason="power_based.max_power_budget: Input should be a finite number")

    def call(self, method, *args):
        self.calls.append((method, args))
        if method == "stored_policies":
            return StoredPolicies(invalid=[self.invalid])
        if method == "stored_policy":
            return self.invalid if args[0] == self.invalid.name else None
        return super().call(method, *args)


def test_a_stored_policy_that_no_longer_validates_is_listed_and_named_not_a_500(replica, client):
    replica.controller = StoredInvalid()
    listed = client.get("/api/v1/scaling/policies")
    assert listed.status_code == 200
    assert listed.json()["invalid"] == [{"name": "old", "reason": StoredInvalid.invalid.reason, "updated_at": None}]
    one = client.get("/api/v1/scaling/policies/old")
    assert one.status_code == 409 and detail(one)["loc"] == ["path", "name"]
    assert "finite number" in detail(one)["msg"] and "delete" in detail(one)["msg"]


class Full(Controller):
    def call(self, method, *args):
        if method == "put_policy":
            raise TooManyPolicies("at most 2 scaling policies (auto_scaling.max_policies); delete one first")
        return super().call(method, *args)


def test_a_policy_over_the_limit_is_409_naming_the_setting(replica, client):
    replica.controller = Full()
    response = client.post("/api/v1/scaling/policies", json=policy_data(name="p3"), headers=AUTH)
    assert response.status_code == 409 and "auto_scaling.max_policies" in detail(response)["msg"]


class StateBacked(Controller):
    """The controller's policy calls on a real state file."""

    def __init__(self, path):
        super().__init__()
        self.state = ControllerState(path)

    def call(self, method, *args):
        if method == "put_policy":
            return self.state.put_policy(*args[:1], datetime.now(UTC), expected=args[1])
        if method == "stored_policy":
            return self.state.stored_policy(args[0])
        return super().call(method, *args)


def test_a_policy_write_with_if_match_replaces_only_the_version_that_was_read(replica, client, tmp_path):
    """Regression (review): a POST replaced the whole policy whatever was stored, so of two editors the later one
    silently undid the other's change, and a retried old POST reverted a newer policy."""
    replica.controller = StateBacked(tmp_path / "state.sqlite")
    created = client.post("/api/v1/scaling/policies", json=policy_data(name="p1"), headers=AUTH)
    first = created.headers["etag"]
    assert created.status_code == 201 and client.get("/api/v1/scaling/policies/p1").headers["etag"] == first
    changed = client.post("/api/v1/scaling/policies", json=policy_data(name="p1", max_replicas=6),
                          headers={**AUTH, "If-Match": first})
    assert changed.status_code == 200 and changed.headers["etag"] != first
    stale = client.post("/api/v1/scaling/policies", json=policy_data(name="p1", max_replicas=3),
                        headers={**AUTH, "If-Match": first})
    assert stale.status_code == 412 and detail(stale)["loc"] == ["header", "if-match"]
    assert "changed since" in detail(stale)["msg"]
    assert client.get("/api/v1/scaling/policies/p1").json()["max_replicas"] == 6  # the other change kept
    gone = client.post("/api/v1/scaling/policies", json=policy_data(name="p9"), headers={**AUTH, "If-Match": "*"})
    assert gone.status_code == 412 and "does not exist" in detail(gone)["msg"]
    assert client.post("/api/v1/scaling/policies", json=policy_data(name="p1"),
                       headers={**AUTH, "If-Match": "*"}).status_code == 200
    malformed = client.post("/api/v1/scaling/policies", json=policy_data(name="p1"),
                            headers={**AUTH, "If-Match": first.strip('"')})
    assert malformed.status_code == 400 and detail(malformed)["loc"] == ["header", "if-match"]


class LowerCap(Controller):
    def call(self, method, *args):
        if method == "put_policy":
            raise OverReplicasCap("max_replicas (8) exceeds the controller's auto_scaling.max_replicas_cap (5); "
                                  "give one within it")
        return super().call(method, *args)


def test_a_policy_over_the_controllers_cap_is_422_naming_the_field(replica, client):
    replica.controller = LowerCap()
    response = client.post("/api/v1/scaling/policies", json=policy_data(name="p", max_replicas=8), headers=AUTH)
    assert response.status_code == 422 and detail(response)["loc"] == ["body", "max_replicas"]
    assert "auto_scaling.max_replicas_cap (5)" in detail(response)["msg"]


def test_models_are_listed_when_the_active_versions_metadata_broke(replica, client, tmp_path):
    from core.registry import ModelRegistry

    source = tmp_path / "artifact"
    source.mkdir()
    (source / "cost_model.json").write_text("{}")
    registry = ModelRegistry(tmp_path / "models")
    registry.publish("cost_gbm", source, model_type="lightgbm")
    registry.publish("cost_gbm", source, model_type="lightgbm")  # version 2, active
    (tmp_path / "models" / "cost_gbm" / "2" / "metadata.json").write_text("{bad")
    replica.registry = registry
    response = client.get("/api/v1/models")
    assert response.status_code == 200, response.text  # was a 500
    [model] = response.json()["models"]
    assert model["active_version"] == 1 and [v["version"] for v in model["versions"]] == [1]


def test_a_resolution_never_activated_is_listed_without_an_active_version(replica, client, tmp_path):
    """Only the default power model and the cost model serve their latest version without an ACTIVE pointer: an
    hourly model registered with --no-activate was listed as active while its horizons got a 422."""
    from core.registry import ModelRegistry

    source = tmp_path / "artifact"
    source.mkdir()
    (source / "weights.bin").write_text("w")
    registry = ModelRegistry(tmp_path / "models")
    spec = {"step_s": 60, "horizon_steps": 60, "sequence_length": 60}
    registry.publish("power_lstm", source, model_type="lstm", feature_spec=spec)
    (tmp_path / "models" / "power_lstm" / "ACTIVE").unlink()  # a registry from before the pointer
    registry.publish("power_lstm_1h", source, model_type="lstm", activate=False, feature_spec=spec)
    replica.registry = registry
    listed = {m["model_id"]: m for m in client.get("/api/v1/models").json()["models"]}
    assert (listed["power_lstm"]["active_version"], listed["power_lstm"]["step_seconds"]) == (1, 60)
    hourly = listed["power_lstm_1h"]
    assert (hourly["active_version"], hourly["step_seconds"], hourly["versions"][0]["active"]) == (None, None, False)
    # its metrics say the same, also without any pointer (they reported the latest version's scores as the active's)
    metrics = client.get("/api/v1/models/power_lstm_1h/metrics")
    assert metrics.status_code == 404 and "no version is active" in metrics.json()["detail"][0]["msg"]
    (tmp_path / "models" / "power_lstm_1h" / "ACTIVE").unlink()
    metrics = client.get("/api/v1/models/power_lstm_1h/metrics")
    assert metrics.status_code == 404 and "no version activated yet" in metrics.json()["detail"][0]["msg"]


def test_the_list_marks_the_version_the_power_app_is_pinned_to_as_the_one_served(replica, client, tmp_path):
    """Regression (review): with the default model pinned to version 1 (`user_config.model_version`) while version 2
    was active, the list gave version 2's horizon, which the pinned replicas answer with a 422. The active version
    stays the ACTIVE pointer's (a later review: it showed the pin, so no answer showed what serving goes back to)."""
    from core.registry import ModelRegistry

    source = tmp_path / "artifact"
    source.mkdir()
    (source / "weights.bin").write_text("w")
    registry = ModelRegistry(tmp_path / "models")
    registry.publish("power_lstm", source, model_type="lstm",
                     feature_spec={"step_s": 60, "horizon_steps": 30, "sequence_length": 60})
    registry.publish("power_lstm", source, model_type="lstm",
                     feature_spec={"step_s": 60, "horizon_steps": 60, "sequence_length": 60})  # version 2, active
    replica.registry = registry

    serving = {"pinned": True}

    class Describe:
        @staticmethod
        async def remote(model_id):
            return SimpleNamespace(model_version=f"{model_id}/1", latency_ms={}, **serving)

    async def pinned_power():
        return SimpleNamespace(describe=Describe())

    replica.power = pinned_power
    [model] = client.get("/api/v1/models").json()["models"]
    assert (model["served_version"], model["horizon_seconds"], model["active_version"]) == (1, 1800, 2), model
    assert [v["active"] for v in model["versions"]] == [False, True]
    serving["pinned"] = False  # a replica still on version 1 after version 2 was activated: the registry's says
    [model] = client.get("/api/v1/models").json()["models"]
    assert (model["served_version"], model["horizon_seconds"], model["active_version"]) == (2, 3600, 2), model


class LockedState(Controller):
    """A controller whose state file cannot be used just now: the error its actor raises, as Ray hands it on."""

    def call(self, method, *args):
        from ray.exceptions import RayTaskError

        try:
            with passing_errors_unavailable():
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        except StateUnavailable as exc:
            raise RayTaskError(method, "Traceback ... /srv/state/autoscaler.sqlite", exc).as_instanceof_cause() \
                from None


def test_a_controller_state_that_cannot_be_used_just_now_is_503_not_500(replica, client):
    replica.controller = LockedState()
    for response in (client.get("/api/v1/scaling/policies"),
                     client.post("/api/v1/scaling/policies", json=policy_data(name="p3"), headers=AUTH)):
        assert response.status_code == 503, response.text
        assert detail(response)["msg"] == ("the scaling controller's state cannot be used just now "
                                           "(ProgrammingError); try again")


def test_only_the_state_file_s_passing_errors_are_unavailable_a_bug_stays_an_error():
    with pytest.raises(StateUnavailable):
        with passing_errors_unavailable():
            raise sqlite3.OperationalError("database is locked: /srv/state/autoscaler.sqlite.lock held")
    with pytest.raises(sqlite3.OperationalError, match="no such column"):  # a bad query: a 500 with its traceback
        with passing_errors_unavailable():
            raise sqlite3.OperationalError("no such column: surprise")


def test_a_default_model_whose_versions_were_all_registered_without_activation_is_listed_as_not_served(
        replica, client, tmp_path):
    """Its first version was listed as active (served as the latest) while the replicas served none of them."""
    from core.registry import ModelRegistry

    source = tmp_path / "artifact"
    source.mkdir()
    (source / "cost_model.json").write_text("{}")
    registry = ModelRegistry(tmp_path / "models")
    registry.publish("cost_gbm", source, model_type="lightgbm", activate=False)
    replica.registry = registry
    [model] = client.get("/api/v1/models").json()["models"]
    assert model["active_version"] is None and not model["versions"][0]["active"]
    metrics = client.get("/api/v1/models/cost_gbm/metrics")
    assert metrics.status_code == 404 and "no version is active" in metrics.json()["detail"][0]["msg"]


class Eventful(Controller):
    """A controller whose last actuation failed with the addresses its actuator named."""

    def call(self, method, *args):
        if method != "events_page":
            return super().call(method, *args)
        return [ScalingEvent(
            at=datetime(2026, 1, 5, tzinfo=UTC), policy="web", target={"kind": "ray_serve", "app": "a",
                                                                       "deployment": "d"},
            action="scale_out", from_replicas=2, to_replicas=3, mode="enforce",
            reason="scale_out 2 -> 3: telemetry store failed: InfluxDB at http://10.0.0.9:8086 refused",
            actuation=ActuationResult(status="failed", detail="Ray dashboard at http://10.0.0.7:8265 not reachable; "
                                                              "kubeconfig /home/ops/.kube/config"))], None


def test_scaling_events_carry_no_internal_address_or_path(replica, client):
    """Reads are open by default: the controller's log keeps the addresses, the API does not show them."""
    replica.controller = Eventful()
    response = client.get("/api/v1/scaling/events")
    assert response.status_code == 200
    text = response.text
    assert "10.0.0." not in text and "/home/ops" not in text, text
    (event,) = response.json()["events"]
    assert event["actuation"]["detail"] == "Ray dashboard at <address> not reachable; kubeconfig .../config"


@pytest.mark.parametrize("field", ["stale_after_s", "actuation_delay"])
def test_a_400_digit_duration_in_a_policy_is_422_naming_it(replica, client, field):
    """Regression: Python reads a 400-digit JSON integer whole, and the duration check overflowed on it: a 500."""
    response = client.post("/api/v1/scaling/policies", json={**policy_data(name="p4"), field: 10**400}, headers=AUTH)
    assert response.status_code == 422 and detail(response)["loc"] == ["body", field], response.text


@pytest.mark.parametrize(("field", "value"), [("stale_after_s", list(range(100_000))),
                                              ("behavior", {"scale_down": {"stabilization_window": [0] * 100_000}})])
def test_regression_a_huge_value_for_a_duration_is_not_echoed_in_the_422(replica, client, field, value):
    """The duration checks put the whole value in their message: a 1.3 MB body got a 1.5 MB answer."""
    response = client.post("/api/v1/scaling/policies", json={**policy_data(name="p5"), field: value}, headers=AUTH)
    assert response.status_code == 422 and len(response.content) < 2_000, len(response.content)
    assert "a list is not a duration like" in detail(response)["msg"], response.text


def two_models(tmp_path):
    """A registry holding cost_gbm and other_gbm, one version each."""
    from core.registry import ModelRegistry

    source = tmp_path / "artifact"
    source.mkdir()
    (source / "cost_model.json").write_text("{}")
    registry = ModelRegistry(tmp_path / "models")
    for model_id in ("cost_gbm", "other_gbm"):
        registry.publish(model_id, source, model_type="lightgbm")
    return registry


def test_one_model_whose_active_pointer_cannot_be_read_leaves_the_others_listed(replica, client, tmp_path,
                                                                                 monkeypatch):
    registry = two_models(tmp_path)
    pointer = tmp_path / "models" / "cost_gbm" / "ACTIVE"
    unreadable(monkeypatch, pointer)
    replica.registry = registry
    response = client.get("/api/v1/models")
    assert response.status_code == 200, response.text
    listed = {m["model_id"]: m["active_version"] for m in response.json()["models"]}
    assert listed == {"cost_gbm": None, "other_gbm": 1}
    # its own route answers 503, not a 500 (the pointer's path stays in the log)
    metrics = client.get("/api/v1/models/cost_gbm/metrics")
    assert metrics.status_code == 503 and detail(metrics)["type"] == "unavailable", metrics.text
    assert "cannot be read right now" in detail(metrics)["msg"] and str(tmp_path) not in metrics.text


def test_a_stored_policy_s_reason_names_no_address(replica, client):
    """The reason of a stored policy that no longer validates quotes its values; unlike every event's, it reached
    the client as stored, with any address a value held."""
    class Leaky(StoredInvalid):
        invalid = InvalidStoredPolicy(name="old", reason="target.name: bad value (got 'http://10.0.0.7:8265/api')")

    replica.controller = Leaky()
    listed = client.get("/api/v1/scaling/policies").json()["invalid"][0]["reason"]
    one = detail(client.get("/api/v1/scaling/policies/old"))["msg"]
    assert "10.0.0.7" not in listed + one and "<address>" in listed and "<address>" in one


def test_an_empty_policy_filter_on_events_is_422_not_an_empty_list(replica, client):
    """Regression: `?policy=` matched no policy and answered [] as if there were no events."""
    response = client.get("/api/v1/scaling/events?policy=")
    assert response.status_code == 422 and detail(response)["loc"] == ["query", "policy"]


def test_one_model_whose_version_cannot_be_read_just_now_leaves_the_others_listed(replica, client, tmp_path,
                                                                                   monkeypatch):
    """A version's metadata that cannot be read just now stops that model's listing, not every model's (review)."""
    import errno
    from pathlib import Path

    registry = two_models(tmp_path)
    metadata = tmp_path / "models" / "cost_gbm" / "1" / "metadata.json"
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error"))
                        if self == metadata else read_bytes(self))
    replica.registry = registry
    response = client.get("/api/v1/models")
    assert response.status_code == 200, response.text
    assert [m["model_id"] for m in response.json()["models"]] == ["other_gbm"]
    metrics = client.get("/api/v1/models/cost_gbm/metrics")  # its own route: 503, the path in the log only
    assert metrics.status_code == 503 and "cannot be read right now" in detail(metrics)["msg"], metrics.text
    assert str(tmp_path) not in metrics.text


def test_the_models_listing_reads_each_version_s_metadata_once(replica, client, tmp_path, monkeypatch):
    """Review: the listing parsed every version's metadata two times, three for a model served without an ACTIVE
    pointer (the latest served): once to list the model, once to find the latest, once for the versions."""
    from core.registry import ModelRegistry

    registry = two_models(tmp_path)
    registry.publish("cost_gbm", tmp_path / "artifact", model_type="lightgbm")
    (tmp_path / "models" / "cost_gbm" / "ACTIVE").unlink()  # cost_gbm: the latest version is served
    loads = []
    load = ModelRegistry._load
    monkeypatch.setattr(ModelRegistry, "_load", lambda self, *key: loads.append(key) or load(self, *key))
    replica.registry = registry
    response = client.get("/api/v1/models")
    assert response.status_code == 200, response.text
    assert {m["model_id"]: m["active_version"] for m in response.json()["models"]} == {"cost_gbm": 2, "other_gbm": 1}
    assert sorted(loads) == [("cost_gbm", 1), ("cost_gbm", 2), ("other_gbm", 1)]

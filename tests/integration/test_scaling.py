"""The scaling controller on real Ray + Serve: policies and events over HTTP, a Serve deployment scaled
through the dashboard's REST API, and the detached controller actor surviving a kill with its state."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import ray
from ray import serve

from autoscaler.actor import controller_client
from autoscaler.actuators.serve import RayServeActuator
from autoscaler.schema import RayServeTarget
from core.app_watch import serve_deployments
from core.names import CONTROLLER_ACTOR, INGRESS_DEPLOYMENT, NAMESPACE
from core.stores.remote import RemoteStore
from core.telemetry import TelemetrySample
from tests.conftest import API_TOKEN

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
TARGET_APP, TARGET_DEPLOYMENT = "scale-target", "Worker"


@serve.deployment(name=TARGET_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0})
class Worker:
    """A deployment that only exists to be scaled."""

    def __call__(self) -> str:
        return "ok"


def policy(name: str, **overrides) -> dict:
    return {"name": name, "target": {"kind": "ray_serve", "app": TARGET_APP, "deployment": TARGET_DEPLOYMENT},
            "nodes": [f"{name}-node"], "min_replicas": 1, "max_replicas": 3, "mode": "enforce",
            "power_based": {"max_power_budget": 1000, "scale_out_threshold": 80, "scale_in_threshold": 50,
                            "cooldown_period": "10min"},
            "predictive_scaling": {"enabled": True, "lookahead_minutes": 6, "confidence_threshold": 0.8},
            **overrides}


def write_power(node: str, watts: float, minutes: int = 40) -> None:
    now = datetime.now(UTC)
    samples = [TelemetrySample(timestamp=now - timedelta(minutes=m), node_id=node, source="ipmi", power_watts=watts)
               for m in range(minutes)]
    assert RemoteStore().write(samples) == len(samples)


def running_replicas() -> int:
    status = serve.status().applications[TARGET_APP].deployments[TARGET_DEPLOYMENT]
    return status.replica_states.get("RUNNING", 0)


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def target(api):
    serve.run(Worker.bind(), name=TARGET_APP, route_prefix=None, external_scaler_enabled=True)
    yield
    serve.delete(TARGET_APP)


def tick() -> list[dict]:
    return [e.model_dump(mode="json") for e in controller_client().call("tick")]


def test_policies_api_creates_replaces_reads_and_deletes(api):
    unauthorized = api.post("/api/v1/scaling/policies", json=policy("api-crud"))
    assert unauthorized.status_code == 401
    created = api.post("/api/v1/scaling/policies", json=policy("api-crud"), headers=AUTH)
    assert created.status_code == 201, created.text
    replaced = api.post("/api/v1/scaling/policies", json=policy("api-crud", max_replicas=5), headers=AUTH)
    assert replaced.status_code == 200 and replaced.json()["max_replicas"] == 5
    assert api.get("/api/v1/scaling/policies/api-crud").json()["max_replicas"] == 5
    assert "api-crud" in [p["name"] for p in api.get("/api/v1/scaling/policies").json()["policies"]]
    assert api.delete("/api/v1/scaling/policies/api-crud", headers=AUTH).status_code == 204
    assert api.get("/api/v1/scaling/policies/api-crud").status_code == 404
    assert api.delete("/api/v1/scaling/policies/api-crud", headers=AUTH).status_code == 404


def test_keys_left_out_take_the_config_defaults(api):
    body = {"name": "api-defaults", "target": {"kind": "deployment", "name": "web"},
            "power_based": {"max_power_budget": 700}}
    stored = api.post("/api/v1/scaling/policies", json=body, headers=AUTH).json()
    assert stored["power_based"]["max_power_budget"] == 700
    assert stored["power_based"]["scale_out_threshold"] == 80 and stored["mode"] == "dry_run"
    api.delete("/api/v1/scaling/policies/api-defaults", headers=AUTH)


def test_a_partial_section_is_checked_against_the_config_defaults(api):
    # The config sets scale_in_threshold 40, so a scale-out threshold of 45 is valid (the model default, 50,
    # would not be): the policy is validated after the merge, not before.
    body = {"name": "api-partial", "target": {"kind": "deployment", "name": "web"},
            "power_based": {"scale_out_threshold": 45}}
    stored = api.post("/api/v1/scaling/policies", json=body, headers=AUTH)
    assert stored.status_code == 201, stored.text
    assert (stored.json()["power_based"]["scale_in_threshold"], stored.json()["power_based"]["scale_out_threshold"]) \
        == (40, 45)
    api.delete("/api/v1/scaling/policies/api-partial", headers=AUTH)
    not_an_object = api.post("/api/v1/scaling/policies", json=[1, 2], headers=AUTH)
    assert not_an_object.status_code == 422


@pytest.mark.parametrize(("change", "field", "phrase"), [
    ({"power_based": {"scale_in_threshold": 90, "scale_out_threshold": 80}}, "power_based", "must be below"),
    ({"min_replicas": 4, "max_replicas": 2}, None, "must not exceed max_replicas"),
    ({"power_based": {"max_power_budget": 0}}, "max_power_budget", "greater than or equal to 1"),
    ({"cluster_power_budget": -1}, "cluster_power_budget", "greater than 0"),
    ({"target": {"kind": "pods", "name": "x"}}, "target", "kind"),
    ({"mode": "yolo"}, "mode", "dry_run"),
])
def test_invalid_policies_are_refused_with_the_field_and_reason(api, change, field, phrase):
    response = api.post("/api/v1/scaling/policies", json={**policy("api-bad"), **change}, headers=AUTH)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(phrase in d["msg"] or phrase in str(d["loc"]) for d in detail), detail
    if field:
        assert any(field in d["loc"] for d in detail), detail
    assert api.get("/api/v1/scaling/policies/api-bad").status_code == 404  # nothing stored


def test_controller_scales_a_serve_deployment_and_survives_a_kill(api, target):
    name = "serve-out"
    assert api.post("/api/v1/scaling/policies", json=policy(name), headers=AUTH).status_code == 201
    write_power(f"{name}-node", 950)  # 95 % of the budget, above the 80 % threshold

    event = next(e for e in tick() if e["policy"] == name)
    assert (event["action"], event["from_replicas"], event["to_replicas"]) == ("scale_out", 1, 2), event
    assert event["actuation"]["status"] == "applied", event
    assert "forecast unavailable" not in event["reason"], event  # the served PowerPredictor answered
    assert event["forecast_power_watts"] is not None and event["measured_power_watts"] == pytest.approx(950)
    wait_for(lambda: running_replicas() == 2, 60, "the second Serve replica")

    ray.kill(ray.get_actor(CONTROLLER_ACTOR, namespace=NAMESPACE), no_restart=False)
    # Ray restarts it; the restarted actor reads policies, cooldown clocks and events back from its file.
    policies = wait_for(lambda: _try(lambda: controller_client().call("policies")), 60, "the restarted controller")
    assert name in [p.name for p in policies]
    after = next(e for e in tick() if e["policy"] == name)
    assert after["action"] == "hold" and "cooldown" in after["reason"], after
    assert after["from_replicas"] == 2  # read back from Serve

    events = api.get("/api/v1/scaling/events", params={"policy": name}).json()["events"]
    assert [e["id"] for e in events] == [after["id"], event["id"]]  # newest first, the old one kept
    since = api.get("/api/v1/scaling/events", params={"policy": name, "since": after["at"]}).json()["events"]
    assert [e["id"] for e in since] == [after["id"]]
    assert len(api.get("/api/v1/scaling/events", params={"limit": 1}).json()["events"]) == 1
    first = api.get("/api/v1/scaling/events", params={"policy": name, "limit": 1}).json()
    assert [e["id"] for e in first["events"]] == [after["id"]] and first["next_before_id"] == after["id"]
    older = api.get("/api/v1/scaling/events", params={"policy": name, "limit": 1,
                                                      "before_id": first["next_before_id"]}).json()
    assert [e["id"] for e in older["events"]] == [event["id"]] and older["next_before_id"] is None  # the last page
    assert api.get("/api/v1/scaling/events", params={"before_id": 0}).status_code == 422
    assert api.get("/api/v1/scaling/events", params={"limit": 0}).status_code == 422
    assert api.get("/api/v1/scaling/events", params={"since": "yesterday"}).status_code == 422
    api.delete(f"/api/v1/scaling/policies/{name}", headers=AUTH)


def test_a_serve_target_without_nodes_uses_the_nodes_of_its_replicas(api, target):
    [node] = [n["NodeManagerHostname"] for n in ray.nodes() if n["Alive"]]  # no collectors: the hostname
    write_power(node, 555)
    body = policy("serve-discover", mode="dry_run", nodes=[], predictive_scaling={"enabled": False})
    assert api.post("/api/v1/scaling/policies", json=body, headers=AUTH).status_code == 201
    event = next(e for e in tick() if e["policy"] == "serve-discover")
    assert f"nodes found from the target's replicas: {node}" in event["reason"], event
    assert event["measured_power_watts"] == pytest.approx(555)
    api.delete("/api/v1/scaling/policies/serve-discover", headers=AUTH)


def test_dry_run_and_unknown_target_touch_nothing(api, target, ray_dashboard_url):
    """The target count Serve holds, which a scale call sets at once (its RUNNING replicas follow seconds later)."""
    serve_target = RayServeTarget(app=TARGET_APP, deployment=TARGET_DEPLOYMENT)

    def target_replicas() -> int:
        return RayServeActuator(ray_dashboard_url).replicas_now(serve_target)

    replicas = target_replicas()
    api.post("/api/v1/scaling/policies", json=policy("serve-dry", mode="dry_run"), headers=AUTH)
    api.post("/api/v1/scaling/policies", json=policy("serve-missing", target={
        "kind": "ray_serve", "app": "no-such-app", "deployment": "X"}), headers=AUTH)
    write_power("serve-dry-node", 990)
    by_policy = {e["policy"]: e for e in tick()}
    dry = by_policy["serve-dry"]
    assert dry["action"] == "scale_out" and dry["actuation"]["status"] == "dry_run"
    missing = by_policy["serve-missing"]
    assert missing["action"] == "hold" and "no-such-app" in missing["reason"]
    assert target_replicas() == replicas
    for name in ("serve-dry", "serve-missing"):
        api.delete(f"/api/v1/scaling/policies/{name}", headers=AUTH)


def _try(call):
    try:
        return call()
    except Exception:  # noqa: BLE001 - not back yet
        return None


def test_the_app_watch_sees_the_running_apps_from_inside_the_cluster(api, target):
    """What the controller, the scheduler and the supervisor ask Serve to tell whether their app still runs
    (core/app_watch.py), asked where they ask it: in a Ray worker of the cluster."""

    @ray.remote(num_cpus=0)
    def look() -> set[str]:
        return serve_deployments()()

    assert {INGRESS_DEPLOYMENT, TARGET_DEPLOYMENT} <= ray.get(look.remote(), timeout=60)

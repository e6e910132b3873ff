"""KubernetesActuator against kmock, an in-memory stand-in for the Kubernetes API server (see
tests/servers/kmock_apiserver.py for what it does not check: RBAC, validation, strategic merge).

Objects are seeded straight into the emulator; assertions read them back from it and inspect the requests
it recorded (method, path, content type, body).
"""

from __future__ import annotations

import socket

import kmock
import pytest
from kubernetes import client

from autoscaler.actuators import Actuators
from autoscaler.actuators.base import ActuationError, CountMoved, OutsideBounds
from autoscaler.actuators.kubernetes import KubernetesActuator, load_api_client
from autoscaler.schema import (
    ActuationStatus,
    DeploymentTarget,
    RayClusterTarget,
    RayServeTarget,
    ScalingPolicy,
    StatefulSetTarget,
)
from tests import factories
from tests.servers.kmock_apiserver import KUBECONFIG_TEMPLATE, kmock_apiserver

pytestmark = pytest.mark.integration

RAYCLUSTERS = "ray.io/v1/rayclusters"


@pytest.fixture(scope="module")
def apiserver():
    with kmock_apiserver() as (url, emulator):
        yield url, emulator


@pytest.fixture(scope="module")
def actuator(apiserver):
    configuration = client.Configuration()
    configuration.host = apiserver[0]
    with client.ApiClient(configuration) as api_client:
        yield KubernetesActuator(api_client, timeout_s=5)


@pytest.fixture
def emulator(apiserver) -> kmock.KubernetesEmulator:
    return apiserver[1]


def requests_during(emulator, action):
    """Run `action()`; return (its result, the requests the emulator received meanwhile)."""
    before = len(list(emulator))
    result = action()
    return result, list(emulator)[before:]


def raycluster(name: str, *groups: tuple[str, int, int, int]) -> dict:
    specs = [{"groupName": group, "replicas": replicas, "minReplicas": low, "maxReplicas": high}
             for group, replicas, low, high in groups]
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": name, "namespace": "default"},
            "spec": {"headGroupSpec": {}, "workerGroupSpecs": specs}}


@pytest.mark.parametrize(("target_type", "plural"), [(DeploymentTarget, "deployments"),
                                                     (StatefulSetTarget, "statefulsets")])
def test_workload_is_read_and_scaled_through_the_scale_subresource(actuator, emulator, target_type, plural):
    name, resource = f"web-{plural}", f"apps/v1/{plural}"
    emulator.objects[resource, "default", name] = {"metadata": {"name": name, "namespace": "default"},
                                                   "spec": {"replicas": 2, "template": {}}}
    target = target_type(name=name)
    assert actuator.replicas(target) == 2

    scaled, requests = requests_during(emulator, lambda: actuator.scale(target, 5))

    assert (scaled.detail, scaled.replicas) == (f"{target.kind} default/{name}: replicas 2 -> 5", 5)
    assert emulator.objects[resource, "default", name]["spec"] == {"replicas": 5, "template": {}}
    scale_path = f"/apis/apps/v1/namespaces/default/{plural}/{name}/scale"
    assert [(r.method.value, r.url.path) for r in requests] == [("GET", scale_path), ("PATCH", scale_path)]
    assert requests[1].data == {"spec": {"replicas": 5}}
    assert actuator.replicas(target) == 5


def test_a_workload_write_carries_the_resource_version_it_read_and_a_conflict_reads_as_one(actuator, emulator):
    """The API server refuses a patch whose resourceVersion is stale (409), so a count set by someone else between
    the read and the write stays; kmock checks no versions (and stores the write all the same), so the conflict is
    answered as the server would, and what is checked here is the version sent and the error read
    (tests/unit/autoscaler/test_k8s_conflicts.py checks that nothing changes)."""
    emulator.objects["apps/v1/deployments", "default", "versioned"] = {
        "metadata": {"name": "versioned", "namespace": "default", "resourceVersion": "41"}, "spec": {"replicas": 2}}
    target = DeploymentTarget(name="versioned")
    _, requests = requests_during(emulator, lambda: actuator.scale(target, 3))
    assert requests[-1].data == {"spec": {"replicas": 3}, "metadata": {"resourceVersion": "41"}}

    conflict = {"kind": "Status", "code": 409, "reason": "Conflict", "message": "the object has been modified"}
    emulator[kmock.method.PATCH, kmock.resource("apps", "v1", "deployments"), kmock.name("versioned")] \
        << 409 << conflict
    with pytest.raises(ActuationError, match=r"cannot scale deployment default/versioned: conflict \(409\): the "
                                             r"object has been modified; it changed since it was read"):
        actuator.scale(target, 4)


def test_raycluster_patch_scales_only_the_named_worker_group(actuator, emulator):
    emulator.objects[RAYCLUSTERS, "default", "rc"] = raycluster("rc", ("cpu", 1, 0, 4), ("gpu", 2, 1, 8))
    target = RayClusterTarget(name="rc", worker_group="gpu")
    assert actuator.replicas(target) == 2

    scaled, requests = requests_during(emulator, lambda: actuator.scale(target, 6))

    assert (scaled.detail, scaled.replicas) == ("raycluster default/rc worker group 'gpu': replicas 2 -> 6", 6)
    cpu, gpu = emulator.objects[RAYCLUSTERS, "default", "rc"]["spec"]["workerGroupSpecs"]
    assert (cpu["groupName"], cpu["replicas"], gpu["groupName"], gpu["replicas"]) == ("cpu", 1, "gpu", 6)
    patch = requests[-1]
    assert (patch.method.value, patch.url.path) == ("PATCH", "/apis/ray.io/v1/namespaces/default/rayclusters/rc")
    assert patch.headers["Content-Type"] == "application/json-patch+json"
    assert patch.data == [{"op": "test", "path": "/spec/workerGroupSpecs/1/groupName", "value": "gpu"},
                          {"op": "test", "path": "/spec/workerGroupSpecs/1/replicas", "value": 2},
                          {"op": "add", "path": "/spec/workerGroupSpecs/1/replicas", "value": 6}]
    assert actuator.replicas(RayClusterTarget(name="rc", worker_group="cpu")) == 1


def test_a_worker_group_count_an_admission_webhook_changed_is_the_one_returned(actuator, emulator):
    """The API server answers the patch with the object it stored; a mutating webhook capped the group at 4."""
    emulator.objects[RAYCLUSTERS, "default", "admitted"] = raycluster("admitted", ("gpu", 2, 1, 8))
    stored = raycluster("admitted", ("gpu", 4, 1, 8))
    emulator[kmock.method.PATCH, kmock.resource("ray.io", "v1", "rayclusters"), kmock.name("admitted")] << 200 << stored
    scaled = actuator.scale(RayClusterTarget(name="admitted", worker_group="gpu"), 6)
    assert scaled.replicas == 4
    assert scaled.detail == ("raycluster default/admitted worker group 'gpu': replicas 2 -> 4 (asked for 6: the API "
                             "server's admission stored 4)")


def test_a_worker_groups_count_is_read_with_its_bounds_in_one_request(actuator, emulator):
    """The controller decides within them (a group at maxReplicas holds, rather than being refused every tick)."""
    emulator.objects[RAYCLUSTERS, "default", "rc"] = raycluster("rc", ("gpu", 2, 1, 3))
    emulator.objects[RAYCLUSTERS, "default", "open"] = {**raycluster("open"), "spec": {"workerGroupSpecs": [
        {"groupName": "cpu", "replicas": 4}]}}  # the CRD's defaults: 0 and 2^31 - 1

    count, requests = requests_during(emulator, lambda: actuator.read(RayClusterTarget(name="rc", worker_group="gpu")))
    assert (count.replicas, count.bounds) == (2, (1, 3)) and [r.method.value for r in requests] == ["GET"]
    assert actuator.read(RayClusterTarget(name="open", worker_group="cpu")).bounds == (0, 2**31 - 1)
    emulator.objects["apps/v1/deployments", "default", "web"] = {"metadata": {"name": "web", "namespace": "default"},
                                                                 "spec": {"replicas": 2, "template": {}}}
    assert actuator.read(DeploymentTarget(name="web")).bounds is None


def test_raycluster_reordered_after_the_read_is_not_scaled(actuator, emulator):
    stored = raycluster("moving", ("gpu", 2, 0, 8), ("cpu", 1, 0, 8))
    emulator.objects[RAYCLUSTERS, "default", "moving"] = stored
    # Reads see the old order (gpu second); the patch applies to the stored one, so its `test` op fails.
    stale = raycluster("moving", ("cpu", 1, 0, 8), ("gpu", 2, 0, 8))
    emulator[kmock.method.GET, kmock.resource("ray.io", "v1", "rayclusters"), kmock.name("moving")] << stale

    # kmock answers a failed `test` op 500 (Kubernetes: 422, a plain refusal: tests/unit/autoscaler/test_k8s_errors.py)
    with pytest.raises(ActuationError, match=r"cannot scale raycluster default/moving: .*\(500\)"):
        actuator.scale(RayClusterTarget(name="moving", worker_group="gpu"), 5)
    assert emulator.objects[RAYCLUSTERS, "default", "moving"]["spec"] == stored["spec"]


def test_raycluster_changed_after_the_read_is_not_scaled(actuator, emulator):
    """Someone else's count (an operator, Ray's own autoscaler) set between the read and the write stays."""
    emulator.objects[RAYCLUSTERS, "default", "busy"] = raycluster("busy", ("gpu", 4, 0, 8))
    stale = raycluster("busy", ("gpu", 2, 0, 8))  # what the read sees
    emulator[kmock.method.GET, kmock.resource("ray.io", "v1", "rayclusters"), kmock.name("busy")] << stale

    with pytest.raises(ActuationError, match=r"cannot scale raycluster default/busy: .*\(500\)"):  # 422 in k8s
        actuator.scale(RayClusterTarget(name="busy", worker_group="gpu"), 6)
    assert emulator.objects[RAYCLUSTERS, "default", "busy"]["spec"]["workerGroupSpecs"][0]["replicas"] == 4


def test_a_worker_group_moved_since_the_decision_is_not_written(actuator, emulator):
    """A decided write checks the decision's count on the read its patch is made on: no patch is sent."""
    emulator.objects[RAYCLUSTERS, "default", "moved"] = raycluster("moved", ("gpu", 3, 0, 8))
    target = RayClusterTarget(name="moved", worker_group="gpu")
    with pytest.raises(CountMoved) as moved:
        requests_during(emulator, lambda: actuator.scale_from(target, 2, 5))
    assert moved.value.replicas == 3

    _, requests = requests_during(emulator, lambda: actuator.scale_from(target, 3, 5))
    assert [r.method.value for r in requests] == ["GET", "PATCH"]
    assert requests[-1].data[1] == {"op": "test", "path": "/spec/workerGroupSpecs/0/replicas", "value": 3}
    assert emulator.objects[RAYCLUSTERS, "default", "moved"]["spec"]["workerGroupSpecs"][0]["replicas"] == 5


def test_a_scale_out_past_maxreplicas_goes_to_the_bound_on_one_read_each(actuator, emulator):
    emulator.objects[RAYCLUSTERS, "default", "capped"] = raycluster("capped", ("gpu", 2, 1, 3))
    policy = ScalingPolicy.model_validate(factories.policy_data(
        name="capped", target={"kind": "raycluster", "name": "capped", "worker_group": "gpu"}, mode="enforce"))

    result, requests = requests_during(emulator, lambda: Actuators([actuator]).apply(policy, 2, 5))

    assert (result.status, result.replicas) == (ActuationStatus.APPLIED, 3)
    assert result.detail.endswith("(the target's maxReplicas 3; the decision asked for 5)")
    assert [r.method.value for r in requests] == ["GET", "GET", "PATCH"]
    assert emulator.objects[RAYCLUSTERS, "default", "capped"]["spec"]["workerGroupSpecs"][0]["replicas"] == 3


@pytest.mark.parametrize("replicas", [0, 9])
def test_replicas_outside_the_worker_group_bounds_are_refused_with_the_bounds(actuator, emulator, replicas):
    """KubeRay would clamp them silently; the refusal carries the bounds, so the caller can ask for the bound
    (autoscaler.actuators.Actuators.apply)."""
    emulator.objects[RAYCLUSTERS, "default", "bounded"] = raycluster("bounded", ("gpu", 2, 1, 8))

    before = len(list(emulator))
    with pytest.raises(OutsideBounds, match=rf"'gpu': {replicas} replicas is outside .*\[1, 8\]") as refused:
        actuator.scale(RayClusterTarget(name="bounded", worker_group="gpu"), replicas)
    assert (refused.value.low, refused.value.high) == (1, 8)
    assert [r.method.value for r in list(emulator)[before:]] == ["GET"]  # read, never patched
    assert emulator.objects[RAYCLUSTERS, "default", "bounded"]["spec"]["workerGroupSpecs"][0]["replicas"] == 2


@pytest.mark.parametrize(("target", "message"), [
    (DeploymentTarget(name="absent"), r"^deployment default/absent not found \(404\)"),
    (StatefulSetTarget(name="absent", namespace="other"), r"^statefulset other/absent not found \(404\)"),
    (RayClusterTarget(name="absent", worker_group="gpu"), r"^raycluster default/absent not found \(404\)"),
])
def test_missing_objects_are_named(actuator, target, message):
    with pytest.raises(ActuationError, match=message):
        actuator.replicas(target)
    with pytest.raises(ActuationError, match=message):
        actuator.scale(target, 1)


def test_missing_worker_group_lists_the_existing_ones(actuator, emulator):
    emulator.objects[RAYCLUSTERS, "default", "groups"] = raycluster("groups", ("cpu", 1, 0, 4), ("gpu", 1, 0, 4))

    with pytest.raises(ActuationError, match=r"raycluster default/groups has no worker group 'tpu' "
                                             r"\(groups: 'cpu', 'gpu'\)"):
        actuator.scale(RayClusterTarget(name="groups", worker_group="tpu"), 2)


def test_forbidden_points_at_the_rbac(actuator, emulator):
    emulator.objects["apps/v1/deployments", "default", "locked"] = {"spec": {"replicas": 1}}
    # kmock has no RBAC: answer this one request as the API server would for a missing `patch` permission.
    forbidden = {"kind": "Status", "code": 403, "reason": "Forbidden",
                 "message": 'deployments.apps "locked" is forbidden: cannot patch resource "deployments/scale"'}
    emulator[kmock.method.PATCH, kmock.resource("apps", "v1", "deployments"), kmock.name("locked")] << 403 << forbidden

    with pytest.raises(ActuationError, match=r"cannot scale deployment default/locked: forbidden \(403\): "
                                             r".*check the RBAC in deploy/base/rbac.yaml"):
        actuator.scale(DeploymentTarget(name="locked"), 3)


def test_unreachable_api_server_is_an_actuation_error():
    with socket.socket() as probe:  # a port nothing listens on once the socket is closed
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    configuration = client.Configuration()
    configuration.host = url
    with client.ApiClient(configuration) as api_client:
        actuator = KubernetesActuator(api_client, timeout_s=2)
        with pytest.raises(ActuationError, match=rf"cannot read deployment default/web: API server {url} unreachable"):
            actuator.replicas(DeploymentTarget(name="web"))
        with pytest.raises(ActuationError, match=rf"API server {url} unreachable"):
            actuator.scale(RayClusterTarget(name="rc", worker_group="gpu"), 2)


def test_credentials_from_a_kubeconfig_file(apiserver, emulator, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG_TEMPLATE.format(url=apiserver[0]))
    emulator.objects["apps/v1/deployments", "default", "from-file"] = {"spec": {"replicas": 3}}

    with load_api_client(str(kubeconfig)) as api_client:
        assert api_client.configuration.host == apiserver[0]
    actuator = KubernetesActuator(kubeconfig=str(kubeconfig))  # loaded on first use
    _, requests = requests_during(emulator, lambda: actuator.replicas(DeploymentTarget(name="from-file")))
    assert requests[0].headers["Authorization"] == "Bearer kmock-token"
    assert actuator.replicas(DeploymentTarget(name="from-file")) == 3
    actuator.api_client.close()


def test_missing_credentials_fail_on_use_not_on_construction(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    missing = tmp_path / "no-such-kubeconfig"
    actuator = KubernetesActuator(kubeconfig=str(missing))

    with pytest.raises(ActuationError, match=f"cannot load Kubernetes credentials from {missing}"):
        actuator.replicas(DeploymentTarget(name="web"))


def test_other_target_kinds_are_refused(actuator):
    with pytest.raises(ActuationError, match="cannot scale ray_serve targets"):
        actuator.scale(RayServeTarget(app="kcloud", deployment="ingress"), 2)

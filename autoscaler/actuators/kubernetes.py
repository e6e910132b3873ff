"""Kubernetes and KubeRay actuators: Deployments and StatefulSets through their scale subresource, and one
worker group of a KubeRay RayCluster.

The controller needs only the permissions in deploy/base/rbac.yaml. Every API or connection
failure becomes an `ActuationError` naming the object, the HTTP status and what to check.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from autoscaler.actuators.base import (
    UNKNOWN_OUTCOME_STATUSES,
    ActuationError,
    ActuationOutcomeUnknown,
    Actuator,
    CountMoved,
    OutsideBounds,
    Scaled,
    TargetCount,
    before_the_write,
)
from autoscaler.actuators.credential_calls import BoundedCredentialCalls
from autoscaler.schema import DeploymentTarget, RayClusterTarget, ScalingTarget, StatefulSetTarget
from autoscaler.settings import ControllerEnvironment

RBAC_FILE = "deploy/base/rbac.yaml"
RAY_GROUP, RAY_VERSION, RAY_PLURAL = "ray.io", "v1", "rayclusters"
KUBERAY_MAX_REPLICAS = 2**31 - 1  # the CRD's default maxReplicas
KubernetesTarget = DeploymentTarget | StatefulSetTarget | RayClusterTarget
ApiCall = Callable[..., Any]


NEVER_RESENT = urllib3.util.Retry(total=3, connect=3, read=2, other=0, status=0, redirect=0)
"""urllib3's retries for the API server: a request that could not connect is sent again (it never went out), a read
(GET) whose answer broke off too; a write that went out never is, whatever failed after (urllib3's default sends
any method again after, say, a TLS error while reading the answer: a scale that had landed would be sent twice, and
its 409 taken for a refusal). Such a write's outcome is unknown (`_errors`)."""
NOT_SENT = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
"""The connection errors of a request that never went out."""


CREDENTIAL_TIMEOUT_S = 20.0
"""The longest a kubeconfig's exec plugin may take to hand over a token (`credential_calls`)."""


def load_api_client(kubeconfig: str | None = None, credentials: BoundedCredentialCalls | None = None
                    ) -> client.ApiClient:
    """An API client with the pod's service account (in a pod) or a kubeconfig (the given path, else
    $KUBECONFIG, else ~/.kube/config); an explicit path wins over the service account. Loading the credentials,
    and refreshing an expired token, go through `credentials` (bounded in time)."""
    bounded = credentials or BoundedCredentialCalls(CREDENTIAL_TIMEOUT_S)
    configuration, environment = BoundedRefreshConfiguration(bounded), ControllerEnvironment.from_env()
    in_cluster = kubeconfig is None and environment.in_cluster
    try:
        if in_cluster:
            bounded(lambda: config.load_incluster_config(client_configuration=configuration))
        else:
            bounded(lambda: config.load_kube_config(config_file=kubeconfig, client_configuration=configuration))
    except (ConfigException, OSError, ValueError, ActuationError) as error:
        source = ("the in-cluster service account" if in_cluster
                  else kubeconfig or environment.kubeconfig or "~/.kube/config")
        raise ActuationError(f"cannot load Kubernetes credentials from {source}: {error}") from error
    configuration.retries = NEVER_RESENT
    return client.ApiClient(configuration)


class BoundedRefreshConfiguration(client.Configuration):
    """A client configuration whose token refresh hook, run before a request (where it may run the exec plugin
    again), goes through `credentials` whoever sets it: the kubeconfig loader sets a new hook at every refresh."""

    def __init__(self, credentials: BoundedCredentialCalls):
        self._credentials = credentials  # before the base class's __init__, which sets the hook (to None)
        super().__init__()

    @property
    def refresh_api_key_hook(self) -> Callable[[Any], None] | None:
        return self._refresh_hook

    @refresh_api_key_hook.setter
    def refresh_api_key_hook(self, hook: Callable[[Any], None] | None) -> None:
        bounded = hook is None or (isinstance(hook, functools.partial) and hook.func is _refreshed)
        self._refresh_hook = hook if bounded else functools.partial(_refreshed, self._credentials, hook)


def _refreshed(bounded: BoundedCredentialCalls, refresh: Callable[[Any], None], configuration: Any) -> None:
    try:
        bounded(lambda: refresh(configuration))
    except ActuationError as error:
        raise ActuationError(f"not sent: cannot refresh the Kubernetes credentials: {error}") from error


def _describe(target: KubernetesTarget) -> str:
    return f"{target.kind} {target.namespace}/{target.name}"


def _server_message(error: ApiException) -> str:
    """The `message` of the Kubernetes Status in the error body, if there is one."""
    try:
        return str(json.loads(error.body)["message"])
    except (TypeError, ValueError, KeyError):
        return ""


API_SERVER_REQUEST_TIMEOUT_S = 60.0


class KubernetesActuator(Actuator):
    """Scales Deployments, StatefulSets and RayCluster worker groups through the Kubernetes API.

    Pass an `ApiClient` to use it; otherwise credentials are loaded on first use (`load_api_client`), so
    constructing the actuator never needs a cluster.
    """

    kinds = ("deployment", "statefulset", "raycluster")

    def __init__(self, api_client: client.ApiClient | None = None, *, kubeconfig: str | None = None,
                 timeout_s: float = 10.0, credential_timeout_s: float = CREDENTIAL_TIMEOUT_S) -> None:
        self._api_client = api_client
        self._kubeconfig = kubeconfig
        self._timeout_s = timeout_s
        self._credentials = BoundedCredentialCalls(credential_timeout_s)
        self._loading = threading.Lock()  # the tick reads targets concurrently: one client, loaded once
        # the write's read and patch, both again after a conflict (or a RayCluster's read, a read at its bound and
        # the patch): 4 calls, each sent up to 4 times (urllib3's default Retry(3) sends again a call that could not
        # connect); and the API server's own request timeout (60 s by default), within which it may still apply a
        # patch it took
        self.write_deadline_s = 4 * 4 * timeout_s + API_SERVER_REQUEST_TIMEOUT_S

    @property
    def api_client(self) -> client.ApiClient:
        with self._loading:
            if self._api_client is None:
                self._api_client = load_api_client(self._kubeconfig, self._credentials)
            return self._api_client

    def replicas(self, target: ScalingTarget) -> int:
        return self.read(target).replicas

    def read(self, target: ScalingTarget) -> TargetCount:
        """The count; a RayCluster worker group's with its minReplicas/maxReplicas, from the same read."""
        target = self._check_kind(target)
        if isinstance(target, RayClusterTarget):
            group = self._worker_group(target)[1]
            return TargetCount(int(group.get("replicas", 0)), _group_bounds(group))
        return TargetCount(_spec_replicas(self._read_scale(target)))

    def scale(self, target: ScalingTarget, replicas: int) -> Scaled:
        """Set the count, on the object as this call read it: a change made in between fails the write (409 for a
        Deployment or StatefulSet, whose patch carries the read's resourceVersion; 422 for a RayCluster, whose
        patch tests the group's count), so nobody's change is overwritten. A Deployment's resourceVersion also moves
        with its status (every pod that starts during a rollout): a conflict over an unchanged count is tried once
        more on the object read again."""
        return self._write(target, replicas, expected=None)

    def scale_from(self, target: ScalingTarget, current: int, replicas: int) -> Scaled:
        """`scale`, checking on the same read that the count is still `current` (`CountMoved` otherwise): the
        conditional write then leaves no moment in which another change could land unseen."""
        return self._write(target, replicas, expected=current)

    def _write(self, target: ScalingTarget, replicas: int, expected: int | None) -> Scaled:
        target = self._check_kind(target)
        if isinstance(target, RayClusterTarget):
            return self._scale_worker_group(target, replicas, expected)
        with before_the_write():
            read = self._read_scale(target)
            if expected is not None and _spec_replicas(read) != expected:
                raise CountMoved(_spec_replicas(read))
        try:
            return self._patch_scale(target, replicas, read)
        except ActuationError as failed:
            refused = failed.__cause__
            if not (isinstance(refused, ApiException) and refused.status == 409):
                raise
            with before_the_write():  # refused: nothing was written
                again = self._read_scale(target)
                moved = _spec_replicas(again) != _spec_replicas(read)
            if moved:  # the count itself changed: theirs stays
                raise
            return self._patch_scale(target, replicas, again)

    def _patch_scale(self, target: DeploymentTarget | StatefulSetTarget, replicas: int,
                     read: dict[str, Any]) -> Scaled:
        """Set the count on the scale subresource as `read`, conditional on its resourceVersion."""
        current, version = _spec_replicas(read), (read.get("metadata") or {}).get("resourceVersion")
        body: dict[str, Any] = {"spec": {"replicas": replicas}}
        if version:
            body["metadata"] = {"resourceVersion": version}
        _, patch = self._scale_methods(target)
        with self._errors(target, "scale"):
            stored = _spec_replicas(json.loads(patch(target.name, target.namespace, body, _preload_content=False,
                                                     _request_timeout=self._timeout_s).data))
        return _scaled(f"{_describe(target)}: replicas {current} -> {stored}", replicas, stored)

    def _read_scale(self, target: DeploymentTarget | StatefulSetTarget) -> dict[str, Any]:
        """The target's scale subresource as stored now (JSON, not V1Scale: kmock answers with the Deployment
        itself, which V1Scale refuses)."""
        read, _ = self._scale_methods(target)
        with self._errors(target, "read"):
            return json.loads(read(target.name, target.namespace, _preload_content=False,
                                   _request_timeout=self._timeout_s).data)

    def _check_kind(self, target: ScalingTarget) -> KubernetesTarget:
        if isinstance(target, KubernetesTarget):
            return target
        raise ActuationError(f"KubernetesActuator cannot scale {target.kind} targets (kinds: {', '.join(self.kinds)})")

    # --- Deployment / StatefulSet --------------------------------------------------------------------------

    def _scale_methods(self, target: DeploymentTarget | StatefulSetTarget) -> tuple[ApiCall, ApiCall]:
        """The read and patch methods of the target's scale subresource."""
        apps = client.AppsV1Api(self.api_client)
        if isinstance(target, DeploymentTarget):
            return apps.read_namespaced_deployment_scale, apps.patch_namespaced_deployment_scale
        return apps.read_namespaced_stateful_set_scale, apps.patch_namespaced_stateful_set_scale

    # --- KubeRay RayCluster worker group -------------------------------------------------------------------

    def _worker_group(self, target: RayClusterTarget) -> tuple[int, dict[str, Any]]:
        """The index and spec of the target's worker group in the RayCluster as stored now."""
        with self._errors(target, "read"):
            cluster = client.CustomObjectsApi(self.api_client).get_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, target.namespace, RAY_PLURAL, target.name, _request_timeout=self._timeout_s)
        groups = (cluster.get("spec") or {}).get("workerGroupSpecs") or []
        for index, group in enumerate(groups):
            if group.get("groupName") == target.worker_group:
                return index, group
        names = ", ".join(repr(group.get("groupName")) for group in groups) or "none"
        raise ActuationError(f"{_describe(target)} has no worker group {target.worker_group!r} (groups: {names})")

    def _scale_worker_group(self, target: RayClusterTarget, replicas: int, expected: int | None) -> Scaled:
        with before_the_write():
            index, group = self._worker_group(target)
            if expected is not None and int(group.get("replicas", 0)) != expected:
                raise CountMoved(int(group.get("replicas", 0)))
            low, high = _group_bounds(group)
        if not low <= replicas <= high:  # KubeRay would clamp it silently; the caller may ask for the bound instead
            raise OutsideBounds(
                f"{_describe(target)} worker group {target.worker_group!r}: {replicas} replicas is outside its "
                f"minReplicas/maxReplicas [{low}, {high}]; change the group's bounds or the policy's", low, high)
        current = group.get("replicas")
        path = f"/spec/workerGroupSpecs/{index}"
        # `test` makes the API server refuse the patch (422) if the groups were reordered since the read, so the
        # wrong group is never scaled, or if its count changed since, so nobody's change is overwritten. `add`
        # sets the member whether or not `replicas` is present.
        body = [{"op": "test", "path": f"{path}/groupName", "value": target.worker_group},
                *([{"op": "test", "path": f"{path}/replicas", "value": current}] if current is not None else []),
                {"op": "add", "path": f"{path}/replicas", "value": replicas}]
        with self._errors(target, "scale"):
            # The client would send a list body as merge-patch (its default here), which the API server rejects.
            answer = client.CustomObjectsApi(self.api_client).patch_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, target.namespace, RAY_PLURAL, target.name, body,
                _content_type="application/json-patch+json", _request_timeout=self._timeout_s)
        stored = _stored_group_count(answer, index, target.worker_group, replicas)
        return _scaled(f"{_describe(target)} worker group {target.worker_group!r}: replicas {current or 0} -> {stored}",
                       replicas, stored)

    # --- errors --------------------------------------------------------------------------------------------

    @contextmanager
    def _errors(self, target: KubernetesTarget, doing: str) -> Iterator[None]:
        """Turn API and connection failures into an `ActuationError` an operator can act on."""
        what = _describe(target)
        try:
            yield
        except ApiException as error:
            if not error.status:  # the client's own failures (TLS) carry status 0
                raise ActuationError(f"cannot {doing} {what}: API server {self.api_client.configuration.host} "
                                     f"unreachable: {error.reason}") from error
            if error.status == 404:
                message = f"{what} not found (404)"
            else:
                message = f"cannot {doing} {what}: {(error.reason or 'error').lower()} ({error.status})"
            if detail := _server_message(error):
                message += f": {detail}"
            if doing != "read" and error.status in UNKNOWN_OUTCOME_STATUSES:
                raise ActuationOutcomeUnknown(f"{message}; the change may have landed") from error
            if error.status == 409:
                message += "; it changed since it was read: the next tick decides from its new count"
            elif error.status == 403:
                message += f"; check the RBAC in {RBAC_FILE} (service account kcloud-autoscaler)"
            elif error.status == 401:
                message += "; check the credentials (service account token or kubeconfig)"
            raise ActuationError(message) from error
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError) as error:
            if doing != "read":  # the write was sent and not answered
                host = self.api_client.configuration.host
                raise ActuationOutcomeUnknown(f"cannot tell whether {doing} {what} landed: API server {host} sent "
                                              f"no answer: {error}") from error
            raise ActuationError(f"cannot {doing} {what}: API server {self.api_client.configuration.host} "
                                 f"did not answer: {error}") from error
        except urllib3.exceptions.HTTPError as error:
            reason = error.reason if isinstance(error, urllib3.exceptions.MaxRetryError) else error
            if doing != "read" and not isinstance(reason, NOT_SENT):  # a TLS error reading the answer, say
                raise ActuationOutcomeUnknown(f"cannot tell whether {doing} {what} landed: API server "
                                              f"{self.api_client.configuration.host}: {error}") from error
            raise ActuationError(f"cannot {doing} {what}: API server {self.api_client.configuration.host} "
                                 f"unreachable: {error}") from error


def _scaled(detail: str, asked: int, stored: int) -> Scaled:
    """The write's outcome at the count the API server stored, saying so where admission changed the one asked for."""
    if stored != asked:
        detail += f" (asked for {asked}: the API server's admission stored {stored})"
    return Scaled(detail, stored)


def _stored_group_count(cluster: Any, index: int, group_name: str, asked: int) -> int:
    """The worker group's count in the RayCluster the patch answered with (0 where the group has none, the CRD's
    default, as `read` takes it); `asked` where the answer is not that RayCluster's group, or no count."""
    groups = (cluster.get("spec") or {}).get("workerGroupSpecs") if isinstance(cluster, dict) else None
    group = groups[index] if isinstance(groups, list) and index < len(groups) else None
    if not isinstance(group, dict) or group.get("groupName") != group_name:
        return asked
    count = group.get("replicas", 0)
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else asked


def _group_bounds(group: dict[str, Any]) -> tuple[int, int]:
    """A worker group's [minReplicas, maxReplicas], with the CRD's defaults."""
    return int(group.get("minReplicas", 0)), int(group.get("maxReplicas", KUBERAY_MAX_REPLICAS))


def _spec_replicas(scale: dict[str, Any]) -> int:
    """`spec.replicas` of a scale subresource as JSON (a real Scale omits replicas when it is 0)."""
    return int((scale.get("spec") or {}).get("replicas", 0))

"""Ray Serve deployments: read and set `num_replicas` of a running application.

Uses Serve's external-scaler REST API on the Ray dashboard (`POST /api/v1/applications/{app}/deployments/
{deployment}/scale`), which only accepts applications deployed with `external_scaler_enabled: true`
(serve_config.yaml or `serve.run(..., external_scaler_enabled=True)`). The current target comes from
`GET /api/serve/applications/`, read once per `details_max_age_s` for all targets (a tick reads many) and
again after every change; a failed read is kept as long, so a dashboard that is down costs a tick one timeout,
not one per target. When the cluster uses token authentication, Ray's own token is sent.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from autoscaler.actuators.base import (
    UNKNOWN_OUTCOME_STATUSES,
    ActuationError,
    ActuationOutcomeUnknown,
    Actuator,
    Scaled,
)
from autoscaler.schema import RayServeTarget, ScalingTarget
from core.http_client import open_url, split_login

DASHBOARD_MARGIN_S = 5.0


RAY_FALLBACK_HEADER = "X-Ray-Authorization"  # Ray's token header for requests whose Authorization is a proxy's
RAY_CALL_FAILED = "Internal Server Error"  # the error text of the dashboard's 503 for a failed controller call
MAX_ERROR_BODY = 65536  # bytes of an error answer read for its message


def _ray_auth_headers(login: dict[str, str]) -> dict[str, str]:
    """Ray's token header when token auth is on (Ray >= 2.5x); none otherwise. Where the URL's `login` takes
    Authorization (a proxy's Basic auth), the token goes in Ray's fallback header, X-Ray-Authorization, which the
    dashboard reads once the proxy has taken its own header away."""
    try:
        from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled
    except ImportError:
        return {}
    headers = get_auth_headers_if_auth_enabled({})
    if not login or not headers:
        return headers
    return {RAY_FALLBACK_HEADER: next(iter(headers.values()))}


class RayServeActuator(Actuator):
    """Scales deployments of Serve applications through the dashboard at `dashboard_url` (a login in it,
    `http://user:password@host:8265`, is sent as Basic auth, and shown nowhere); redirects are not followed, so
    Ray's token never reaches another host (core/http_client.py)."""

    kinds = ("ray_serve",)

    def __init__(self, dashboard_url: str = "http://127.0.0.1:8265", timeout_s: float = 10.0,
                 details_max_age_s: float = 2.0):
        self.dashboard_url, self._login = split_login(dashboard_url.rstrip("/"))
        self.timeout_s = timeout_s
        # the read right before the write, and the write; and a margin for the dashboard to hand on a call it took
        self.write_deadline_s = 2 * timeout_s + DASHBOARD_MARGIN_S
        self.details_max_age_s = details_max_age_s
        self._details: tuple[float, dict[str, Any] | ActuationError] | None = None
        self._details_lock = threading.Lock()

    def _applications(self) -> dict[str, Any]:
        """Serve's application details, fetched at most once per `details_max_age_s` (one caller fetches); a
        failed fetch raises its error again to every caller within that age."""
        with self._details_lock:
            if self._details is None or time.monotonic() - self._details[0] > self.details_max_age_s:
                found = self._fetch_applications()
                self._details = (time.monotonic(), found)  # aged from the answer: a fetch may outlast the max age
            found = self._details[1]
        if isinstance(found, ActuationError):
            raise ActuationError(str(found))
        return found

    def _fetch_applications(self) -> dict[str, Any] | ActuationError:
        """Serve's application details, or the error that kept them from being read."""
        try:
            return _applications_of(self._request("GET", "/api/serve/applications/") or {})
        except ActuationError as exc:
            return exc

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.dashboard_url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json", **self._login,
                                                  **_ray_auth_headers(self._login)})
        try:
            with open_url(request, timeout=self.timeout_s) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            text = _error_text(exc)
            what = f"Ray dashboard {method} {path}: HTTP {exc.code}: {text or exc.reason}"
            # Ray's 503 "Internal Server Error" is any error of the Serve controller's call, which may have applied
            # the change (the controller died after it, say); its other 503s refuse before calling (a 503 whose
            # body could not be read may be either)
            if method != "GET" and (exc.code in UNKNOWN_OUTCOME_STATUSES or (exc.code == 503 and
                                                                              text in (RAY_CALL_FAILED, None))):
                raise ActuationOutcomeUnknown(f"{what}; the change may have landed") from None
            raise ActuationError(what) from None
        except urllib.error.URLError as exc:  # urlopen wraps what fails before the request went out
            raise ActuationError(f"Ray dashboard at {self.dashboard_url} not reachable: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:  # after it went out: a timeout, a reset, a TLS error
            if method != "GET":
                raise ActuationOutcomeUnknown(f"Ray dashboard {method} {path}: sent, no answer ({exc}): the change "
                                              f"may have landed") from None
            raise ActuationError(f"Ray dashboard at {self.dashboard_url} did not answer: {exc}") from None
        try:
            return json.loads(text or b"null")
        except ValueError:  # a proxy's login page, say: the dashboard did not take the request
            what = f"Ray dashboard {method} {path}: the answer is not JSON (a proxy in the way?)"
            if method != "GET":
                raise ActuationOutcomeUnknown(f"{what}: the change may have landed") from None
            raise ActuationError(what) from None

    def _deployment(self, target: ScalingTarget) -> dict[str, Any]:
        target = _serve_target(target)
        app = self._applications().get(target.app)
        if app is None:
            raise ActuationError(f"Serve application {target.app!r} is not running")
        deployment = (app.get("deployments") or {}).get(target.deployment)
        if deployment is None:
            raise ActuationError(f"Serve application {target.app!r} has no deployment {target.deployment!r} "
                                 f"(it has {sorted(app.get('deployments') or {})})")
        if not isinstance(deployment, dict):
            raise ActuationError(f"Ray dashboard: deployment {target.deployment!r} is described by a "
                                 f"{type(deployment).__name__}, not a mapping")
        return deployment

    def replicas(self, target: ScalingTarget) -> int:
        count = self._deployment(target).get("target_num_replicas")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ActuationError(f"Ray dashboard: target_num_replicas of {_serve_target(target).deployment!r} is "
                                 f"{count!r}, not a replica count")
        return count

    def replicas_now(self, target: ScalingTarget) -> int:
        """The count from details fetched now: Serve's scale call has no conditional form, so the check right
        before it must not see details up to `details_max_age_s` old (a change made since would be overwritten)."""
        with self._details_lock:
            self._details = None
        return self.replicas(target)

    def ray_nodes(self, target: ScalingTarget) -> list[str]:
        """The Ray nodes of the deployment's running replicas."""
        replicas = self._deployment(target).get("replicas") or []
        return sorted({r["node_id"] for r in replicas
                       if isinstance(r, dict) and r.get("state") == "RUNNING" and isinstance(r.get("node_id"), str)})

    def scale(self, target: ScalingTarget, replicas: int) -> Scaled:
        """Set `num_replicas` (Serve's answer carries no count: the target holds the one asked for)."""
        target = _serve_target(target)
        path = (f"/api/v1/applications/{urllib.parse.quote(target.app, safe='')}/deployments/"
                f"{urllib.parse.quote(target.deployment, safe='')}/scale")
        self._request("POST", path, {"target_num_replicas": replicas})
        with self._details_lock:
            self._details = None  # the next read sees the new target
        return Scaled(f"Serve {target.app}/{target.deployment} num_replicas -> {replicas}", replicas)


def _applications_of(details: Any) -> dict[str, dict[str, Any]]:
    """The `applications` of Serve's details answer, each a mapping; ActuationError for an answer of another
    shape."""
    applications = details.get("applications") if isinstance(details, dict) else None
    if applications is None and isinstance(details, dict):
        return {}
    if not isinstance(applications, dict):
        raise ActuationError("Ray dashboard: Serve's application details are not a mapping of applications")
    return {name: app for name, app in applications.items()
            if isinstance(app, dict) and isinstance(app.get("deployments") or {}, dict)}


def _serve_target(target: ScalingTarget) -> RayServeTarget:
    if not isinstance(target, RayServeTarget):
        raise ActuationError(f"the Ray Serve actuator cannot scale a {target.kind} target")
    return target


def _error_text(error: urllib.error.HTTPError) -> str | None:
    """The error an error answer's body states (its first MAX_ERROR_BODY bytes); its reason where the body is no JSON,
    None where it could not be read (a body that stalls past the timeout, a connection reset)."""
    try:
        body = json.loads(error.read(MAX_ERROR_BODY) or b"{}")
    except ValueError:
        return error.reason
    except (OSError, http.client.HTTPException):
        return None
    return str(body.get("error") or body) if isinstance(body, dict) else str(body)

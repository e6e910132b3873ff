"""Credentials the service sends with urllib stay on their host and out of messages (core/http_client.py): a
redirect is refused, not followed with the Ray token or a Basic login; a login in a URL is sent as Basic auth.
Against real servers on 127.0.0.1."""

from __future__ import annotations

import base64
import json
from http.server import BaseHTTPRequestHandler

import pytest

from autoscaler.actuators import ActuationError
from autoscaler.actuators.serve import RayServeActuator
from autoscaler.schema import RayServeTarget
from core.stores.base import StoreUnavailable
from core.stores.prometheus import PrometheusStore
from tests.servers.local_http import serving


def recorder(seen: list[dict[str, str]], redirect_to: str | None = None, body: object = None):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            seen.append({"path": self.path, "authorization": self.headers.get("Authorization", ""),
                         "ray": self.headers.get("X-Ray-Authorization", "")})
            if redirect_to is not None:
                self.send_response(302)
                self.send_header("Location", f"{redirect_to}/login")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    return Handler


def test_the_dashboard_login_goes_as_basic_auth_and_a_redirect_takes_nothing_elsewhere():
    """Regression: urllib followed a dashboard's redirect (an SSO proxy) with the Authorization header, and took a
    login in RAY_DASHBOARD_URL for part of the host name, so every read failed naming the password."""
    elsewhere: list[dict[str, str]] = []
    dashboard: list[dict[str, str]] = []
    with serving(recorder(elsewhere, body={})) as other_host:
        with serving(recorder(dashboard, redirect_to=other_host)) as url:
            login_url = url.replace("http://", "http://admin:p%3Bw,d@")
            with pytest.raises(ActuationError, match="HTTP 302") as refused:
                RayServeActuator(login_url, timeout_s=2).replicas(RayServeTarget(app="a", deployment="d"))
    assert elsewhere == []  # the redirect was not followed
    assert dashboard[0]["authorization"] == "Basic " + base64.b64encode(b"admin:p;w,d").decode()
    assert "p;w" not in str(refused.value) and "p%3B" not in str(refused.value)


def test_prometheus_refuses_a_redirect_and_shows_no_login():
    elsewhere: list[dict[str, str]] = []
    prometheus: list[dict[str, str]] = []
    with serving(recorder(elsewhere, body={"status": "success", "data": []})) as other_host:
        with serving(recorder(prometheus, redirect_to=other_host)) as url:
            store = PrometheusStore(url.replace("http://", "http://glc_apikey@"), timeout_s=2)
            with pytest.raises(StoreUnavailable, match="HTTP 302") as refused:
                store.nodes()
    assert elsewhere == [] and prometheus[0]["authorization"].startswith("Basic ")
    assert "glc_apikey" not in str(refused.value) and "glc_apikey" not in repr(store)


def test_with_a_proxy_login_rays_token_goes_in_its_fallback_header(monkeypatch):
    """Ray's headers helper adds no token once an Authorization header is there: with a login in the URL the
    dashboard got no token at all."""
    from ray._private.authentication import http_token_authentication

    monkeypatch.setattr(http_token_authentication, "get_auth_headers_if_auth_enabled",
                        lambda given: {} if given else {"authorization": "Bearer RAYTOKEN"})
    seen: list[dict[str, str]] = []
    with serving(recorder(seen, body={"applications": {}})) as url:
        for base in (url.replace("http://", "http://admin:pw@"), url):
            RayServeActuator(base, timeout_s=2)._request("GET", "/api/serve/applications/")
    with_login, plain = seen
    assert with_login["authorization"].startswith("Basic ") and with_login["ray"] == "Bearer RAYTOKEN"
    assert plain["authorization"] == "Bearer RAYTOKEN" and plain["ray"] == ""

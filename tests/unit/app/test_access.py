"""Who may call what: writes closed without a token, any header a clean 401, reads protected on request (no Ray).

Regressions of issue 10: writes were open with no token configured, and `Authorization: Bearer é` was a 500.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray import serve

from app.access import Access
from app.ingress import api
from app.main import build_app, build_power_app
from app.power_route import power_api
from app.replica import serving_replica
from app.retrain_jobs import RetrainJobs, ServedModels
from app.settings import AppArgs, RetrainDefaults
from autoscaler.schema import StoredPolicies
from autoscaler.settings import AutoScalingConfig
from core.records import RecordNotFound
from core.settings import ConfigError
from tests.factories import policy_data
from tests.paths import TEST_DATA

BATCH = {"items": [{"type": "cost", "request": {"resources": {"cpu_cores": 2, "memory_gb": 4},
                                                 "duration_hours": 1}}]}
WRITES = [
    ("post", "/api/v1/scaling/policies", policy_data(name="p1")),
    ("delete", "/api/v1/scaling/policies/p1", None),
    ("post", "/api/v1/predict/batch", BATCH),
    ("post", "/api/v1/models/retrain", {"epochs": 4}),
]
READS = [("get", "/api/v1/models"), ("get", "/api/v1/scaling/policies"), ("get", "/api/v1/predict/batch/abc"),
         ("get", "/api/v1/models/retrain/abc"), ("get", "/api/v1/scaling/events")]


class Everything:
    """A stand-in replica where every call would succeed, so only the access rules can refuse."""

    def __init__(self, access: Access, tmp_path):
        self.access = access
        self.calls: list = []
        self.scaling_defaults = AutoScalingConfig()
        self.args = AppArgs()
        self.controller = SimpleNamespace(call_async=self._controller_call)
        self.batches = SimpleNamespace(create=lambda fields: self.calls.append("batch") or {
            "id": "b1", "created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T00:00:00+00:00",
            **fields}, get=self._no_batch)
        self.batch_queue = SimpleNamespace(submit=self._queued)
        self.retrains = RetrainJobs(str(tmp_path), str(tmp_path / "models"), None,
                                    RetrainDefaults(data=str(TEST_DATA / "upm_sample.csv")),
                                    ServedModels(power=("power_lstm",), cost="cost_gbm"),
                                    launch=lambda *args: self.calls.append("retrain"))
        self.registry = SimpleNamespace(model_ids=lambda: [])

    async def _controller_call(self, method, *args):
        self.calls.append(method)
        return {"stored_policy": None, "stored_policies": StoredPolicies(), "put_policy": True,
                "delete_policy": True}.get(method, [])

    async def _queued(self, batch_id):
        return True

    def _no_batch(self, batch_id):
        raise RecordNotFound("batches", batch_id)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path, http):
    """`served(access)`: an HTTP client of the main app around a stand-in replica with those access rules."""

    def serve_with(access: Access):
        replica = Everything(access, tmp_path)
        # Class-based routes (retrain) and routes with `serving_replica` both ask Serve for the replica.
        monkeypatch.setattr(serve, "get_replica_context", lambda: SimpleNamespace(servable_object=replica))
        return replica, http(api)

    yield serve_with
    api.dependency_overrides.clear()


def call(client, method: str, path: str, body=None, headers=None):
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_with_no_token_configured_every_write_is_403_saying_how_to_set_one(served, method, path, body):
    replica, client = served(Access(None))
    response = call(client, method, path, body)
    assert response.status_code == 403, response.text
    [detail] = response.json()["detail"]
    assert detail["loc"] == ["header", "authorization"]
    assert all(name in detail["msg"] for name in ("API_TOKEN", "API_TOKEN_FILE", "args.api_token_file"))
    assert replica.calls == []  # nothing changed, nothing started
    assert call(client, method, path, body, {"Authorization": "Bearer anything"}).status_code == 403


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic dDpw", "Bearer", "bearer  t x",
                                    "Bearer é".encode(), "Bearer \xff".encode("latin-1"), b"Bearer t\xc3"])
def test_a_missing_wrong_or_non_ascii_token_is_a_clean_401(served, method, path, body, header):
    replica, client = served(Access("t"))
    response = call(client, method, path, body, None if header is None else {"Authorization": header})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert replica.calls == []


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_the_right_token_passes(served, method, path, body):
    replica, client = served(Access("t"))
    response = call(client, method, path, body, {"Authorization": "Bearer t"})
    assert response.status_code in (200, 201, 202, 204), response.text
    assert replica.calls


def test_a_non_ascii_token_is_compared_as_the_bytes_sent(served):
    _, client = served(Access("pässwörd"))
    ok = call(client, "post", "/api/v1/predict/batch", BATCH, {"Authorization": "Bearer pässwörd".encode()})
    assert ok.status_code == 202, ok.text


@pytest.mark.parametrize(("method", "path"), READS)
def test_reads_are_open_by_default_and_closed_with_protect_reads(served, method, path):
    _, client = served(Access("t"))
    assert call(client, method, path).status_code != 401
    _, client = served(Access("t", protect_reads=True))
    assert call(client, method, path).status_code == 401
    assert call(client, method, path, headers={"Authorization": "Bearer t"}).status_code != 401
    assert client.get("/healthz").status_code == 200


def test_protect_reads_covers_the_power_route(monkeypatch: pytest.MonkeyPatch, http):
    stand_in = SimpleNamespace(access=Access("t", protect_reads=True), workloads={})
    power_api.dependency_overrides[serving_replica] = lambda: stand_in
    try:
        response = http(power_api).post("/", json={"workload_id": "w", "features": {"power_watts": [1.0]}})
    finally:
        power_api.dependency_overrides.clear()
    assert response.status_code == 401


def test_protect_reads_without_a_token_stops_the_replica():
    with pytest.raises(ConfigError, match="protect_reads needs an API token"):
        Access(None, protect_reads=True)


def test_the_secret_template_s_placeholder_token_stops_the_replica(monkeypatch: pytest.MonkeyPatch):
    """deploy/secrets/secrets.yaml applied unchanged would open every write to a token the repository publishes."""
    monkeypatch.delenv("API_TOKEN_FILE", raising=False)
    monkeypatch.setenv("API_TOKEN", "REPLACE_ME-api-token")
    with pytest.raises(ConfigError, match="placeholder"):
        Access.from_args(AppArgs())


def test_the_token_comes_from_args_file_or_environment(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("API_TOKEN_FILE", raising=False)
    monkeypatch.setenv("API_TOKEN", "from-env-token-0001")
    assert Access.from_args(AppArgs()).configured
    monkeypatch.delenv("API_TOKEN")
    assert not Access.from_args(AppArgs()).configured
    token = tmp_path / "token"
    token.write_text("from-file-token-0001\n")
    assert Access.from_args(AppArgs(api_token_file=str(token))).configured


def test_both_serve_apps_refuse_to_build_on_the_template_s_ray_token(monkeypatch):
    """Only the API token's placeholder was refused: a cluster applied with the template's Ray token ran with a
    dashboard and job API (code execution on the head) behind a token anyone with the repository knows."""
    monkeypatch.setenv("RAY_AUTH_TOKEN", "REPLACE_ME-ray-auth-token")
    for build in (build_app, build_power_app):
        with pytest.raises(ConfigError, match=r"Ray's auth token \(RAY_AUTH_TOKEN, Secret kcloud-ray-auth\) is still"):
            build({})


def test_regression_a_rotated_token_file_is_followed_without_a_restart(served, tmp_path, monkeypatch, caplog):
    """The token was read once per replica: after a leaked token was rotated in its Secret, the old one kept
    working on every running replica, and replicas started later took only the new one."""
    monkeypatch.delenv("API_TOKEN", raising=False)
    monkeypatch.delenv("API_TOKEN_FILE", raising=False)
    now = [0.0]
    file = tmp_path / "token"
    file.write_text("old-token-000000001\n")
    assert Access.from_args(AppArgs(api_token_file=str(file)))._file == file  # what the replicas follow
    _, client = served(Access("old-token-000000001", token_file=file, clock=lambda: now[0]))

    def status(token: str) -> int:
        return call(client, "post", "/api/v1/predict/batch", BATCH, {"Authorization": f"Bearer {token}"}).status_code

    assert status("old-token-000000001") == 202
    replaced = tmp_path / "token.new"  # as a Secret volume does it: a new file swapped in
    replaced.write_text("new-token-000000001\n")
    replaced.replace(file)
    now[0] += 1.0
    assert status("old-token-000000001") == 202  # looked at every few seconds, not at every request
    now[0] += 5.0
    assert (status("old-token-000000001"), status("new-token-000000001")) == (401, 202)
    for broken in (b"\n", b"REPLACE_ME-api-token\n", b"\xff\xfe"):  # a half-done rotation keeps the token before
        file.write_bytes(broken)
        now[0] += 5.0
        assert status("new-token-000000001") == 202
    assert "is not UTF-8 text" in caplog.text
    assert "the API token file changed but cannot be used" in caplog.text
    assert "new-token-000000001" not in caplog.text and "old-token-000000001" not in caplog.text


def test_a_token_file_rewritten_while_it_is_read_is_read_again_at_the_next_check(tmp_path, monkeypatch):
    """Written in place (not swapped), a read can catch half a token: it is taken only when the file stood still
    across the read."""
    monkeypatch.delenv("API_TOKEN", raising=False)
    now = [0.0]
    file = tmp_path / "token"
    file.write_text("old-token-000000001")
    access = Access("old-token-000000001", token_file=file, clock=lambda: now[0])
    stamps = iter([(1, 1, 1), (1, 2, 9)])  # changed; then changed again during the read
    monkeypatch.setattr(access, "_read_stamp", lambda: next(stamps))
    file.write_text("new-t")  # what a reader caught half-way
    now[0] += 5.0
    access.check("old-token-000000001", write=True)  # still the old one
    file.write_text("new-token-000000001")
    monkeypatch.setattr(access, "_read_stamp", lambda: (1, 2, 9))
    now[0] += 5.0
    access.check("new-token-000000001", write=True)
    with pytest.raises(Exception, match="valid 'Authorization"):
        access.check("old-token-000000001", write=True)


def test_an_attempt_stored_by_another_version_is_left_out_of_the_list_and_its_own_read_is_a_503(served):
    """Regression: one record outside this version's schema (a decision it does not know) made the whole list a 500."""
    replica, client = served(Access(None))
    records = replica.retrains.records
    kept = records.create({"status": "succeeded", "model_id": "power_lstm", "trigger": "api"})
    odd = records.create({"status": "succeeded", "model_id": "power_lstm", "trigger": "api", "decision": "kept"})
    listed = client.get("/api/v1/models/retrain")
    assert listed.status_code == 200 and [job["job_id"] for job in listed.json()["jobs"]] == [kept["id"]]
    one = client.get(f"/api/v1/models/retrain/{odd['id']}")
    assert one.status_code == 503 and "another version" in one.json()["detail"][0]["msg"], one.text
    assert "try again" not in one.text  # it never will read as this version's


def test_a_record_with_no_id_or_model_is_left_out_and_never_stops_the_listing_or_the_stopped_job_sweep(served):
    """A JSON object without an id (or an unfinished, silent job without a model) in the state folder, e.g. left by
    another version sharing it, was a KeyError: the attempts' list a 500, and the sweep of stopped jobs, which a new
    ingress replica runs as it starts, failed the replica (review)."""
    import json

    replica, client = served(Access(None))
    records = replica.retrains.records
    kept = records.create({"status": "succeeded", "model_id": "power_lstm", "trigger": "api"})
    old = "2020-01-01T00:00:00+00:00"
    (records.folder / "noid.json").write_text(json.dumps({"status": "running", "created_at": 7}))
    nameless = records.create({"status": "running", "trigger": "api", "created_at": old, "updated_at": old})
    records.create({"status": "running", "trigger": ["api"], "model_id": "power_lstm", "updated_at": old})
    records.create({"status": "succeeded", "model_id": "power_lstm", "updated_at": 5})
    replica.retrains.fail_stopped()  # no KeyError, no TypeError
    listed = client.get("/api/v1/models/retrain")
    assert listed.status_code == 200, listed.text
    assert kept["id"] in [job["job_id"] for job in listed.json()["jobs"]]
    assert records.get(nameless["id"])["status"] == "running"  # no model of ours to free: left as it is
    assert records.trim(keep=1, unfinished_at_most=0) == 2  # another tool's times sort too (no TypeError)


def _asgi_post(app, path: str, headers: list[tuple[bytes, bytes]], method: str = "POST") -> tuple[int, int]:
    """POST (or `method`) `path` to the ASGI `app` with a body the app may ask for: (status, how many times it
    asked)."""
    import asyncio

    asked, sent = [], []

    async def receive():
        asked.append(1)
        return {"type": "http.request", "body": b"[" + b"0," * 100_000 + b"0]", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"200002"), *headers],
             "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), len(asked)


@pytest.mark.parametrize(("method", "path", "body"), [w for w in WRITES if w[0] == "post"])
def test_a_write_without_the_token_is_refused_before_its_body_is_read(served, method, path, body):
    """The token was checked by the route's dependency, after FastAPI had read and parsed the body (up to 4 MiB, on
    the replica's event loop): anyone could make every replica parse megabytes a request (review)."""
    served(Access("t"))
    for headers in ([], [(b"authorization", b"Bearer wrong")], [(b"authorization", b"Basic dDpw")]):
        assert _asgi_post(api, path, headers) == (401, 0)
    status, asked = _asgi_post(api, path, [(b"authorization", b"Bearer t")])
    assert asked == 1 and status == 422  # the token passes: the body is read, and refused as no request


def test_a_read_under_protect_reads_is_refused_before_its_body_is_read(served):
    served(Access("t", protect_reads=True))
    assert _asgi_post(api, "/api/v1/predict/cost", []) == (401, 0)
    stand_in = SimpleNamespace(access=Access("t", protect_reads=True), workloads={})
    power_api.dependency_overrides[serving_replica] = lambda: stand_in
    try:
        assert _asgi_post(power_api, "/", []) == (401, 0)
    finally:
        power_api.dependency_overrides.clear()
    served(Access("t"))
    status, asked = _asgi_post(api, "/api/v1/predict/cost", [])  # open by default: read, and refused as no request
    assert asked == 1 and status == 422


@pytest.mark.parametrize("method", ["GET", "OPTIONS", "HEAD"])
def test_a_read_with_a_body_under_protect_reads_is_refused_before_its_body_is_read(served, method):
    """Regression (review): only POST, PUT, PATCH and DELETE were checked early, so a GET carrying 4 MiB of JSON
    without the token was read and parsed before its 401."""
    served(Access("t", protect_reads=True))
    assert _asgi_post(api, "/api/v1/models", [], method) == (401, 0)
    assert _asgi_post(api, "/healthz", [], method)[0] != 401  # open, whatever a probe sends

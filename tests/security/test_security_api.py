"""The API's security over real Serve on 127.0.0.1: no open write endpoint with or without a configured token,
hostile input refused with a 4xx naming the field (never a 5xx), error bodies with a request id and without
paths or addresses, bounded batches and retraining."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import httpx
import pytest

from app.errors import MAX_ECHOED_CHARS
from tests.conftest import API_TOKEN
from tests.factories import policy_data, wait_for_status
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
COST = {"resources": {"cpu_cores": 4, "memory_gb": 16}, "duration_hours": 1}
POWER = {"workload_id": "w", "features": {"power_watts": [250.0] * 15}, "prediction_horizon": "10m"}
WRITES = [
    ("POST", "/api/v1/scaling/policies", policy_data(name="sec-open")),
    ("DELETE", "/api/v1/scaling/policies/sec-open", None),
    ("POST", "/api/v1/predict/batch", {"items": [{"type": "cost", "request": COST}]}),
    ("POST", "/api/v1/models/retrain", {"epochs": 4}),
]
BAD_HEADERS = [None, "Bearer wrong", "Bearer é".encode(), b"Bearer \xff\xfe", "Basic dGVzdDp0b2tlbg==",
               "Bearer", "Bearer " + "t" * 8000, "test-token"]
# a traceback, a server path (the checkout's, the temporary folders the tests' state and models live in) or an address
LEAKS = ("Traceback", "/tmp/", "/srv/", str(REPO_ROOT), tempfile.gettempdir() + "/", "http://", "File \"")


def send(client: httpx.Client, method: str, path: str, body=None, headers=None) -> httpx.Response:
    return client.request(method, path, json=body, headers=headers)


def footprint(client: httpx.Client, state_path: str | None = None) -> tuple:
    """What a write would leave: the policies' names, the retrain jobs' ids and (given the app's state path) its
    batch records."""
    policies = sorted(p["name"] for p in client.get("/api/v1/scaling/policies").json()["policies"])
    jobs = [job["job_id"] for job in client.get("/api/v1/models/retrain").json()["jobs"]]
    batches = sorted(p.name for p in (Path(state_path) / "batches").glob("*.json")) if state_path else None
    return policies, jobs, batches


def error(response: httpx.Response) -> dict:
    """The one error item of an error answer, after checking its request id and that nothing leaks."""
    body = response.json()
    assert body["request_id"] == response.headers["x-request-id"], body
    assert not any(leak in response.text for leak in LEAKS), response.text
    [item] = body["detail"]
    return item


# -- no open writes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path", "body"), WRITES)
@pytest.mark.parametrize("header", [None, f"Bearer {API_TOKEN}", "Bearer é".encode()])
def test_with_no_token_configured_every_write_is_closed(open_api, open_state, api, method, path, body, header):
    before = footprint(open_api, open_state)
    response = send(open_api, method, path, body, None if header is None else {"Authorization": header})
    assert response.status_code == 403, response.text
    item = error(response)
    assert item["loc"] == ["header", "authorization"] and "API_TOKEN_FILE" in item["msg"]
    assert footprint(open_api, open_state) == before  # no policy, job or batch came of it


def test_with_no_token_configured_reads_stay_open(open_api):
    assert open_api.get("/healthz").status_code == 200
    assert open_api.get("/api/v1/models").status_code == 200
    assert open_api.post("/api/v1/predict/cost", json=COST).status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
@pytest.mark.parametrize("header", BAD_HEADERS)
def test_a_missing_wrong_or_non_ascii_token_is_401(api, app_args, method, path, body, header):
    before = footprint(api, app_args["state_path"])
    response = send(api, method, path, body, None if header is None else {"Authorization": header})
    assert response.status_code == 401, response.text
    assert error(response)["loc"] == ["header", "authorization"]
    assert response.headers["www-authenticate"] == "Bearer"
    assert footprint(api, app_args["state_path"]) == before


def test_a_write_without_the_token_is_401_before_its_body_is_read(api):
    """The token was checked by the route's dependency, after FastAPI had read and parsed the body: a malformed one
    answered 400 to anyone, and anyone could have a replica parse up to 4 MiB a request (review)."""
    for path in ("/api/v1/scaling/policies", "/api/v1/predict/batch", "/api/v1/models/retrain"):
        response = api.post(path, content=b"{", headers={"content-type": "application/json"})
        assert response.status_code == 401, response.text
        assert error(response)["loc"] == ["header", "authorization"]
    response = api.post("/api/v1/scaling/policies", content=b"{", headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 400, response.text  # with the token, the body is read (and is no JSON)


# -- hostile input ----------------------------------------------------------------------------------------
def _chunks(prefix: bytes, size: int, suffix: bytes):
    yield prefix
    for _ in range(size // (64 * 1024)):
        yield b" " * (64 * 1024)
    yield suffix


@pytest.mark.parametrize(("path", "headers"), [("/api/v1/predict/power", {}), ("/api/v1/predict/cost", {}),
                                               ("/api/v1/scaling/policies", AUTH)])
def test_a_chunked_6_mib_body_is_413(api, path, headers):
    body = _chunks(b'{"workload_id": "w",', 6 * 1024 * 1024, b'"prediction_horizon": "10m"}')
    response = api.post(path, content=body, headers={**headers, "content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert error(response)["loc"] == ["body"]


def test_a_declared_5_mib_body_is_413(api):
    response = api.post("/api/v1/predict/power", content=b" " * (5 * 1024 * 1024),
                        headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_a_200_kb_horizon_is_refused_naming_it(api):
    """Over real HTTP; how fast is a benchmark's figure (bench/bench_hostile_input.py: < 50 ms), not a test's."""
    body = json.dumps({**POWER, "prediction_horizon": "1" * 200_000})
    response = api.post("/api/v1/predict/power", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and error(response)["loc"] == ["body", "prediction_horizon"]
    assert len(response.content) < 1000 and "1" * (MAX_ECHOED_CHARS + 1) not in response.text  # echoed cut short


@pytest.mark.parametrize(("path", "body", "loc", "headers"), [
    ("/api/v1/predict/power", {**POWER, "prediction_horizon": "9" * 400}, ["body", "prediction_horizon"], {}),
    ("/api/v1/predict/power", {**POWER, "prediction_horizon": "9" * 12 + "w"}, ["body", "prediction_horizon"], {}),
    ("/api/v1/predict/batch", {"items": [{"type": "power", "request": {**POWER, "prediction_horizon": "9" * 400}}]},
     ["body", "items", 0, "power", "request", "prediction_horizon"], AUTH),
    ("/api/v1/models/retrain", {"prediction_horizon": "9" * 400}, ["body", "prediction_horizon"], AUTH),
    ("/api/v1/models/retrain", {"data": "../../etc/passwd"}, ["body", "data"], AUTH),
    ("/api/v1/models/retrain", {"data": "/etc/passwd"}, ["body", "data"], AUTH),
    ("/api/v1/models/retrain", {"data": "x" * 5000}, ["body", "data"], AUTH),
    ("/api/v1/predict/power", {**POWER, "workload_id": "w" * 10_000}, ["body", "workload_id"], {}),
    ("/api/v1/predict/cost", {**COST, "resources": {**COST["resources"], "gpu_count": 1, "gpu_type": "g" * 10_000}},
     ["body", "resources", "gpu_type"], {}),
    ("/api/v1/scaling/policies", policy_data(name="x" * 10_000), ["body", "name"], AUTH),
    ("/api/v1/scaling/policies", policy_data(max_replicas=10**9), ["body", "max_replicas"], AUTH),
])
def test_hostile_fields_are_422_naming_them(api, path, body, loc, headers):
    response = api.post(path, json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert error(response)["loc"] == loc and len(response.content) < 2000
    assert not re.search(rf"(.)\1{{{MAX_ECHOED_CHARS}}}", response.text)  # a long value's run, echoed only cut short


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize(("path", "template", "headers", "field"), [
    ("/api/v1/predict/power", '{"workload_id": "w", "features": {"power_watts": [%s]}}', {}, "power_watts"),
    ("/api/v1/predict/cost", '{"resources": {"cpu_cores": %s, "memory_gb": 4}, "duration_hours": 1}', {},
     "cpu_cores"),
    ("/api/v1/scaling/policies", '{"name": "sec-nan", "target": {"kind": "deployment", "name": "web"}, '
                                 '"power_based": {"max_power_budget": %s}}', AUTH, "max_power_budget"),
    ("/api/v1/scaling/policies", '{"name": "sec-nan", "target": {"kind": "deployment", "name": "web"}, '
                                 '"cluster_power_budget": %s}', AUTH, "cluster_power_budget"),
])
def test_non_finite_numbers_are_422(api, number, path, template, headers, field):
    response = api.post(path, content=template % number, headers={**headers, "content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert field in error(response)["loc"]
    assert api.get("/api/v1/scaling/policies/sec-nan").status_code == 404


@pytest.mark.parametrize("content", [b"{", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000, b'{"a": ' * 50_000])
def test_malformed_json_is_a_4xx(api, content):
    for path, headers in (("/api/v1/predict/power", {}), ("/api/v1/scaling/policies", AUTH)):
        response = api.post(path, content=content, headers={**headers, "content-type": "application/json"})
        assert 400 <= response.status_code < 500, response.text
        error(response)


def test_every_answer_carries_a_request_id_and_a_sane_incoming_one_is_kept(api):
    for response in (api.get("/healthz"), api.get("/no/such/route"), api.post("/api/v1/predict/power", json=POWER),
                     api.get("/api/v1/predict/batch/" + "a" * 65)):
        assert response.headers["x-request-id"], response
    kept = api.post("/api/v1/predict/power", json={**POWER, "prediction_horizon": "x"},
                    headers={"X-Request-ID": "support-case-42"})
    assert kept.headers["x-request-id"] == "support-case-42" == kept.json()["request_id"]


# -- bounded work -----------------------------------------------------------------------------------------


def test_batches_run_through_the_queue(api, app_args):
    import ray

    from app.batch_queue import queue_name
    from core.names import NAMESPACE

    items = [{"type": "cost", "request": COST}, {"type": "power", "request": POWER}]
    ids = [api.post("/api/v1/predict/batch", json={"items": items}, headers=AUTH).json()["batch_id"]
           for _ in range(4)]
    assert ray.get_actor(queue_name(app_args["state_path"]), namespace=NAMESPACE)  # one queue, found by name
    for batch_id in ids:
        done = wait_for_status(api, f"/api/v1/predict/batch/{batch_id}", {"done", "failed"}, 120)
        assert done["status"] == "done" and [r["status"] for r in done["results"]] == ["ok", "ok"], done

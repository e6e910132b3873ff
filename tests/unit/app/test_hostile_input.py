"""Hostile input refused fast with a 4xx naming the field; every answer carries a request id; no error body
carries a traceback, a file path or an address (no Ray).

Regressions of issue 10: a chunked body over the limit was parsed; "9"*400 as a horizon was a 500; a
200 kB horizon took seconds; an unexpected error answered without a request id.
"""

from __future__ import annotations

import json
import logging
import re
from types import SimpleNamespace

import pytest
from pydantic import ValidationError
from ray import serve

from app.access import Access
from app.errors import MAX_ECHOED_CHARS
from app.ingress import api
from app.middleware import MAX_BODY_BYTES
from app.power_route import power_api
from app.replica import serving_replica
from app.schemas import BatchRequest
from core.forecasts import PowerForecast

LONG_RUN = re.compile(rf"(.)\1{{{MAX_ECHOED_CHARS}}}")  # a run of a hostile value's one character, past the echo cap
REQUEST = {"workload_id": "w", "features": {"power_watts": [200.0, 210.0]}, "prediction_horizon": "2m"}


class Forecaster:
    """A PowerPredictor stand-in that answers every forecast."""

    access = Access(None)
    workloads: dict = {}

    async def forecast(self, history) -> PowerForecast:
        return PowerForecast(model_version="power_lstm/1", step_s=60, timestamps=(), point=(), lower=(), upper=(),
                             confidence=(), window_coverage=1.0, padded_steps=0, interval_coverage=0.8)


class Broken:
    """An ingress stand-in whose registry fails the way an unexpected bug would."""

    access = Access("t")

    @property
    def registry(self):
        raise RuntimeError("cannot read /srv/secret/trained_models via http://10.1.2.3:8086/api\nTraceback ...")


@pytest.fixture
def power(http):
    power_api.dependency_overrides[serving_replica] = Forecaster
    yield http(power_api)
    power_api.dependency_overrides.clear()


@pytest.fixture
def broken(http):
    api.dependency_overrides[serving_replica] = Broken
    yield http(api)
    api.dependency_overrides.clear()


def only_detail(response) -> dict:
    [detail] = response.json()["detail"]
    return detail


def test_a_chunked_body_over_the_limit_is_413_before_it_is_parsed(power):
    def chunks():  # valid JSON: the request padded with whitespace to 6 MiB, sent without a Content-Length
        yield b'{"workload_id": "w", "features": {"power_watts": [200.0]},'
        for _ in range(6 * 16):
            yield b" " * (64 * 1024)
        yield b'"prediction_horizon": "2m"}'

    response = power.post("/", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and only_detail(response)["loc"] == ["body"]
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_a_declared_body_over_the_limit_is_413_and_one_under_it_is_served(power):
    declared = power.post("/", content=b" " * (MAX_BODY_BYTES + 1), headers={"content-type": "application/json"})
    assert declared.status_code == 413
    padded = b'{"workload_id": "w", "features": {"power_watts": [1.0]}}' + b" " * (MAX_BODY_BYTES - 100)
    assert power.post("/", content=padded, headers={"content-type": "application/json"}).status_code == 200


@pytest.mark.parametrize("horizon", ["9" * 400, "1" * 200_000, "1" + " " * 50_000 + "h", "9" * 12 + "w"])
def test_a_hostile_horizon_is_422_naming_it(power, horizon):
    """How fast it is refused is a benchmark's figure (bench/bench_hostile_input.py: < 50 ms), not a test's."""
    response = power.post("/", json={**REQUEST, "prediction_horizon": horizon})
    assert response.status_code == 422, response.text
    assert only_detail(response)["loc"] == ["body", "prediction_horizon"]
    assert len(response.content) < 1000 and not LONG_RUN.search(response.text)  # echoed only cut short


@pytest.mark.parametrize(("body", "field"), [
    ({"workload_id": "w" * 254}, "workload_id"),
    ({"node_id": "n" * 254}, "node_id"),
    ({"features": {"power_watts": [1.0], "workload_type": "x" * 65}}, "workload_type"),
    ({"features": {"power_watts": [1.0] * 10_081}}, "power_watts"),
])
def test_long_strings_and_lists_are_422_naming_the_field(power, body, field):
    response = power.post("/", json={**REQUEST, **body})
    assert response.status_code == 422 and field in only_detail(response)["loc"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_422(power, value):
    text = f'{{"workload_id": "w", "features": {{"power_watts": [{value}, 1.0]}}}}'
    response = power.post("/", content=text, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "power_watts" in only_detail(response)["loc"]


@pytest.mark.parametrize(("body", "field"), [
    ({"features": {"power_watts": [1e308, 100.0]}}, "power_watts"),  # overflowed the model: a 500
    ({"features": {"power_watts": [1e15, 100.0]}}, "power_watts"),  # a nonsense forecast
    ({"end_time": "9999-12-31T23:59:00Z"}, "end_time"),  # its timestamps overflowed: a 500
    ({"end_time": "1500-01-01T00:00:00Z"}, "end_time"),  # its calendar inputs overflowed: a 500 for the batch
    ({"features": {"power_watts": [True, 100.0]}}, "power_watts"),  # was read as 1 W
    ({"features": {"power_watts": [100.0], "cpu_utilization": ["50"]}}, "cpu_utilization"),
])
def test_absurd_magnitudes_are_422_naming_the_field(power, body, field):
    response = power.post("/", json={**REQUEST, **body})
    assert response.status_code == 422 and field in only_detail(response)["loc"], response.text


@pytest.mark.parametrize("body", [
    pytest.param('{"workload_id": "w", "features": ' + "[" * 100_000 + "]" * 100_000 + "}", id="too-deep"),
    pytest.param("{not json", id="syntax"), pytest.param("[1, 2", id="cut-short"),
    pytest.param(b"\xff\xfe{}", id="not-text"),
])
def test_a_body_that_is_not_json_is_400_naming_the_body(power, body):
    response = power.post("/", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and only_detail(response)["loc"] == ["body"], response.text
    assert "not valid JSON" in only_detail(response)["msg"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_json_body_sent_as_another_type_is_415_naming_the_header(power, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = power.post("/", content=json.dumps(REQUEST), headers=headers)
    assert response.status_code == 415 and only_detail(response)["loc"] == ["header", "content-type"]
    assert "application/json" in only_detail(response)["msg"]


def test_a_policy_sent_as_text_is_415_too(http):
    class Writer:
        access = Access("t")

    api.dependency_overrides[serving_replica] = Writer
    try:
        response = http(api).post("/api/v1/scaling/policies", content="{}",
                                  headers={"content-type": "text/plain", "authorization": "Bearer t"})
    finally:
        api.dependency_overrides.clear()
    assert response.status_code == 415 and only_detail(response)["loc"] == ["header", "content-type"]


def test_json_media_types_and_non_object_json_keep_their_answers(power):
    charset = power.post("/", content=json.dumps(REQUEST), headers={"content-type": "application/json; charset=utf-8"})
    array = power.post("/", json=[REQUEST])
    assert charset.status_code == 200
    assert array.status_code == 422 and only_detail(array)["loc"] == ["body"]


def test_many_bad_values_get_a_short_answer(power):
    body = {**REQUEST, "features": {"power_watts": ["x"] * 10_000, "cpu_utilization": [1.0] * 9_000 + [-1] * 1_000}}
    response = power.post("/", json=body)
    assert response.status_code == 422 and len(response.content) < 5_000
    assert [(detail["loc"][-1], detail["msg"]) for detail in response.json()["detail"]] == [
        ("power_watts", "Value error, 10000 of its 10000 values are not numbers from 0 to 1e+07 W (the first at "
                        "index 0)"),
        ("cpu_utilization", "Value error, 1000 of its 10000 values are not numbers from 0 to 100 % (the first at "
                            "index 9000)")]


def test_a_batch_of_long_lists_of_bad_values_is_refused_with_one_error_per_list():
    """Regression: pydantic built one error per value, about a million for a 2.9 MiB batch of negative watts:
    seconds of the ingress's event loop and about 2 GB to answer a 422."""
    item = {"type": "power", "request": {"workload_id": "w", "features": {"power_watts": [-1] * 10_000}}}
    with pytest.raises(ValidationError) as refused:
        BatchRequest.model_validate({"items": [item] * 100})
    assert refused.value.error_count() == 100
    few = {"type": "power", "request": {"workload_id": "w", "features": {"power_watts": [1.0, -1, True, float("nan")]}}}
    with pytest.raises(ValidationError) as refused:  # a few bad values are still named one by one
        BatchRequest.model_validate({"items": [few]})
    assert [error["loc"][-1] for error in refused.value.errors()] == [1, 2, 3]


def test_retrain_strings_are_bounded(http, monkeypatch: pytest.MonkeyPatch):
    # Validation needs no replica state beyond the access rules: a valid token, then a hostile body.
    replica = SimpleNamespace(servable_object=SimpleNamespace(access=Access("t")))
    monkeypatch.setattr(serve, "get_replica_context", lambda: replica)
    client, auth = http(api), {"Authorization": "Bearer t"}
    for body, field in (({"data": "x" * 1025}, "data"), ({"prediction_horizon": "9" * 400}, "prediction_horizon"),
                        ({"since": "1" * 100}, "since"), ({"source": "s3"}, "source")):
        response = client.post("/api/v1/models/retrain", json=body, headers=auth)
        assert response.status_code == 422 and field in only_detail(response)["loc"], response.text


def test_an_unexpected_error_is_a_generic_500_with_the_request_id_and_the_details_in_the_log(broken, caplog):
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        response = broken.get("/api/v1/models")
    assert response.status_code == 500
    body = response.json()
    request_id = body["request_id"]
    assert response.headers["x-request-id"] == request_id and request_id in only_detail(response)["msg"]
    assert only_detail(response)["type"] == "internal_error"
    for leak in ("/srv/secret", "10.1.2.3", "Traceback", "RuntimeError"):
        assert leak not in response.text
    logged = "\n".join(record.getMessage() + str(record.exc_info) for record in caplog.records)
    assert request_id in logged and "/srv/secret" in logged


def test_a_sane_incoming_request_id_is_kept_and_a_hostile_one_refused_naming_the_header(power):
    kept = power.post("/", json={**REQUEST, "prediction_horizon": "x"}, headers={"X-Request-ID": "abc-123.4:5"})
    assert kept.json()["request_id"] == "abc-123.4:5"
    for hostile in ("a" * 200, "a b", "<script>", ""):
        refused = power.post("/", json=REQUEST, headers={"X-Request-ID": hostile})
        assert refused.status_code == 400 and refused.json()["detail"][0]["loc"] == ["header", "X-Request-ID"]
        request_id = refused.json()["request_id"]
        assert request_id != hostile and len(request_id) == 32 and (not hostile or hostile not in refused.text)
        assert refused.headers.get_list("x-request-id")[-1] == request_id


def test_head_answers_as_get_without_the_body(broken):
    """`curl -I` and monitors probing with HEAD got 405 from every route."""
    got, head = broken.get("/healthz"), broken.head("/healthz")
    assert head.status_code == got.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"] and head.headers["x-request-id"]
    assert broken.head("/api/v1/predict/cost").status_code == 405  # a POST route has no GET to answer as


def test_every_answer_carries_a_request_id(power, broken):
    for response in (power.post("/", json=REQUEST), broken.get("/healthz"), broken.get("/no/such/route"),
                     broken.post("/api/v1/predict/batch", content=b"{", headers={"Authorization": "Bearer t"})):
        assert len(response.headers["x-request-id"]) == 32, response
        if response.status_code >= 400:
            assert response.json()["request_id"] == response.headers["x-request-id"]
            assert isinstance(response.json()["detail"], list)


def test_a_long_gpu_type_is_422_without_echoing_it(http):
    api.dependency_overrides[serving_replica] = lambda: SimpleNamespace(access=Access(None))
    try:
        response = http(api).post("/api/v1/predict/cost", json={
            "resources": {"cpu_cores": 2, "memory_gb": 4, "gpu_count": 1, "gpu_type": "Q" * 100_000},
            "duration_hours": 1})
    finally:
        api.dependency_overrides.clear()
    assert response.status_code == 422 and "gpu_type" in only_detail(response)["loc"]
    assert len(response.content) < 1000


def test_regression_a_422_repeats_no_long_key_or_tag_of_the_body(http):
    """An unknown key came back whole in `loc`, and a batch item's unknown type whole in `msg`: a 100 kB key made a
    100 kB answer (the cost route needs no token)."""
    api.dependency_overrides[serving_replica] = lambda: SimpleNamespace(access=Access("t"))
    try:
        client = http(api)
        extra_key = client.post("/api/v1/predict/cost", json={
            "resources": {"cpu_cores": 2, "memory_gb": 4}, "duration_hours": 1, "k" * 100_000: 1})
        unknown_tag = client.post("/api/v1/predict/batch", json={"items": [{"type": "x" * 200_000, "request": {}}]},
                                  headers={"Authorization": "Bearer t"})
        quoted_tag = client.post("/api/v1/predict/batch", json={"items": [{"type": "x'" * 100_000, "request": {}}]},
                                 headers={"Authorization": "Bearer t"})  # quotes inside: no quoted run to cut
    finally:
        api.dependency_overrides.clear()
    for response in (extra_key, unknown_tag, quoted_tag):
        assert response.status_code == 422 and len(response.content) < 1_000, response.text[:200]
    assert only_detail(extra_key)["loc"] == ["body", "k" * 64 + "… (100000 characters)"]
    message = only_detail(unknown_tag)["msg"]
    assert "x" * 64 + "… (200000 characters)" in message and "power" in message  # the tags it expects stay


@pytest.mark.parametrize(("resources", "extra", "field"), [
    pytest.param({"cpu_cores": "16", "memory_gb": 64}, {}, "cpu_cores", id="string-cores"),
    pytest.param({"cpu_cores": 16, "memory_gb": True}, {}, "memory_gb", id="bool-memory"),
    pytest.param({"cpu_cores": 16, "memory_gb": 64, "gpu_count": True}, {}, "gpu_count", id="bool-gpus"),
    pytest.param({"cpu_cores": 16, "memory_gb": 64}, {"duration_hours": "6"}, "duration_hours", id="string-hours"),
    pytest.param({"cpu_cores": 16, "memory_gb": 64}, {"spot_instance": "yes"}, "spot_instance", id="string-spot"),
    pytest.param({"cpu_cores": 16, "memory_gb": 64, "gpu_type": "H100"}, {}, "gpu_count", id="type-without-count"),
    pytest.param({"cpu_cores": 16, "memory_gb": 64, "gpu_count": "2"}, {}, "gpu_count", id="string-gpus"),
])
def test_a_cost_request_that_would_be_priced_as_something_else_is_422_naming_the_field(http, resources, extra,
                                                                                        field):
    """`true` GB of memory was priced as 1 GB, and an H100 without gpu_count as no GPU at all."""
    api.dependency_overrides[serving_replica] = lambda: SimpleNamespace(access=Access(None))
    try:
        response = http(api).post("/api/v1/predict/cost", json={"resources": resources, "duration_hours": 6, **extra})
    finally:
        api.dependency_overrides.clear()
    assert response.status_code == 422 and only_detail(response)["loc"][-1] == field, response.text


def test_a_whole_float_gpu_count_and_an_explicit_zero_with_a_type_are_priced():
    """2.0 is a whole number (pandas writes counts that way), and gpu_count 0 with a type means no accelerator."""
    from training.cost.schema import CostQuery

    for resources, gpus in (({"gpu_count": 2.0, "gpu_type": "H100"}, 2), ({"gpu_count": 0, "gpu_type": "H100"}, 0)):
        query = CostQuery.model_validate({"resources": {"cpu_cores": 16, "memory_gb": 64, **resources},
                                          "duration_hours": 6})
        assert query.resources.gpu_count == gpus


@pytest.mark.parametrize("route", ["/api/v1/predict/cost", "/api/v1/scaling/policies", "/api/v1/models/retrain"])
def test_a_body_of_a_hundred_thousand_unknown_keys_is_refused_before_it_is_parsed(broken, route):
    """Regression: each unknown key was an error of its own; ~490,000 of them in 4 MiB cost seconds of the event loop
    and over a GiB before the 422. Any object of the body counts, a nested one too."""
    wide = {f"k{i}": 0 for i in range(100_000)}
    response = broken.post(route, json={"name": "p", "extra": wide}, headers={"Authorization": "Bearer t"})
    assert response.status_code == 422 and only_detail(response) == {  # no route ran: its error list never built
        "loc": ["body"], "msg": "a JSON object with more than 100 members (no request field takes that many)",
        "type": "too_many_members"}


def test_unknown_keys_spread_over_many_small_objects_are_refused_before_they_are_parsed(broken):
    """Regression: the cap counted each object alone, so 800 items of 90 unknown keys each (72,000 errors to build)
    passed it."""
    items = [{"type": "cost", **{f"k{i}": 0 for i in range(90)}} for _ in range(800)]
    response = broken.post("/api/v1/predict/batch", json={"items": items}, headers={"Authorization": "Bearer t"})
    assert response.status_code == 422 and only_detail(response) == {
        "loc": ["body"], "msg": "more than 64000 JSON object members in all (no request needs that many)",
        "type": "too_many_members"}


def test_a_full_batch_of_the_widest_requests_is_within_the_member_caps():
    from app.middleware import MAX_JSON_MEMBERS, MAX_JSON_TOTAL_MEMBERS, _too_many_members
    from app.schemas import MAX_BATCH_ITEMS, PowerFeatures, PowerPredictionRequest

    features = dict.fromkeys(PowerFeatures.model_fields, [1.0])
    widest = {"type": "power", "request": {**dict.fromkeys(PowerPredictionRequest.model_fields, "x"),
                                           "features": features}}
    body = json.dumps({"items": [widest] * MAX_BATCH_ITEMS}).encode()
    assert _too_many_members(body, MAX_JSON_MEMBERS, MAX_JSON_TOTAL_MEMBERS) is None


def test_a_body_within_the_member_cap_reaches_the_route(power):
    response = power.post("/", json={**REQUEST, **{f"k{i}": 0 for i in range(60)}})
    assert response.status_code == 422  # the schema's own answer, naming the first unknown keys
    assert response.json()["detail"][0] == {"loc": ["body", "k0"], "msg": "Extra inputs are not permitted",
                                            "type": "extra_forbidden"}
    assert power.post("/", json=REQUEST).status_code == 200


def test_a_power_request_takes_every_node_id_the_collectors_store_and_a_policy_names():
    """Regression: ids were capped at 128 characters, where telemetry and scaling policies take 253 (a Kubernetes
    node name's limit): such a node could be scaled on but not forecast."""
    from app.schemas import PowerPredictionRequest

    long_name = "n" * 253
    assert PowerPredictionRequest.model_validate({"workload_id": long_name, "node_id": long_name}).node_id == long_name
    for bad in ("n" * 254, "a\x01b"):
        with pytest.raises(ValidationError, match="node_id"):
            PowerPredictionRequest.model_validate({"workload_id": "w", "node_id": bad})


def test_the_openapi_documents_every_422_as_the_error_body_it_is():
    """Regression: 422s were documented as FastAPI's HTTPValidationError (items with `input` and `ctx`, no
    `request_id`), which no answer carries."""
    from app.errors import ErrorBody
    from app.ingress import api

    schema = api.openapi()
    answers = [operation["responses"]["422"] for operations in schema["paths"].values()
               for operation in operations.values() if "422" in operation["responses"]]
    assert len(answers) > 10 and "HTTPValidationError" not in json.dumps(schema)
    assert {answer["content"]["application/json"]["schema"]["$ref"] for answer in answers} == {
        "#/components/schemas/ErrorBody"}
    assert set(schema["components"]["schemas"]["ErrorBody"]["properties"]) == set(ErrorBody.model_fields)

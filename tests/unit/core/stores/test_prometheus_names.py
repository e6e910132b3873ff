"""PrometheusStore's metric names: current Kepler's by default, Kepler 0.7's on request, selectors with matchers;
its logins, its timeouts, and the power it takes for a reading.
(tests/integration/test_prometheus_store.py reads them from a real Prometheus.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from core.settings import ConfigError
from core.stores import create_store
from core.stores.base import StoreUnavailable
from core.stores.prometheus import PrometheusStore

URL = "http://prom:9090"


def test_current_kepler_names_keyed_by_node_name() -> None:
    store = PrometheusStore(URL)
    assert store._power_expr("node_power", "n1", 60) == (
        'max by (node_name) (avg_over_time(kepler_platform_watts{node_name="n1"}[60s]))')
    assert store._power_expr("cpu_power", "n1", 60) == (
        'sum by (node_name) (rate(kepler_node_cpu_joules_total{node_name="n1",zone="package"}[120s]))')
    assert store._power_expr("gpu_power", None, None) == (
        "sum by (Hostname) (max without (GPU_I_ID, GPU_I_PROFILE, pod, namespace, container, exported_pod, "
        "exported_namespace, exported_container, instance, job, endpoint, service) (DCGM_FI_DEV_POWER_USAGE{}))")
    # a GPU series keyed by `instance` keeps it (it names the node there)
    by_instance = PrometheusStore(URL, node_labels={"gpu_power": "instance"})
    assert "max without (GPU_I_ID, GPU_I_PROFILE, pod, namespace, container, exported_pod, exported_namespace, " \
        "exported_container, job, endpoint, service)" in by_instance._power_expr("gpu_power", None, None)


def test_kepler_0_7_names_and_explicit_overrides() -> None:
    old = PrometheusStore(URL, kepler="0.7", min_rate_window_s=60)
    assert old._power_expr("node_power", "n1", 60) == (
        'sum by (instance) (rate(kepler_node_platform_joules_total{instance="n1"}[60s]))')
    assert old._power_expr("cpu_power", "n1", 60) == (
        'sum by (instance) (rate(kepler_node_package_joules_total{instance="n1"}[60s]))')
    mine = PrometheusStore(URL, kepler="0.7", metric_names={"node_power": 'wall_watts{kind="psu"}'},
                           node_labels={"node_power": "node"})
    assert mine._power_expr("node_power", "n1", None) == 'max by (node) (wall_watts{node="n1",kind="psu"})'


def test_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown Kepler metric names '0.9'"):
        PrometheusStore(URL, kepler="0.9")
    with pytest.raises(ValueError, match="cpu_power .* must end with '}'"):
        PrometheusStore(URL, metric_names={"cpu_power": 'x{zone="package"'})
    with pytest.raises(ValueError, match="unknown Prometheus metric key"):
        PrometheusStore(URL, metric_names={"platform": "x"})


def test_the_setting_selects_the_names() -> None:
    store = create_store({"PROMETHEUS_URL": URL, "PROMETHEUS_KEPLER_NAMES": "0.7"})
    assert isinstance(store, PrometheusStore) and store.metrics["node_power"] == "kepler_node_platform_joules_total"
    assert create_store({"PROMETHEUS_URL": URL}).metrics["node_power"] == "kepler_platform_watts"
    with pytest.raises(ConfigError, match="PROMETHEUS_KEPLER_NAMES"):
        create_store({"PROMETHEUS_URL": URL, "PROMETHEUS_KEPLER_NAMES": "0.8"})


def test_a_password_in_the_store_url_stays_out_of_logs_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO"):
        store = PrometheusStore("http://scraper:Sup3rSecret@127.0.0.1:9/", timeout_s=1)
    with pytest.raises(StoreUnavailable) as unreachable:
        store.latest()
    shown = " ".join([caplog.text, str(unreachable.value), repr(store)])
    assert "Sup3rSecret" not in shown and "scraper" not in shown and "http://127.0.0.1:9" in shown


def test_a_login_in_the_store_url_is_sent_as_basic_auth_not_as_part_of_the_host(monkeypatch) -> None:
    """Regression: urllib took `user:password@host` for the host, so PROMETHEUS_URL with a login never worked."""
    import base64
    import io
    import json

    from core.stores import prometheus

    sent = []

    def urlopen(request, timeout):
        sent.append(request)
        return io.BytesIO(json.dumps({"status": "success", "data": {"result": []}}).encode())

    monkeypatch.setattr(prometheus, "open_url", urlopen)
    store = PrometheusStore("http://scraper:S%40crEt@prom.example:9090/api/prom/")
    assert store.latest() == [] and "crEt" not in store.url + repr(store)
    request = sent[0]
    assert request.full_url.startswith("http://prom.example:9090/api/prom/api/v1/query?")
    assert request.get_header("Authorization") == "Basic " + base64.b64encode(b"scraper:S@crEt").decode()
    assert PrometheusStore(URL).url == URL and PrometheusStore(URL)._auth == {}  # no login, no header


@pytest.mark.parametrize("url", ["https://kcloud:Zx9/q+T2w==@prom.example:9090/", "http://kcloud:a?b#c@prom:9090"])
def test_regression_a_password_with_an_unencoded_slash_is_refused_without_showing_it(url: str) -> None:
    """It was logged in full (the mask stopped at its `/`), and every read failed on a "port" that was its start."""
    with pytest.raises(ConfigError) as refused:
        create_store({"PROMETHEUS_URL": url})
    assert str(refused.value) == ("PROMETHEUS_URL: has an '@' after its host: percent-encode a login's '/', '?', '#' "
                                  "and '@' (%2F, %3F, %23, %40)")
    with pytest.raises(ConfigError, match="INFLUX_HOST: has an '@' after its host"):
        create_store({"INFLUX_HOST": url.replace("prom", "influx"), "INFLUX_TOKEN": "t"})


def test_text_with_such_a_url_is_masked_to_the_last_at_sign() -> None:
    from core.settings import without_url_password

    assert without_url_password("GET https://kcloud:Zx9/q+T2w==@prom.example:9090/ failed") == (
        "GET https://kcloud:********@prom.example:9090/ failed")
    assert without_url_password("http://u:p@ss@host:1 and http://v:w@h") == "http://u:********@host:1 and http://v:********@h"


def test_a_window_s_queries_share_one_timeout(monkeypatch) -> None:
    """Regression: a window is 8 queries in a row, each given the whole timeout, so a Prometheus answering each just
    in time held a reader for 80 s; a retraining's weeks got 10 s per query, 240 s for 14 days at 1 min, past the
    120 s its caller waits, and 10 s for all of an hourly model's 8 weeks (review)."""
    import io
    import json

    from core.stores import prometheus

    clock = {"now": 1000.0}
    timeouts = []

    def slow_urlopen(request, timeout):
        timeouts.append(timeout)
        clock["now"] += 4.0  # each answer takes 4 s
        return io.BytesIO(json.dumps({"status": "success", "data": {"result": []}}).encode())

    monkeypatch.setattr(prometheus, "open_url", slow_urlopen)
    monkeypatch.setattr(prometheus, "time", SimpleNamespace(monotonic=lambda: clock["now"], time=lambda: 1.8e9))
    store = PrometheusStore(URL, timeout_s=10)
    end = datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(StoreUnavailable, match="too slow"):
        store.window("n1", end - timedelta(hours=1), end, 60)
    assert timeouts == [10.0, 6.0, 2.0]
    timeouts.clear()  # so do the 9 queries of `latest()` (review: 10 s each, 90 s for the controller's tick)
    with pytest.raises(StoreUnavailable, match="too slow"):
        store.latest()
    assert timeouts == [10.0, 6.0, 2.0]
    timeouts.clear()  # a retraining's window of weeks (its caller waits 120 s): 110 s for all of them
    store.long_window("n1", end - timedelta(days=14), end, 60)
    assert timeouts == [110.0 - 4.0 * k for k in range(24)]  # 8 queries × 3 parts of 10,000 bins
    timeouts.clear()  # the nodes a retraining reads over its weeks: as long; the API's and the collectors': 10 s
    store.nodes(since=end - timedelta(days=14))
    store.nodes()
    assert timeouts == [110.0, 106.0, 102.0, 10.0, 6.0, 2.0]


def test_nodes_since_a_time_ask_for_that_span_and_odd_answers_are_unavailable(monkeypatch) -> None:
    """Regression: `nodes(since)` sent no span, so VictoriaMetrics (a day by default) left out the nodes a retraining
    of two weeks should read; an answer that was no JSON object, or cut off, escaped as AttributeError or
    IncompleteRead instead of StoreUnavailable."""
    import http.client
    import io
    import json
    import urllib.parse

    from core.stores import prometheus

    answers, sent = [], []

    def urlopen(request, timeout):
        sent.append(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(request.full_url).query)))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return io.BytesIO(json.dumps(answer).encode())

    monkeypatch.setattr(prometheus, "open_url", urlopen)
    store = PrometheusStore(URL)
    answers.extend([{"status": "success", "data": ["n1"]}] * 6)
    since = datetime(2026, 11, 17, tzinfo=UTC)
    assert store.nodes(since) == ["n1"]
    assert {float(query["start"]) for query in sent} == {since.timestamp()} and all("end" in q for q in sent)
    with pytest.raises(ValueError, match="must carry a time zone"):  # as the other stores: never the host's local time
        store.nodes(datetime(2026, 11, 17))
    sent.clear()
    answers.clear()
    answers.extend([{"status": "success", "data": []}] * 6)
    assert store.nodes() == [] and not any("start" in query for query in sent)
    for odd in (["not", "an", "object"], {"status": "success"}, http.client.IncompleteRead(b"{")):
        answers[:] = [odd]
        with pytest.raises(StoreUnavailable):
            store.nodes()


def test_power_no_node_draws_is_no_reading(monkeypatch) -> None:
    """Review: the collectors' screen refuses a BMC's 65,535 W sentinel and power above `max_node_watts` on the way
    in, but a scraped store's values were taken whole: one such series became the node's power for forecasts and
    scaling, and a negative value failed a retraining's whole read. Such a bin is a gap; such a latest reading none."""
    import io
    import json
    import urllib.parse

    from core.stores import prometheus

    end = datetime(2026, 12, 1, tzinfo=UTC)
    stamps = [int((end - timedelta(minutes=2 - k)).timestamp()) for k in range(3)]  # the 3 bins' ends
    node_power = [[stamps[0], "500"], [stamps[1], "65535"], [stamps[2], "-3"]]

    def urlopen(request, timeout):
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(request.full_url).query))["query"]
        if "/query_range" in request.full_url:
            result = [{"metric": {}, "values": node_power}] if query.startswith("max by") else []
        elif query.startswith("max by"):  # latest: the node's power now
            result = [{"metric": {"instance": "n1"}, "value": [stamps[2], "65535"]}]
        elif query.startswith("min by"):  # its time
            result = [{"metric": {"instance": "n1"}, "value": [stamps[2], str(stamps[2])]}]
        else:
            result = []
        return io.BytesIO(json.dumps({"status": "success", "data": {"result": result}}).encode())

    monkeypatch.setattr(prometheus, "open_url", urlopen)
    store = PrometheusStore(URL, node_labels={"node_power": "instance"}, max_node_watts=15_000)
    frame = store.window("n1", end - timedelta(minutes=3), end, 60)
    assert frame["power_watts"].iloc[0] == 500.0 and frame["power_watts"].iloc[1:].isna().all()
    assert store.latest() == []

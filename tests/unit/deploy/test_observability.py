"""The PodMonitor scrapes the Ray pods' metrics port; every dashboard query and every metric docs/operations.md
names is a series the service really exports (core/metrics_catalog.py, whose test checks the code creates it)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from core.metrics_catalog import METRICS, exported_names
from tests.paths import REPO_ROOT
from tests.unit.deploy.kustomize import build, load_documents
from tests.unit.deploy.schemas import crd_errors

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "kcloud-dashboard.json"
OPERATIONS = REPO_ROOT / "docs" / "operations.md"
PROMQL_WORDS = {  # functions, aggregations and keywords the dashboard may use
    "sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring", "or", "and", "unless", "rate",
    "increase", "irate", "histogram_quantile", "time", "vector", "le", "offset", "bool",
}
EXPORTED = exported_names()


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: its identifiers less label matchers, groupings, ranges,
    strings, dashboard variables and PromQL's own words."""
    text = re.sub(r'"[^"]*"', "", expr)  # strings (label values)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)  # matchers, ranges
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", text)  # grouping labels
    text = re.sub(r"\$\w+", " ", text)  # dashboard variables
    return set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text)) - PROMQL_WORDS


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def test_every_dashboard_query_reads_only_exported_series(dashboard: dict[str, Any]):
    used: set[str] = set()
    for title, expr in _targets(dashboard):
        names = _metric_names(expr)
        assert names <= set(EXPORTED), f"{title}: {sorted(names - set(EXPORTED))} is not exported by the service"
        used |= names
    variables = [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    for definition in variables:
        assert re.search(r"label_values\((\w+),", definition)[1] in EXPORTED, definition
    assert len(used) >= 10


def test_a_query_over_one_series_of_ours_groups_and_matches_only_by_its_labels(dashboard: dict[str, Any]):
    """Regression: the live-accuracy panels grouped by model_version after the gauges dropped that label."""
    for title, expr in _targets(dashboard):
        ours = [EXPORTED[name] for name in _metric_names(expr) if name.startswith("ray_kcloud_")]
        if len(ours) != 1:
            continue
        grouped = {label.strip() for labels in re.findall(r"\bby\s*\(([^)]*)\)", expr) for label in labels.split(",")}
        matched = set(re.findall(r"(\w+)\s*=~?\s*\"", expr))
        assert grouped | matched <= {*ours[0].tags, "le", "instance"}, (title, expr)


def test_the_dashboard_has_the_issue_s_panels(dashboard: dict[str, Any]):
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    for wanted in ("measured, forecast and interval against the budget", "replicas per policy", "decisions",
                   "inference time", "telemetry age", "throughput", "gpu memory"):
        assert wanted in titles, wanted
    queries = " ".join(expr for _, expr in _targets(dashboard))
    for series in ("ray_kcloud_forecast_power_watts", "ray_kcloud_scaling_desired_replicas",
                   "ray_kcloud_scaling_decisions_total", "ray_kcloud_model_inference_seconds_bucket",
                   "ray_kcloud_telemetry_last_sample_timestamp_seconds", "ray_kcloud_memory_usage_percent"):
        assert series in queries, series
    band = next(p for p in dashboard["panels"] if "interval" in p["title"])
    assert {"upper", "lower", "budget"} <= {t["legendFormat"] for t in band["targets"]}
    fill = band["fieldConfig"]["overrides"][0]
    assert fill["matcher"]["options"] == "upper"
    assert {"id": "custom.fillBelowTo", "value": "lower"} in fill["properties"]


def test_dashboard_panels_are_well_formed(dashboard: dict[str, Any]):
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] and dashboard["title"]
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource", "node", "policy", "budget_watts"}
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert all(t["refId"] for t in panel["targets"]) and panel.get("description"), panel["title"]


def test_the_podmonitor_scrapes_the_ray_pods_metrics_port():
    (monitor,) = load_documents(REPO_ROOT / "deploy" / "base" / "podmonitor.yaml")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    assert not crd_errors(monitor)
    assert monitor["spec"]["selector"] == {"matchLabels": {"ray.io/is-ray-node": "yes"}}  # KubeRay's pod label
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")  # the port KubeRay adds: 8080
    for folder in ("base", "overlays/cpu", "overlays/gpu"):
        (built,) = [o for o in build(REPO_ROOT / "deploy" / folder) if o["kind"] == "PodMonitor"]
        assert built["metadata"]["namespace"] == "kcloud"


def test_docs_list_every_exported_series_and_no_other():
    text = OPERATIONS.read_text(encoding="utf-8")
    named = set(re.findall(r"\bray_kcloud_[a-z0-9_]+", text))
    assert named == set(EXPORTED), (sorted(set(EXPORTED) - named), sorted(named - set(EXPORTED)))
    for spec in METRICS:
        assert f"`{spec.name}`" in text, spec.name

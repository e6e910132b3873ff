"""core/metrics_catalog.py lists every metric the code creates, with the series names Prometheus really stores."""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import metrics_catalog as catalog
from core.metrics_catalog import METRICS, MetricKind, MetricSpec
from tests.paths import REPO_ROOT

PACKAGES = ("app", "deployments", "training", "collectors", "autoscaler", "core")
CATALOG = REPO_ROOT / "core" / "metrics_catalog.py"
CONSTRUCTORS = {"Gauge": MetricKind.GAUGE, "Counter": MetricKind.COUNTER, "Histogram": MetricKind.HISTOGRAM}
CONSTANTS = {name: value for name, value in vars(catalog).items() if isinstance(value, MetricSpec)}


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if path != CATALOG:
                yield path, ast.parse(path.read_text(encoding="utf-8"))


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _ray_constructor(call: ast.Call, imported: set[str]) -> bool:
    """Gauge/Counter/Histogram of ray.util.metrics or ray.serve.metrics (by name imported from there, or as
    `<...>metrics.Gauge`), not e.g. collections.Counter."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id in imported
    return (isinstance(func, ast.Attribute) and func.attr in CONSTRUCTORS
            and ast.unparse(func.value).endswith("metrics"))


def _direct_creations() -> list[tuple[str, ast.Call]]:
    """Ray metric constructors called outside the catalog: (where, call)."""
    found = []
    for path, tree in _modules():
        imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and node.module in ("ray.util.metrics", "ray.serve.metrics") for alias in node.names
                    if alias.name in CONSTRUCTORS}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _ray_constructor(node, imported):
                found.append((f"{path.relative_to(REPO_ROOT)}:{node.lineno}", node))
    return found


def test_every_constant_is_listed_once_and_names_are_unique():
    assert set(CONSTANTS.values()) == set(METRICS) and len(set(METRICS)) == len(METRICS)
    assert len({spec.name for spec in METRICS}) == len(METRICS)
    for spec in METRICS:
        assert spec.name.startswith("kcloud_") and spec.tags
        assert (spec.kind is MetricKind.HISTOGRAM) == bool(spec.boundaries), spec.name
        assert list(spec.boundaries) == sorted(set(spec.boundaries)), spec.name


def test_no_metric_is_created_outside_the_catalog():
    """Every Ray metric comes from `catalog.create(<catalog entry>)`: no Gauge(/Counter(/Histogram( call of
    ray.util.metrics or ray.serve.metrics anywhere else."""
    assert [where for where, _ in _direct_creations()] == []


def test_metric_specs_are_made_only_in_the_catalog_and_every_one_is_created_somewhere():
    referenced: set[str] = set()
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                assert _called_name(node) != "MetricSpec", f"{path}:{node.lineno}: define metrics in the catalog"
            if isinstance(node, ast.Name | ast.Attribute):
                referenced.add(node.id if isinstance(node, ast.Name) else node.attr)
    for name, spec in CONSTANTS.items():
        assert name in referenced, f"{spec.name} is listed but never created"


def test_create_refuses_nothing_it_lists_and_outside_ray_is_harmless(monkeypatch):
    """Every listed metric is created (a None here was a metric Ray refused: `create` swallows that); where Ray's
    metrics cannot be made, None, never an error."""
    for spec in METRICS:
        created = catalog.create(spec)
        assert created is not None and type(created).__name__ == spec.kind.value.capitalize(), spec.name

    from ray.util import metrics

    def refused(*args, **kwargs):
        raise RuntimeError("metrics are not available here")

    for kind in ("Gauge", "Counter", "Histogram"):
        monkeypatch.setattr(metrics, kind, refused)
    assert all(catalog.create(spec) is None for spec in METRICS)


def test_a_metric_ray_refuses_inside_a_ray_process_is_a_warning(monkeypatch, caplog):
    """Regression: logged at DEBUG only, so a metric missing from the dashboards left no trace in production."""
    import ray
    from ray.util import metrics

    def refused(*args, **kwargs):
        raise ValueError("tag key clashes")

    monkeypatch.setattr(metrics, "Gauge", refused)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    with caplog.at_level(logging.DEBUG, logger=catalog.__name__):
        assert catalog.create(catalog.POWER_WATTS) is None
    assert [record.levelno for record in caplog.records if "not created" in record.getMessage()] == [logging.WARNING]


@pytest.mark.parametrize(("spec", "series"), [
    (catalog.SCALING_DECISIONS, ("ray_kcloud_scaling_decisions_total",)),
    (catalog.POWER_WATTS, ("ray_kcloud_power_watts",)),
    (catalog.MODEL_INFERENCE_SECONDS, ("ray_kcloud_model_inference_seconds_bucket",
                                       "ray_kcloud_model_inference_seconds_sum",
                                       "ray_kcloud_model_inference_seconds_count")),
    (MetricSpec(name="kcloud_x", kind=MetricKind.COUNTER, description="x", tags=("a",)), ("ray_kcloud_x_total",)),
])
def test_exported_names_follow_ray_s_rules(spec: MetricSpec, series: tuple[str, ...]):
    assert spec.exported == series


def test_ray_s_own_exporter_stores_exactly_the_catalog_s_series():
    """Every catalog metric through Ray's metrics agent recorder (OpenTelemetry -> Prometheus text), as a node's
    metrics port serves it: the series names scraped are the catalog's `exported` names."""
    recorder_module = pytest.importorskip("ray._private.telemetry.open_telemetry_metric_recorder")
    from prometheus_client import REGISTRY, generate_latest

    recorder = recorder_module.OpenTelemetryMetricRecorder(gauge_metric_ttl_seconds=600)
    register = {MetricKind.GAUGE: recorder.register_gauge_metric, MetricKind.COUNTER: recorder.register_counter_metric}
    for spec in METRICS:
        if spec.kind is MetricKind.HISTOGRAM:
            recorder.register_histogram_metric(spec.name, spec.description, list(spec.boundaries))
        else:
            register[spec.kind](spec.name, spec.description)
        recorder.set_metric_value(spec.name, dict.fromkeys(spec.tags, "x"), 1.0)
    scraped = {line.split("{")[0].split(" ")[0] for line in generate_latest(REGISTRY).decode().splitlines()
               if line.startswith("ray_kcloud_")}
    assert scraped == set(catalog.exported_names())

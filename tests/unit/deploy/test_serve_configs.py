"""serve_config.yaml and both serveConfigV2 copies: options per deployment where Serve reads them
(`applications[].deployments[]`), by names that exist in their application, and the copies in step."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve._private.build_app import build_app as serve_build
from ray.serve._private.utils import import_attr
from ray.serve.schema import DeploymentSchema

from app import main
from app.settings import DEPLOYMENT_ARGS, ServeConfigArgs
from core.names import COST_DEPLOYMENT, INGRESS_DEPLOYMENT, MAIN_APP, POWER_APP, POWER_DEPLOYMENT
from deployments.node_calibration import MAX_SERIES, NodeCalibrations
from deployments.power import PowerPredictor, PowerPredictorUserConfig
from tests.paths import REPO_ROOT
from tests.unit.deploy.kustomize import build
from training.power.forecaster import ArtifactError

GPU = {"args.retrain.use_gpu", f"applications.{POWER_APP}.deployments.{POWER_DEPLOYMENT}.ray_actor_options.num_gpus"}
"""What the GPU overlay's serveConfigV2 changes in the base's (its header says so)."""

CLUSTER = {  # serve_config.yaml -> the base serveConfigV2; deploy/base/rayservice.yaml's header lists the same
    "http_options.host",  # 0.0.0.0 in the pod
    "args.model_path", "args.state_path", "args.api_token_file",  # the pods' volumes
    "args.retrain.data", "args.retrain.data_dir", "args.retrain.num_workers",  # no demo CSV; 2 Ray Train workers
    "args.telemetry.replay", "args.telemetry.store_settings",  # real telemetry; the store from the environment
    *(f"applications.{MAIN_APP}.deployments.{name}" for name in (
        f"{INGRESS_DEPLOYMENT}.num_replicas", f"{INGRESS_DEPLOYMENT}.ray_actor_options.num_cpus",
        f"{INGRESS_DEPLOYMENT}.ray_actor_options.resources", f"{COST_DEPLOYMENT}.ray_actor_options.num_cpus")),
    *(f"applications.{POWER_APP}.deployments.{POWER_DEPLOYMENT}.{name}" for name in (
        "num_replicas", "ray_actor_options.num_cpus", "user_config.max_batch_size",
        "user_config.batch_wait_timeout_s", "user_config.registry_poll_s")),
}


def _local() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text())


def _service(overlay: str) -> dict[str, Any]:
    (service,) = [o for o in build(REPO_ROOT / "deploy" / overlay) if o["kind"] == "RayService"]
    return yaml.safe_load(service["spec"]["serveConfigV2"])


CONFIGS = {"serve_config.yaml": _local, "cpu serveConfigV2": lambda: _service("overlays/cpu"),
           "gpu serveConfigV2": lambda: _service("overlays/gpu")}


def _deployments(config: dict[str, Any], app: str) -> dict[str, dict[str, Any]]:
    (found,) = [a for a in config["applications"] if a["name"] == app]
    return {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in found.get("deployments", [])}


def _tree(config: dict[str, Any]) -> dict[str, Any]:
    """Every setting: args once (shared by both apps, validated so that a default spelled out equals one left
    out), each app's other keys and its deployments by name."""
    args = [app["args"] for app in config["applications"]]
    assert all(one == args[0] for one in args), "both apps take one set of args (a YAML anchor)"
    apps = {app["name"]: {**{k: v for k, v in app.items() if k not in ("name", "args", "deployments")},
                          "deployments": _deployments(config, app["name"])} for app in config["applications"]}
    return {**{k: v for k, v in config.items() if k != "applications"}, "applications": apps,
            "args": ServeConfigArgs.model_validate(args[0]).model_dump(mode="json")}


_ABSENT = object()


def _diff(one: Any, other: Any, prefix: str = "") -> set[str]:
    """Dotted paths where the two differ (a key on one side only counts once, where it is missing)."""
    if isinstance(one, dict) and isinstance(other, dict):
        return {path for key in one.keys() | other.keys()
                for path in _diff(one.get(key, _ABSENT), other.get(key, _ABSENT), f"{prefix}{key}.")}
    return set() if one == other else {prefix[:-1]}


def _differences(one: dict[str, Any], other: dict[str, Any]) -> set[str]:
    return _diff(_tree(one), _tree(other))


def test_the_base_serve_config_v2_is_serve_config_yaml_but_for_the_documented_cluster_differences():
    assert _differences(_local(), _service("overlays/cpu")) == CLUSTER


def test_the_gpu_serve_config_v2_is_the_bases_with_gpus():
    assert _differences(_service("overlays/cpu"), _service("overlays/gpu")) == GPU
    gpu = _deployments(_service("overlays/gpu"), POWER_APP)[POWER_DEPLOYMENT]
    assert gpu["ray_actor_options"]["num_gpus"] == 1


@pytest.mark.parametrize("name", CONFIGS)
def test_every_deployments_entry_names_a_deployment_of_its_application(name: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(main, "start_actors", lambda args: None)  # no cluster: only the app's graph is built
    config = CONFIGS[name]()
    expected = {MAIN_APP: {INGRESS_DEPLOYMENT, COST_DEPLOYMENT}, POWER_APP: {POWER_DEPLOYMENT}}
    for app in config["applications"]:
        # as Serve builds it: the config's args validated into the builder's ServeConfigArgs, then the graph
        built = call_user_app_builder_with_args_if_necessary(import_attr(app["import_path"]), app["args"])
        names = {deployment.name for deployment in serve_build(built, name=app["name"]).deployments}
        assert names == expected[app["name"]]
        assert set(_deployments(config, app["name"])) == names, app["name"]  # each one configured, none unknown


@pytest.mark.parametrize("name", CONFIGS)
def test_no_deployment_options_in_args(name: str):
    for app in CONFIGS[name]()["applications"]:
        assert not set(app["args"]) & set(DEPLOYMENT_ARGS), app["name"]


@pytest.mark.parametrize("name", CONFIGS)
def test_the_http_ingress_queues_a_bounded_number_of_requests(name: str):
    """Regression (review): Serve queues without limit by default, so a flood of open reads or forecasts piled up in
    the proxy instead of being answered 503."""
    ingress = _deployments(CONFIGS[name](), MAIN_APP)[INGRESS_DEPLOYMENT]
    assert DeploymentSchema.model_validate({**ingress, "name": INGRESS_DEPLOYMENT}).max_queued_requests == 256


@pytest.mark.parametrize("name", CONFIGS)
def test_the_dashboard_url_in_the_environment_reaches_the_controller(name: str, monkeypatch: pytest.MonkeyPatch):
    """Regression: every shipped config set `autoscaler.ray_dashboard_url` to its default in args, which win over
    $RAY_DASHBOARD_URL, so the documented place for another dashboard (or a proxy's login) changed nothing."""
    monkeypatch.setenv("RAY_DASHBOARD_URL", "http://dashboard.example:8265")
    for app in CONFIGS[name]()["applications"]:
        args = ServeConfigArgs.model_validate(app["args"])
        assert args.autoscaler.ray_dashboard_url == "http://dashboard.example:8265", app["name"]


@pytest.mark.parametrize("name", CONFIGS)
def test_the_power_predictors_user_config_reaches_its_reconfigure(name: str):
    user_config = _deployments(CONFIGS[name](), POWER_APP)[POWER_DEPLOYMENT]["user_config"]
    assert {"batching", "max_batch_size", "batch_wait_timeout_s", "registry_poll_s", "max_followed_nodes"} <= set(
        user_config)
    replica = _replica()
    asyncio.run(PowerPredictor.reconfigure(replica, user_config))  # what Serve calls with the config's user_config
    assert replica.settings == PowerPredictorUserConfig(**user_config)
    assert replica.settings.model_dump(include=set(user_config)) == user_config
    assert replica._batched.calls == [("max_batch_size", user_config["max_batch_size"]),
                                      ("batch_wait_timeout_s", user_config["batch_wait_timeout_s"])]
    assert replica.node_calibrations.max_series == user_config["max_followed_nodes"]


def test_a_live_change_of_the_followed_nodes_reaches_the_versions_already_followed():
    """Regression: each version's calibration kept the limit it started with, so raising it live still dropped
    those nodes' own corrections beyond the old limit."""
    calibrations = NodeCalibrations(max_series=16)
    model = calibrations._model(SimpleNamespace(model_version="power_lstm/1", point=(1.0,), step_s=60,
                                                interval_coverage=0.8, confidence_tolerance=0.1), 1)
    calibrations.max_series = 5000
    assert model.max_series == 5000


def test_a_pinned_version_that_cannot_load_leaves_every_setting_as_it_was():
    """Regression: the batch settings were applied before the pinned version was loaded, so a pin that failed left
    them changed while the replica reported its settings unchanged."""
    replica = _replica()

    def cannot_load(settings: PowerPredictorUserConfig) -> None:
        raise ArtifactError("version 9 cannot be loaded")

    replica._apply = cannot_load
    with pytest.raises(ArtifactError):
        asyncio.run(PowerPredictor.reconfigure(replica, {"model_version": 9, "max_batch_size": 64,
                                                         "max_followed_nodes": 5000}))
    assert replica._batched.calls == [] and replica.node_calibrations.max_series == MAX_SERIES


@pytest.mark.parametrize(("user_config", "key"), [({"max_batch_sise": 32}, "max_batch_sise"),
                                                  ({"max_batch_size": 0}, "max_batch_size"),
                                                  ({"registry_poll_s": "often"}, "registry_poll_s")])
def test_a_bad_user_config_is_refused_naming_the_key(user_config: dict[str, Any], key: str):
    replica = _replica()
    with pytest.raises(ValidationError, match=rf"PowerPredictorUserConfig\n{key}\n"):
        asyncio.run(PowerPredictor.reconfigure(replica, user_config))
    assert replica._batched.calls == []  # nothing applied


@pytest.mark.parametrize("key", DEPLOYMENT_ARGS)
def test_a_serve_config_with_deployment_options_in_args_is_refused_naming_the_key(key: str):
    args = {**_local()["applications"][0]["args"], key: {"num_replicas": 2}}
    app, deployment = DEPLOYMENT_ARGS[key]
    for builder in (main.build_app, main.build_power_app):
        with pytest.raises(ValidationError) as caught:
            call_user_app_builder_with_args_if_necessary(builder, args)
        message = str(caught.value)
        assert f"args.{key}: deployment options are not app args" in message
        assert f"application {app!r}, deployments: [{{name: {deployment}, ...}}]" in message


def test_python_callers_keep_code_level_deployment_options():
    """Tests, benchmarks and the soak build the apps from a dict without a Serve config."""
    user_config = {"registry_poll_s": 1}
    built = main.build_power_app({"model_path": "trained_models", "power_predictor": {
        "num_replicas": 3, "ray_actor_options": {"num_cpus": 0.2}, "user_config": user_config}})
    (deployment,) = serve_build(built, name=POWER_APP).deployments
    assert (deployment.num_replicas, deployment.ray_actor_options, deployment.user_config) == (
        3, {"num_cpus": 0.2}, user_config)


class _Batcher:
    """Records the batch settings a reconfigure sets on `@serve.batch`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def set_max_batch_size(self, value: int) -> None:
        self.calls.append(("max_batch_size", value))

    def set_batch_wait_timeout_s(self, value: float) -> None:
        self.calls.append(("batch_wait_timeout_s", value))


def _replica() -> SimpleNamespace:
    """The state PowerPredictor.reconfigure touches, without loading a model."""
    replica = SimpleNamespace(settings=PowerPredictorUserConfig(), _batched=_Batcher(), version=1,
                              _loading=threading.Lock(), node_calibrations=NodeCalibrations())
    replica._apply = lambda settings: PowerPredictor._apply(replica, settings)
    return replica

"""The KubeRay manifests stay in step with the code: apps, builders and args that validate, a tested Ray."""

from __future__ import annotations

import importlib

import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from app.settings import ServeConfigArgs
from tests.paths import REPO_ROOT
from tests.unit.deploy.kustomize import build
from tests.unit.deploy.project import ray_specifier
from tests.unit.deploy.schemas import ray_cluster_spec
from training import train_lstm

ROOT = REPO_ROOT
OVERLAYS = ("overlays/cpu", "overlays/gpu")


def _apps(serve_config: dict) -> dict[str, dict]:
    return {app["name"]: app for app in serve_config["applications"]}


def _objects(folder: str) -> dict[str, dict]:
    """An overlay's objects by kind, with the one-off retraining RayJob of its flavour."""
    one_off = ROOT / "deploy" / "retrain-once" / folder.rsplit("/", 1)[1]
    return {o["kind"]: o for o in build(ROOT / "deploy" / folder) + build(one_off)}


@pytest.mark.parametrize("folder", OVERLAYS)
def test_rayservice_serves_the_same_applications_as_serve_config(folder: str):
    service = _objects(folder)["RayService"]
    embedded_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    local_config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    embedded, local = _apps(embedded_config), _apps(local_config)
    assert embedded.keys() == local.keys()
    for name, app in embedded.items():
        assert (app["import_path"], app["route_prefix"]) == (local[name]["import_path"], local[name]["route_prefix"])
        assert app.get("external_scaler_enabled", False) == local[name].get("external_scaler_enabled", False)
        module, _, builder = app["import_path"].partition(":")
        assert callable(getattr(importlib.import_module(module), builder))
        ServeConfigArgs.model_validate(app["args"])  # a wrong key or value would stop the RayService
    for config in (embedded_config, local_config):
        ServeDeploySchema.model_validate(config)  # what Serve itself accepts (external scaler rules included)


def test_ray_versions_lie_in_the_tested_range():
    specifier = ray_specifier()
    assert ray.__version__ in specifier
    for folder in OVERLAYS:
        objects = _objects(folder)
        for kind in ("RayService", "RayJob", "RayCronJob"):
            assert ray_cluster_spec(objects[kind])["rayVersion"] in specifier, (folder, kind)


@pytest.mark.parametrize("folder", OVERLAYS)
def test_rayjob_entrypoint_is_a_valid_train_command(folder: str):
    """The daily RayCronJob prunes to 30 versions (the GPU overlay's entrypoint, replaced whole, once left the flag
    out, and the shared registry volume filled)."""
    objects = _objects(folder)
    for entrypoint, daily in ((objects["RayJob"]["spec"]["entrypoint"], False),
                              (objects["RayCronJob"]["spec"]["jobTemplate"]["entrypoint"], True)):
        argv = entrypoint.split()
        assert argv[:3] == ["python", "-m", "training.train_lstm"]
        args = train_lstm.parse_args(argv[3:])
        assert args.use_gpu == (folder == "overlays/gpu") and args.num_workers == 2
        assert args.from_store and args.model_path == "/models"
        assert train_lstm.shape_note(train_lstm.build_spec(args)) is None  # the shape power_lstm is served at
        assert args.keep_versions == (30 if daily else None)


@pytest.mark.parametrize("folder", OVERLAYS)
def test_retraining_jobs_keep_checkpoints_on_storage_every_pod_mounts(folder: str):
    objects = _objects(folder)
    for job in (objects["RayJob"]["spec"], objects["RayCronJob"]["spec"]["jobTemplate"]):
        args = train_lstm.parse_args(job["entrypoint"].split()[3:])
        cluster = job["rayClusterSpec"]
        pods = [cluster["headGroupSpec"]["template"], *(group["template"] for group in cluster["workerGroupSpecs"])]
        for pod in pods:
            [container] = pod["spec"]["containers"]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["spec"]["volumes"]}
            assert claims[mounts["/models"]] == "kcloud-models"  # ReadWriteMany (storage.yaml)
        assert args.storage_path is not None and args.storage_path.startswith("/models/")


@pytest.mark.parametrize("folder", OVERLAYS)
def test_each_training_worker_takes_a_trainer_pod_of_its_own(folder: str):
    """Regression: without --cpus-per-worker a worker reserved 1 CPU, both packed onto one pod (or the head) and
    trained on one thread while a 4-CPU trainer pod idled."""
    objects = _objects(folder)
    for job in (objects["RayJob"]["spec"], objects["RayCronJob"]["spec"]["jobTemplate"]):
        args = train_lstm.parse_args(job["entrypoint"].split()[3:])
        cluster = job["rayClusterSpec"]
        [trainers] = cluster["workerGroupSpecs"]
        cpus = {name: float(pod["spec"]["containers"][0]["resources"]["limits"]["cpu"])
                for name, pod in (("head", cluster["headGroupSpec"]["template"]), ("trainer", trainers["template"]))}
        assert trainers["replicas"] == args.num_workers and args.cpus_per_worker is not None
        assert cpus["head"] < args.cpus_per_worker <= cpus["trainer"] < 2 * args.cpus_per_worker


def test_one_scheduler_retrains_by_default_the_services_or_the_raycronjob():
    objects = _objects("overlays/cpu")
    service = yaml.safe_load(objects["RayService"]["spec"]["serveConfigV2"])
    args = ServeConfigArgs.model_validate(_apps(service)["kcloud"]["args"])
    assert args.with_absolute_paths().scheduler_settings() is not None
    assert objects["RayCronJob"]["spec"]["suspend"] is True
    head = objects["RayService"]["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "KCLOUD_STORAGE_PATH", "value": "/models/ray-checkpoints"} in head["env"]

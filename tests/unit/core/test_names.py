"""serve_config.yaml and the KubeRay RayService name the applications as core/names.py does."""

from __future__ import annotations

import yaml

from core.names import MAIN_APP, POWER_APP, POWER_ROUTE_PREFIX
from tests.paths import REPO_ROOT


def test_serve_configs_use_the_names_the_code_looks_up():
    local = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text())
    service = yaml.safe_load((REPO_ROOT / "deploy/base/rayservice.yaml").read_text())
    for config in (local, yaml.safe_load(service["spec"]["serveConfigV2"])):
        routes = {app["name"]: app["route_prefix"] for app in config["applications"]}
        assert routes == {MAIN_APP: "/", POWER_APP: POWER_ROUTE_PREFIX}
        main_args = next(app["args"] for app in config["applications"] if app["name"] == MAIN_APP)
        assert main_args.get("power_app_name", POWER_APP) == POWER_APP

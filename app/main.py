"""The app builders, named by `import_path` in serve_config.yaml.

Two Serve applications make up the service (names in core/names.py):
- `kcloud` (route "/"): `build_app` -> ApiIngress + CostPredictor, every endpoint but the power forecast;
  it also starts the actors the args enable (app/bootstrap.py);
- `kcloud-power` (route "/api/v1/predict/power"): `build_power_app` -> PowerPredictor with its HTTP route,
  so the proxy reaches the forecaster in one hop (see app/power_route.py); it serves `power_model_id` and
  every other model of the config's `predictor.resolutions`.
Both take the same `args`. Serve validates a config's `args` into `ServeConfigArgs` (the builders' parameter
type; hence no `from __future__ import annotations` here, which would hide it from Serve), and applies each
deployment's options from the config's `applications[].deployments[]` over the code-level ones passed here.
Python callers may pass a dict or `AppArgs` instead, code-level deployment options included.

    serve run serve_config.yaml
"""

from typing import Any

from ray import serve
from ray.serve import Application

from app.bootstrap import start_actors
from app.ingress import ApiIngress
from app.power_route import PowerRoute, power_api
from app.settings import AppArgs, ServeConfigArgs
from core.names import COST_DEPLOYMENT, INGRESS_DEPLOYMENT, POWER_DEPLOYMENT
from core.settings import refuse_template_ray_token
from deployments.cost import CostPredictor


def _validated(args: dict[str, Any] | AppArgs | None) -> AppArgs:
    refuse_template_ray_token()
    app_args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args or {})
    return app_args.with_absolute_paths()  # replicas may run in another working directory


def build_app(args: ServeConfigArgs) -> Application:
    """ApiIngress bound to CostPredictor; reaches PowerPredictor in the `power_app_name` application.
    Starts (or finds) the store actor, the collector supervisor and the scaling controller as `args` say.

    Args:
        args: the `args:` block of serve_config.yaml, validated by Serve (a wrong key or value stops `serve run`
            with its name), or from Python a dict or `AppArgs`.
    """
    app_args = _validated(args)
    start_actors(app_args)
    cost = serve.deployment(CostPredictor, name=COST_DEPLOYMENT).options(
        **app_args.cost_predictor.as_options()).bind(app_args.model_path, app_args.cost_model_id)
    return serve.deployment(ApiIngress, name=INGRESS_DEPLOYMENT).options(
        **app_args.ingress.as_options()).bind(cost, app_args)


def build_power_app(args: ServeConfigArgs) -> Application:
    """PowerPredictor with its own HTTP route (POST /api/v1/predict/power), serving every configured resolution."""
    app_args = _validated(args)
    config = app_args.service_config()
    workloads = {workload: list(nodes) for workload, nodes in config.workloads.items()}
    resolutions = [resolution.model_id for resolution in config.predictor.resolutions]
    return serve.deployment(serve.ingress(power_api)(PowerRoute), name=POWER_DEPLOYMENT).options(
        **app_args.power_predictor.as_options()).bind(app_args, config.telemetry.stale_after, workloads, resolutions)

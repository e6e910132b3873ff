"""The app builder: `import_path: app.main:build_app` in serve_config.yaml.

    serve run serve_config.yaml          # or: serve run app.main:build_app model_path=trained_models
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from app.config import AppArgs
from app.ingress import ApiIngress
from deployments.cost import CostPredictor
from deployments.power import PowerPredictor


def build_app(args: dict[str, Any] | AppArgs | None = None) -> Application:
    """Bind ApiIngress to the PowerPredictor and CostPredictor deployments.

    Args:
        args: the `args:` block of serve_config.yaml (see `AppArgs`); validated here, so a wrong key or
            value stops `serve run` with its name.
    """
    app_args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args or {})
    app_args = app_args.with_absolute_paths()  # replicas may run in another working directory
    model_path = app_args.model_path
    power = serve.deployment(PowerPredictor, name="PowerPredictor").options(
        **app_args.power_predictor.as_options()).bind(model_path, app_args.power_model_id)
    cost = serve.deployment(CostPredictor, name="CostPredictor").options(
        **app_args.cost_predictor.as_options()).bind(model_path, app_args.cost_model_id)
    return serve.deployment(ApiIngress, name="ApiIngress").options(
        **app_args.ingress.as_options()).bind(power, cost, app_args)

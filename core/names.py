"""Every name the running service is found by: Serve applications and deployments, named actors, namespace.

serve_config.yaml and the KubeRay RayService repeat the application names and route prefixes (a test keeps
them in step with these).
"""

from __future__ import annotations

NAMESPACE = "kcloud"  # Ray namespace of every named actor

MAIN_APP = "kcloud"  # Serve application: the REST API (ApiIngress + CostPredictor), route "/"
POWER_APP = "kcloud-power"  # Serve application: PowerPredictor with its own HTTP route
POWER_ROUTE_PREFIX = "/api/v1/predict/power"

INGRESS_DEPLOYMENT = "ApiIngress"
POWER_DEPLOYMENT = "PowerPredictor"
COST_DEPLOYMENT = "CostPredictor"

STORE_ACTOR = "telemetry_store"
SUPERVISOR_ACTOR = "collector_supervisor"
CONTROLLER_ACTOR = "scaling_controller"
SCHEDULER_ACTOR = "retrain_scheduler"  # scheduled retraining (training/power/scheduler_actor.py)


def collector_actor(key: str) -> str:
    """The collector actor's name for a supervisor key (`node-<ray node id>` or `replay`)."""
    return f"collector-{key}"

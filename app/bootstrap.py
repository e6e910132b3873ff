"""Start the cluster's long-lived actors the app's args ask for, from the app builder (not the HTTP ingress).

The store actor with the collector supervisor (`args.telemetry.enabled`), the scaling controller
(`args.autoscaler.enabled`) and the retrain scheduler (`args.retrain.schedule`, by default with the
telemetry). All are named, detached and created with get_if_exists, so a builder that runs again (a redeploy,
another `serve run`) finds them instead of starting twins, and they outlive the process that built the app
(the `serve run` driver or Serve's build task). Each is kept only when its settings are unchanged (else
replaced); the controller, the scheduler and the supervisor (with its collectors) are stopped when disabled, while
the store actor stays, with what it holds; those three also end themselves once the app is gone (`serve shutdown`,
the app deleted; core/app_watch.py).
"""

from __future__ import annotations

from app.settings import AppArgs
from autoscaler.actor import start_controller, stop_controller
from autoscaler.policy_config import policies_from_config
from collectors.supervisor import start_telemetry, stop_telemetry
from core.app_watch import APP_GRACE_S
from training.power.scheduler_actor import start_scheduler, stop_scheduler


def start_actors(args: AppArgs) -> None:
    """Start (or find) the actors `args` enable; a bad scaling section of the config file stops it first."""
    config = args.service_config()
    if args.autoscaler.enabled:
        policies_from_config(config, args.config_path or "config")  # refuse a bad file before starting anything
        start_controller(args.controller_settings())
    else:
        stop_controller()  # a redeploy with the autoscaler disabled leaves no controller enforcing old settings
    if args.telemetry.enabled:
        telemetry = args.telemetry
        start_telemetry(config, selected=telemetry.sources,
                        replay=telemetry.replay.model_dump() if telemetry.replay else None,
                        store_settings=telemetry.store_settings, config_path=args.config_path, app_grace_s=APP_GRACE_S)
    else:
        stop_telemetry()  # collection turned off: no collector keeps sampling (the store actor and its data stay)
    scheduler = args.scheduler_settings()
    if scheduler is not None:
        start_scheduler(scheduler, app_grace_s=APP_GRACE_S)
    else:
        stop_scheduler()  # scheduled retraining turned off: no scheduler keeps the old schedule

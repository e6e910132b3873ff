"""serve_config.yaml as the container runs it: `python deploy/image/container_serve_config.py SRC DEST`.

Inside a container Serve must listen on every interface (`docker run -p 8002:8002` reaches it through the
container's own address), and the model registry is wherever $MODEL_PATH points (a mounted volume). With
$POWER_REPLICA_GPUS (the GPU image sets "auto": 1 where the container sees a GPU, else 0) each PowerPredictor
replica reserves that many GPUs, the only way it runs on one (a whole GPU each at 1: on a one-GPU host one replica,
and a `--use-gpu` retraining waits while it runs; 0.5 lets two share it). Everything else is serve_config.yaml as it is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml


def container_config(config: dict[str, Any], host: str, model_path: str | None) -> dict[str, Any]:
    """`config` with Serve's HTTP host set to `host` and, when given, every application's `model_path`."""
    config = {**config, "http_options": {**(config.get("http_options") or {}), "host": host}}
    if model_path:
        config["applications"] = [{**app, "args": {**(app.get("args") or {}), "model_path": model_path}}
                                  for app in config["applications"]]
    return config


def with_power_gpus(config: dict[str, Any], gpus: float | None) -> dict[str, Any]:
    """`config` with every PowerPredictor replica reserving `gpus` GPUs (None: as it is)."""
    if gpus is None:
        return config
    apps = [{**app, "deployments": [
        {**each, "ray_actor_options": {**(each.get("ray_actor_options") or {}), "num_gpus": gpus}}
        if each.get("name") == "PowerPredictor" else each for each in app.get("deployments") or []]}
        for app in config["applications"]]
    return {**config, "applications": apps}


def power_gpus(setting: str | None) -> float | None:
    """$POWER_REPLICA_GPUS: a number, or "auto" (1 where torch sees a GPU, else 0); unset: None (the config's)."""
    if setting is None or not setting.strip():
        return None
    if setting.strip() == "auto":
        import torch

        return 1.0 if torch.cuda.device_count() > 0 else 0.0
    return float(setting)


def main(argv: list[str]) -> int:
    source, destination = (Path(arg) for arg in argv)
    config = container_config(yaml.safe_load(source.read_text()), os.environ.get("SERVE_HTTP_HOST", "0.0.0.0"),
                              os.environ.get("MODEL_PATH"))
    config = with_power_gpus(config, power_gpus(os.environ.get("POWER_REPLICA_GPUS")))
    destination.write_text(yaml.safe_dump(config, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

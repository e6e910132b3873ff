"""serve_config.yaml as the container runs it: `python deploy/image/container_serve_config.py SRC DEST`.

Inside a container Serve must listen on every interface (`docker run -p 8002:8002` reaches it through the
container's own address), and the model registry is wherever $MODEL_PATH points (a mounted volume). Only
those two values change; everything else is serve_config.yaml as it is.
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


def main(argv: list[str]) -> int:
    source, destination = (Path(arg) for arg in argv)
    config = container_config(yaml.safe_load(source.read_text()), os.environ.get("SERVE_HTTP_HOST", "0.0.0.0"),
                              os.environ.get("MODEL_PATH"))
    destination.write_text(yaml.safe_dump(config, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

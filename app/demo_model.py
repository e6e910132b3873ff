"""Make sure a fresh checkout has models to serve: `python -m app.demo_model --data tests/data/upm_sample.csv`.

When the registry (MODEL_PATH) has no active power model, trains a small one on the shipped real sample
(a few minutes on 2 cores) and says so; likewise a cost model from the documented price catalog. Models
that already exist are left alone.
"""

from __future__ import annotations

import argparse
import sys

from app.settings import ray_auth_disabled_by_default
from core.registry import ModelRegistry
from training import train_gbm, train_lstm
from training.settings import load_training_config

DEMO_POWER_ARGS = ["--step", "1min", "--horizon", "30min", "--sequence-length", "30", "--epochs", "25", "--quiet"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.demo_model", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="canonical telemetry CSV for the demo power model")
    parser.add_argument("--model-path", default=None, help="registry root (default: config / $MODEL_PATH)")
    args = parser.parse_args(argv)
    ray_auth_disabled_by_default()
    model_path = args.model_path or load_training_config().model_path
    registry = ModelRegistry(model_path)
    if registry.active_version("power_lstm") is None:
        sys.stderr.write(f"demo: no power model in {model_path}: training a small one on {args.data} "
                         "(step 1 min, horizon 30 min; a few minutes on 2 cores)\n")
        code = train_lstm.main(["--data", args.data, "--model-path", model_path, *DEMO_POWER_ARGS])
        if code != 0:
            return code
    if registry.active_version("cost_gbm") is None:
        sys.stderr.write(f"demo: no cost model in {model_path}: training one from the price catalog\n")
        code = train_gbm.main(["--model-path", model_path, "--records", "8000"])
        if code != 0:
            return code
    sys.stderr.write(f"demo: models ready in {model_path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

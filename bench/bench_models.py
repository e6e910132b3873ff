"""The model registry a serving benchmark answers from: by default its own folder under the checkout, with the demo
models trained there on first use (`app.demo_model`), so the figures never depend on the models in MODEL_PATH and a
benchmark never writes there; `--model-path` points it at a registry of your own instead."""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_MODELS = REPO / ".bench" / "models"
DEMO_DATA = REPO / "tests" / "data" / "upm_sample.csv"


def add_model_path_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-path", default=str(BENCH_MODELS),
                        help="registry to serve from; demo models are trained there when it has none "
                             "(default: the benchmarks' own, .bench/models)")


def prepare_demo_models(model_path: str) -> None:
    """Train the demo models into `model_path` where it has none (call after `ray.init`)."""
    from app import demo_model

    if demo_model.main(["--data", str(DEMO_DATA), "--model-path", model_path]) != 0:
        raise SystemExit("could not prepare the demo models")

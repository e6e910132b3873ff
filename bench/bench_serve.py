"""Serve latency and throughput over real HTTP, side by side with /healthz and the in-process floor.

    python bench/bench_serve.py [--model-path DIR] [--seconds 15]

Starts a local Ray (2 CPUs) and the app on 127.0.0.1, with the registry at --model-path (default: the
benchmarks' own, .bench/models; demo models are trained there first when it has none). Measures, in one run:
/healthz, POST /api/v1/predict/power with batching on and off, POST /api/v1/predict/cost, each with 1 client and
with 16 concurrent clients, and the in-process latency of the same forecast. Targets (2 cores): power and cost p50
(1 client) within 3x the healthz p50; at least 150 power and 150 cost predictions/s at 16 clients; batching never
lowers throughput or raises p99. The cost model runs inside the ingress (one hop, like the power route's own
application).
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_models import add_model_path_argument, prepare_demo_models  # noqa: E402
from bench.http_load import encode_request, run_load  # noqa: E402
from bench.private_ray import private_ray_environment  # noqa: E402
from core.serve_tuning import SERVE_TUNING, apply_serve_tuning  # noqa: E402

HOST = "127.0.0.1"
POWER = {"workload_id": "bench", "prediction_horizon": "30m",
         "features": {"power_watts": [250.0 + 10 * math.sin(i / 5) for i in range(30)],
                      "cpu_utilization": [55.0] * 30, "workload_type": "hybrid"}}
COST = {"resources": {"cpu_cores": 16, "memory_gb": 128, "gpu_count": 2, "gpu_type": "A100-80GB"},
        "duration_hours": 6, "workload_type": "training"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _in_process_floor(model_path: str, runs: int = 300) -> float:
    """p50 ms of the same forecast without Serve (PowerPredictor's own code path, 1 thread)."""
    import torch

    from app.power_api import to_history
    from app.schemas import PowerPredictionRequest
    from core.registry import ModelRegistry
    from training.power.forecaster import PowerForecaster
    from training.power.inference import forecast_histories

    torch.set_num_threads(1)
    folder, metadata = ModelRegistry(model_path).get("power_lstm")
    forecaster = PowerForecaster.load(folder)
    history = to_history(PowerPredictionRequest.model_validate(POWER))
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        forecast_histories(forecaster, [history], f"power_lstm/{metadata.version}")
        timings.append((time.perf_counter() - started) * 1000.0)
    return float(np.percentile(timings[20:], 50))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_path_argument(parser)
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each concurrent run")
    parser.add_argument("--serve-defaults", action="store_true",
                        help="keep Serve's default event-loop/logging settings (for comparison)")
    args = parser.parse_args()
    bench_folder = private_ray_environment()
    if not args.serve_defaults:
        apply_serve_tuning()  # as `make run`
    import ray
    from ray import serve

    from app.main import build_app, build_power_app
    from core.names import MAIN_APP, POWER_APP, POWER_ROUTE_PREFIX
    from training.power.local_ray import own_local_ray, stop_local_ray

    own_local_ray(ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False))
    prepare_demo_models(args.model_path)
    port = _free_port()
    serve.start(http_options={"host": HOST, "port": port})
    requests = {
        "healthz": encode_request(HOST, port, "GET", "/healthz"),
        "power": encode_request(HOST, port, "POST", "/api/v1/predict/power", POWER),
        "cost": encode_request(HOST, port, "POST", "/api/v1/predict/cost", COST),
    }
    results = {}
    try:
        for batching in (True, False):
            user_config = {"batching": batching, "max_batch_size": 16, "batch_wait_timeout_s": 0.0}
            app_args = {"model_path": args.model_path, "state_path": str(bench_folder / "state"),
                        "power_predictor": {"user_config": user_config}}
            serve.run(build_power_app(app_args), name=POWER_APP, route_prefix=POWER_ROUTE_PREFIX)
            serve.run(build_app(app_args), name=MAIN_APP, route_prefix="/")
            run_load(HOST, port, requests["power"], clients=4, seconds=3)  # warm up
            label = "batching on" if batching else "batching off"
            for name in ("healthz", "power", "cost") if batching else ("power",):
                tag = f"{name} ({label})" if name == "power" else name
                results[f"{tag}, 1 client"] = run_load(HOST, port, requests[name], clients=1, seconds=args.seconds / 2)
                results[f"{tag}, 16 clients"] = run_load(HOST, port, requests[name], clients=16,
                                                         seconds=args.seconds)
    finally:
        serve.shutdown()
        stop_local_ray()  # and the workers whose exit hangs
    floor = _in_process_floor(args.model_path)
    out = sys.stdout
    settings = ("Serve defaults" if args.serve_defaults
                else ", ".join(f"{k}={os.environ[k]}" for k in SERVE_TUNING))
    out.write(f"Serve over HTTP on {os.cpu_count()} cores (1 ingress with the cost model, 1 PowerPredictor replica); "
              f"{settings}\n")
    for name, result in results.items():
        out.write(result.line(name) + "\n")
    failed = {name: result.errors for name, result in results.items() if result.errors}
    if failed:  # the figures count 200 answers only: a run with errors measured something else, and stops here
        out.write(f"ERRORS in {failed}: targets NOT met\n")
        sys.exit(1)
    healthz = results["healthz, 1 client"].percentile(50)
    single = results["power (batching on), 1 client"].percentile(50)
    on, off = results["power (batching on), 16 clients"], results["power (batching off), 16 clients"]
    out.write(f"in-process forecast (floor), 1 thread: p50 {floor:.2f} ms; Serve power p50 / floor = "
              f"{single / floor:.1f}x\n")
    out.write(f"target: power p50 / healthz p50 = {single / healthz:.2f}x (<= 3x: "
              f"{'met' if single <= 3 * healthz else 'NOT met'})\n")
    out.write(f"target: 16-client power throughput {on.throughput:.0f}/s with batching (as configured), "
              f"{off.throughput:.0f}/s without (>= 150/s with batching: "
              f"{'met' if on.throughput >= 150 else 'NOT met'})\n")
    out.write(f"target: batching vs none: throughput {on.throughput / off.throughput:.2f}x, p99 "
              f"{on.percentile(99):.1f} vs {off.percentile(99):.1f} ms\n")
    cost, cost_load = results["cost, 1 client"].percentile(50), results["cost, 16 clients"]
    out.write(f"target: cost p50 / healthz p50 = {cost / healthz:.2f}x (<= 3x: "
              f"{'met' if cost <= 3 * healthz else 'NOT met'})\n")
    out.write(f"target: 16-client cost throughput {cost_load.throughput:.0f}/s (>= 150/s: "
              f"{'met' if cost_load.throughput >= 150 else 'NOT met'})\n")
    ceiling = results["healthz, 16 clients"].throughput  # the proxy's own ceiling on this machine now
    out.write(f"16-client throughput over /healthz's ({ceiling:.0f}/s, the HTTP path's ceiling): power "
              f"{on.throughput / ceiling:.2f}x, cost {cost_load.throughput / ceiling:.2f}x\n")


if __name__ == "__main__":
    main()

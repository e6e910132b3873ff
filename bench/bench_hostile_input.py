"""How long hostile requests take to be refused, over real HTTP through Serve, beside /healthz.

    python bench/bench_hostile_input.py [--model-path DIR] [--runs 50]

Starts a local Ray (2 CPUs) and the app on 127.0.0.1 with an API token, with the registry at --model-path
(default: the benchmarks' own, .bench/models; demo models are trained there first when it has none). Times, one
client, keep-alive: a 200 kB `prediction_horizon` (power route; retrain route without and with the token), a
"9"*400 horizon, a 6 MiB chunked body, and /healthz as the floor. Target: a 200 kB hostile horizon refused in
< 50 ms (p50).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_models import add_model_path_argument, prepare_demo_models  # noqa: E402
from bench.private_ray import private_ray_environment  # noqa: E402
from core.serve_tuning import apply_serve_tuning  # noqa: E402

HOST = "127.0.0.1"
TOKEN = "bench-token-of-hostile-input"
POWER = {"workload_id": "bench", "features": {"power_watts": [250.0] * 30}, "prediction_horizon": "30m"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _chunked_6_mib():
    yield b'{"workload_id": "bench",'
    for _ in range(96):
        yield b" " * (64 * 1024)
    yield b'"prediction_horizon": "30m"}'


def _time(client: httpx.Client, runs: int, expected: int, method: str, path: str, **kwargs) -> np.ndarray:
    timings = []
    for _ in range(runs):
        content = kwargs.get("content")
        call = {**kwargs, "content": content()} if callable(content) else kwargs
        started = time.perf_counter()
        response = client.request(method, path, **call)
        timings.append((time.perf_counter() - started) * 1000.0)
        if response.status_code != expected:
            raise SystemExit(f"{method} {path}: expected {expected}, got {response.status_code}: {response.text[:300]}")
    return np.asarray(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_path_argument(parser)
    parser.add_argument("--runs", type=int, default=50, help="requests per case")
    args = parser.parse_args()
    state = private_ray_environment()  # the app's state and API token too, removed at the end
    apply_serve_tuning()  # as `make run`
    import ray
    from ray import serve

    from app.main import build_app, build_power_app
    from core.names import MAIN_APP, POWER_APP, POWER_ROUTE_PREFIX
    from training.power.local_ray import own_local_ray, stop_local_ray

    (state / "token").write_text(TOKEN + "\n")
    own_local_ray(ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False))
    prepare_demo_models(args.model_path)
    port = _free_port()
    serve.start(http_options={"host": HOST, "port": port})
    app_args = {"model_path": args.model_path, "state_path": str(state), "api_token_file": str(state / "token")}
    hostile = json.dumps({**POWER, "prediction_horizon": "1" * 200_000})
    json_headers = {"content-type": "application/json"}
    auth = {**json_headers, "Authorization": f"Bearer {TOKEN}"}
    cases = {
        "/healthz (floor)": (200, "GET", "/healthz", {}),
        "power, 200 kB horizon -> 422": (422, "POST", "/api/v1/predict/power",
                                         {"content": hostile, "headers": json_headers}),
        "retrain, 200 kB horizon, no token -> 401": (401, "POST", "/api/v1/models/retrain",
                                                     {"content": hostile, "headers": json_headers}),
        "retrain, 200 kB horizon, token -> 422": (422, "POST", "/api/v1/models/retrain",
                                                  {"content": hostile, "headers": auth}),
        'power, "9"*400 horizon -> 422': (422, "POST", "/api/v1/predict/power",
                                          {"json": {**POWER, "prediction_horizon": "9" * 400}}),
        "power, 6 MiB chunked body -> 413": (413, "POST", "/api/v1/predict/power",
                                             {"content": _chunked_6_mib, "headers": json_headers}),
    }
    results = {}
    try:
        serve.run(build_power_app(app_args), name=POWER_APP, route_prefix=POWER_ROUTE_PREFIX)
        serve.run(build_app(app_args), name=MAIN_APP, route_prefix="/")
        with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=60) as client:
            for name, (expected, method, path, kwargs) in cases.items():
                _time(client, 5, expected, method, path, **kwargs)  # warm up
                results[name] = _time(client, args.runs, expected, method, path, **kwargs)
    finally:
        serve.shutdown()
        stop_local_ray()  # and the workers whose exit hangs
    out = sys.stdout
    out.write(f"hostile input over HTTP through Serve on {os.cpu_count()} cores, 1 client, {args.runs} requests each\n")
    for name, timings in results.items():
        out.write(f"{name:<44} p50 {np.percentile(timings, 50):7.2f} ms  p99 {np.percentile(timings, 99):7.2f} ms  "
                  f"max {timings.max():7.2f} ms\n")
    refused = np.percentile(results["power, 200 kB horizon -> 422"], 50)
    out.write(f"target: a 200 kB hostile horizon refused in < 50 ms: p50 {refused:.1f} ms "
              f"({'met' if refused < 50 else 'NOT met'})\n")


if __name__ == "__main__":
    main()

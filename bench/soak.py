"""Soak test (issue 10): clients for a few minutes while the store actor, a PowerPredictor replica and the
scaling controller are killed in turn (bench/soak_harness.py says what is sent, killed and checked).

    python bench/soak.py [--duration 3m] [--clients 16] [--model-path DIR] [--json FILE]

Starts its own local Ray (2 CPUs; dashboard on 127.0.0.1, for Serve's scaling API), the telemetry store actor
and the app through app/main.py's builders on 127.0.0.1 with an API token and a controller ticking every
--interval seconds; demo models are trained into --model-path (default: the benchmarks' own, .bench/models) first
when it has none. Prints the table and the
report as JSON, exits 1 when a criterion fails, and stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_models import add_model_path_argument, prepare_demo_models  # noqa: E402
from bench.private_ray import private_ray_environment  # noqa: E402
from core.serve_tuning import apply_serve_tuning  # noqa: E402

HOST = "127.0.0.1"
TOKEN = "soak-token-of-the-run"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _app_args(state: Path, model_path: str, dashboard_url: str, interval_s: float) -> dict:
    (state / "token").write_text(TOKEN + "\n")
    (state / "config.yaml").write_text("workloads: {}\n")  # no policies or workloads of the checkout's config
    return {"config_path": str(state / "config.yaml"), "model_path": model_path, "state_path": str(state),
            "api_token_file": str(state / "token"),
            "autoscaler": {"enabled": True, "ray_dashboard_url": dashboard_url, "interval_s": interval_s}}


def main(argv: list[str] | None = None) -> int:
    from core.durations import parse_duration

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", default="3m", help="how long the clients send (default 3m)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--interval", type=float, default=2.0, help="the controller's tick interval, s")
    add_model_path_argument(parser)
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    private_ray_environment()
    apply_serve_tuning()  # as `make run`
    import ray
    from ray import serve

    from app.main import build_app, build_power_app
    from bench.soak_harness import SoakPlan, SoakRun
    from bench.soak_report import render
    from collectors.store_actor import start_store_actor
    from core.names import MAIN_APP, POWER_APP, POWER_ROUTE_PREFIX
    from training.power.local_ray import own_local_ray, stop_local_ray

    plan = SoakPlan(duration_s=parse_duration(args.duration), clients=args.clients)
    state = Path(tempfile.mkdtemp(prefix="kcloud-soak-"))
    context = ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host=HOST,
                       dashboard_port=_free_port(), log_to_driver=False)
    own_local_ray(context)
    try:
        prepare_demo_models(args.model_path)
        port = _free_port()
        serve.start(http_options={"host": HOST, "port": port})
        start_store_actor({"TELEMETRY_DATA_DIR": str(state / "telemetry")})
        app_args = _app_args(state, args.model_path, f"http://{context.dashboard_url}", args.interval)
        serve.run(build_power_app(app_args), name=POWER_APP, route_prefix=POWER_ROUTE_PREFIX)
        serve.run(build_app(app_args), name=MAIN_APP, route_prefix="/")
        load = os.getloadavg()[0]
        started = time.monotonic()
        report = SoakRun(f"http://{HOST}:{port}", TOKEN, plan).run()
        took = time.monotonic() - started
    except BaseException:
        traceback.print_exc()  # before Ray goes: a failure is reported even if shutting down ends the process
        raise
    finally:
        serve.shutdown()
        stop_local_ray()  # and the workers whose exit hangs
        shutil.rmtree(state, ignore_errors=True)
    sys.stdout.write(f"python bench/soak.py --duration {args.duration} --clients {args.clients}: "
                     f"{os.cpu_count()} cores, load {load:.1f} at the start, {took:.0f} s in all\n")
    sys.stdout.write(render(report) + "\n")
    sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    if args.json:
        Path(args.json).write_text(report.model_dump_json(indent=2) + "\n")
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Wall time of the full backtest (Ray Train LSTM + all baselines) on a 20,160-row trace, 2 cores.

    python bench/bench_backtest.py [--data FILE.csv] [--step 1min] [--horizon 1h]

Without --data it generates a SYNTHETIC 20,160-row trace (4 nodes x 3.5 days at 1 min) so the figure
is reproducible anywhere; pass a real trace to time that instead. Target: under 10 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.private_ray import private_ray_environment  # noqa: E402

private_ray_environment()  # before anything imports Ray, which reads its auth mode once

from training import evaluate  # noqa: E402
from training.synthetic import generate_trace, write_csv  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="canonical telemetry CSV (default: generated synthetic trace)")
    parser.add_argument("--step", default="1min")
    parser.add_argument("--horizon", default="1h")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data
        if data is None:
            data = str(Path(scratch) / "synthetic.csv")
            write_csv(generate_trace(nodes=4, duration_s=int(3.5 * 86400), step_s=60, seed=7), Path(data))
        rows = sum(1 for _ in open(data)) - 1
        report_path = Path(scratch) / "report.json"
        started = time.monotonic()
        code = evaluate.main(["--data", data, "--step", args.step, "--horizon", args.horizon, "--quiet",
                              "--output", str(report_path)])
        elapsed = time.monotonic() - started
        if code != 0:
            raise SystemExit(code)
        report = json.loads(report_path.read_text())
    maes = ", ".join(f"{k} {v['mae']:.1f} W" for k, v in report["metrics"].items())
    model = report["model"]
    sys.stdout.write(
        f"backtest of {rows:,} rows ({'synthetic' if args.data is None else data}), step {args.step}, horizon "
        f"{args.horizon}: {elapsed:.0f} s wall on {os.cpu_count()} cores (target < 600 s: "
        f"{'met' if elapsed < 600 else 'NOT met'}); LSTM training {model['train_seconds']:.0f} s: "
        f"{model['epochs_run']} epochs (best {model['best_epoch']}) + {model['refit_epochs']} refit; MAE {maes}\n")


if __name__ == "__main__":
    main()

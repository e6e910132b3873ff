"""Check and resample a telemetry CSV exactly as training will see it.

    python -m training.preprocess --data FILE.csv [--step 1min] [--max-gap 5min] [--output resampled.csv]

Prints, per series, the rows read, the regular steps made from them, how many were filled forward and into
how many gap-free segments long gaps split it. With --output, writes the resampled series in the
canonical schema (plus `segment` and `imputed` columns) for inspection or reuse.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from core.atomic_files import atomic_write_with
from core.settings import CONFIG_FLAG_HELP
from core.telemetry_csv import CANONICAL_COLUMNS, NUMERIC_FEATURES, TARGET, load_telemetry_csv
from training.cli import duration_arg, output_path, refuse_overwriting_inputs, run_cli
from training.power.features import Segment, resample
from training.settings import load_training_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.preprocess", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="canonical telemetry CSV")
    parser.add_argument("--config", help=CONFIG_FLAG_HELP)
    parser.add_argument("--step", type=duration_arg, help="resampling step (default: config predictor.step)")
    parser.add_argument("--max-gap", type=duration_arg, help="longest gap filled forward (default: config)")
    parser.add_argument("--output", type=output_path, help="write the resampled series here (CSV)")
    args = parser.parse_args(argv)
    refuse_overwriting_inputs(parser, args)
    return args


def segments_frame(segments: list[Segment]) -> pd.DataFrame:
    """Resampled segments back in the canonical schema, with segment number and imputed flag."""
    parts = []
    for number, segment in enumerate(segments):
        part = pd.DataFrame({"timestamp": segment.times, "node_id": segment.node_id, TARGET: segment.power})
        for name in NUMERIC_FEATURES:
            part[name] = segment.numeric[name]
        part["workload_type"] = segment.workload
        part["segment"] = number
        part["imputed"] = segment.imputed
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    return frame[[*CANONICAL_COLUMNS, "segment", "imputed"]]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        predictor = load_training_config(args.config).predictor
        step = args.step or predictor.step
        max_gap = max(args.max_gap, step) if args.max_gap else predictor.max_gap_at(step)
        frame = load_telemetry_csv(args.data)
        segments = resample(frame, step, max_gap)
        out = sys.stdout
        out.write(f"{'series':<24}{'rows':>9}{'steps':>9}{'imputed':>9}{'segments':>10}\n")
        for node, rows in frame.groupby("node_id", sort=True):
            mine = [s for s in segments if s.node_id == node]
            steps = sum(len(s) for s in mine)
            imputed = sum(int(s.imputed.sum()) for s in mine)
            out.write(f"{str(node):<24}{len(rows):>9,}{steps:>9,}{imputed:>9,}{len(mine):>10}\n")
        if args.output:
            resampled = segments_frame(segments)
            atomic_write_with(Path(args.output), lambda tmp: resampled.to_csv(tmp, index=False,
                                                                               date_format="%Y-%m-%dT%H:%M:%SZ"))
            sys.stderr.write(f"preprocess: wrote {len(resampled):,} rows at a {step}s step to {args.output}\n")
        return 0

    return run_cli("preprocess", body)


if __name__ == "__main__":
    raise SystemExit(main())

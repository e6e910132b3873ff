"""Peak memory of a retraining's data side on a cluster-sized SYNTHETIC trace, without Ray.

    python bench/bench_train_memory.py [--nodes 20] [--days 7] [--step 1min] [--horizon 1h] [--sequence-length 60]
                                       [--no-gbm]

What an in-service retraining of the 1-minute model holds before and around the LSTM's Ray Train run, stage by
stage, in this one process: the telemetry frame, the prepared series, the FIT and CALIB windows, the arrays a Ray
Train worker trains from (and its torch dataset), and the LightGBM partner's fits (the recency half-lives tried,
then the refit). Each line prints the process's peak resident memory (ru_maxrss) after the stage, so the growth
from one line to the next is what that stage added at its peak. The LSTM's epochs are not run (they add the model
and one batch, not the data).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.durations import parse_duration  # noqa: E402
from training.power.dataset import prepare  # noqa: E402
from training.power.fit import SupervisedArrays  # noqa: E402
from training.power.served import fit_gbm  # noqa: E402
from training.power.windows import Role  # noqa: E402
from training.settings import ALL_FEATURES, default_max_gap  # noqa: E402
from training.synthetic import generate_trace  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--step", default="1min")
    parser.add_argument("--horizon", default="1h")
    parser.add_argument("--sequence-length", type=int, default=60)
    parser.add_argument("--no-gbm", action="store_true", help="stop before the LightGBM fits (they take minutes)")
    args = parser.parse_args()
    step_s, horizon_s = parse_duration(args.step), parse_duration(args.horizon)
    started = time.monotonic()

    def report(stage: str, detail: str = "") -> None:
        sys.stdout.write(f"{stage:<34} peak {peak_mib():8,.0f} MiB  {time.monotonic() - started:6.1f} s  {detail}\n")
        sys.stdout.flush()

    report("start")
    frame = generate_trace(nodes=args.nodes, duration_s=int(args.days * 86400), step_s=step_s, seed=7)
    report("telemetry frame", f"{len(frame):,} rows, {args.nodes} nodes x {args.days:g} days at {args.step}")
    prepared = prepare(frame, step_s=step_s, max_gap_s=default_max_gap(step_s), features=ALL_FEATURES,
                       sequence_length=args.sequence_length, horizon=horizon_s // step_s, train_fraction=1.0)
    del frame
    report("prepared series")
    fit, calib = prepared.windows(Role.FIT), prepared.windows(Role.CALIB)
    width = len(prepared.pipeline.feature_names)
    stacked_mib = (len(fit) + len(calib)) * args.sequence_length * width * 4 / 2**20
    report("FIT and CALIB windows", f"{len(fit):,} + {len(calib):,} windows of {args.sequence_length} x {width} "
                                    f"({stacked_mib:,.0f} MiB as stacked float32 arrays)")
    power_std = prepared.pipeline.power_std
    train, val = SupervisedArrays.from_windows(fit, power_std), SupervisedArrays.from_windows(calib, power_std)
    dataset = train.tensors()
    report("Ray Train arrays + torch dataset", f"{len(dataset):,} training windows")
    del train, val, dataset
    if args.no_gbm:
        return
    fit_gbm(prepared, seed=0)
    report("LightGBM fits and refit", f"{len(fit) * (horizon_s // step_s):,} (window, lead) rows in the fit")


if __name__ == "__main__":
    main()

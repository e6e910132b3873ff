"""Where the LSTM's training time goes: the same epochs in a plain process and in a Ray Train run, and the run's fixed
start and stop cost.

    python bench/bench_train_overhead.py [--data FILE.csv] [--step 1min] [--horizon 30min] [--epochs 16] [--challenger]

Without --data it generates a SYNTHETIC trace (4 nodes x 2 days at 1 min). Every epoch trains on the same windows
with validation; early stopping is off so both sides run exactly --epochs. The Ray run's worker reserves every CPU
of the machine and computes with that many torch threads, as a training command on its own Ray does. With
--challenger a second Ray Train run also trains a recency-weighted challenger (half-life 1/8 of the FIT windows), as
`served.train_served` does where the LightGBM chose a half-life: the figure to set against two runs' time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.private_ray import private_ray_environment  # noqa: E402

private_ray_environment()  # before anything imports Ray, which reads its auth mode once

import ray  # noqa: E402
import torch  # noqa: E402

from core.durations import format_duration  # noqa: E402
from core.telemetry_csv import load_telemetry_csv  # noqa: E402
from training.cli import duration_arg, positive_int  # noqa: E402
from training.power.dataset import prepare  # noqa: E402
from training.power.epoch_sample import make_loader  # noqa: E402
from training.power.fit import (  # noqa: E402
    SupervisedArrays,
    build_model,
    fit_epochs,
    flush_denormals,
    interval_levels,
    seed_everything,
)
from training.power.local_ray import own_local_ray, stop_local_ray  # noqa: E402
from training.power.ray_trainer import train_power_lstm  # noqa: E402
from training.power.recency import recency_weights, window_ages  # noqa: E402
from training.power.scaling import TrainScaling  # noqa: E402
from training.power.train_loop import WeightedChallenger  # noqa: E402
from training.power.windows import Role  # noqa: E402
from training.settings import PowerPredictorConfig, TrainingConfig, default_max_gap  # noqa: E402
from training.synthetic import generate_trace, write_csv  # noqa: E402


def plain_seconds(fit: SupervisedArrays, val: SupervisedArrays, model_config: PowerPredictorConfig,
                  power_std: float) -> float:
    """The epochs in this process's main thread, as `fit_epochs` runs them in the Ray Train worker."""
    seed_everything(model_config.seed)
    flush_denormals()
    model = build_model(fit.inputs.shape[2], fit.targets.shape[1], model_config.hidden_size, model_config.num_layers,
                        model_config.dropout)
    loader = make_loader(fit, model_config.batch_size, seed=model_config.seed, per_epoch=model_config.windows_per_epoch)
    levels = interval_levels(model_config.interval_coverage)
    history = fit_epochs(model, loader, val, epochs=model_config.epochs, patience=model_config.epochs,
                         learning_rate=model_config.learning_rate, levels=levels, power_std=power_std,
                         device=torch.device("cpu"))
    return history.epoch_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="canonical telemetry CSV (default: generated synthetic trace)")
    parser.add_argument("--step", type=duration_arg, default="1min")
    parser.add_argument("--horizon", type=duration_arg, default="30min")
    parser.add_argument("--sequence-length", type=positive_int, default=60)
    parser.add_argument("--epochs", type=positive_int, default=16)
    parser.add_argument("--challenger", action="store_true", help="also time a run with a recency-weighted challenger")
    args = parser.parse_args()
    config = TrainingConfig()
    model_config = config.models.power_predictor.model_copy(update={"epochs": args.epochs, "patience": args.epochs,
                                                                    "sequence_length": args.sequence_length})
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data
        if data is None:
            data = str(Path(scratch) / "synthetic.csv")
            write_csv(generate_trace(nodes=4, duration_s=2 * 86400, step_s=60, seed=7), Path(data))
        try:
            prepared = prepare(load_telemetry_csv(data), step_s=args.step, max_gap_s=default_max_gap(args.step),
                               features=config.features, sequence_length=args.sequence_length,
                               horizon=max(args.horizon // args.step, 1), train_fraction=0.8)
        except (OSError, ValueError) as exc:
            parser.error(f"--data: {exc}")
    power_std = prepared.pipeline.power_std
    fit = SupervisedArrays.from_windows(prepared.windows(Role.FIT), power_std)
    val = SupervisedArrays.from_windows(prepared.windows(Role.CALIB), power_std)
    plain = plain_seconds(fit, val, model_config, power_std)
    cpus = os.cpu_count() or 1
    own_local_ray(ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False))
    all_cpus = TrainScaling(cpus_per_worker=float(cpus))
    try:
        started = time.monotonic()
        weights = train_power_lstm(fit, val, model_config, power_std, scaling=all_cpus, verbose=False)
        whole = time.monotonic() - started
        with_challenger = None
        if args.challenger:
            half_life = len(fit.inputs) / 8
            challenger = WeightedChallenger(half_life, *(
                recency_weights(window_ages(prepared, prepared.windows(role)), half_life)
                for role in (Role.FIT, Role.CALIB)))
            started = time.monotonic()
            train_power_lstm(fit, val, model_config, power_std, scaling=all_cpus, verbose=False, challenger=challenger)
            with_challenger = time.monotonic() - started
    finally:
        stop_local_ray()  # and the workers whose exit hangs
    worker = weights.history.epoch_seconds if weights.history else float("nan")
    sys.stdout.write(
        f"{args.epochs} epochs of {len(fit.inputs):,} FIT windows ({'synthetic' if args.data is None else data}, "
        f"step {format_duration(args.step)}, sequence {args.sequence_length}) on {cpus} cores: "
        f"plain process {plain:.1f} s "
        f"({plain / args.epochs:.2f} s/epoch, {torch.get_num_threads()} threads); Ray Train worker {worker:.1f} s "
        f"({worker / args.epochs:.2f} s/epoch); the whole Ray Train run {whole:.1f} s, of which "
        f"{whole - worker:.1f} s start and stop\n")
    if with_challenger is not None:
        sys.stdout.write(f"with a recency-weighted challenger in the same run: {with_challenger:.1f} s, against "
                         f"{2 * whole:.1f} s for two runs of the first's length\n")


if __name__ == "__main__":
    main()

"""Train the power forecaster with Ray Train and register it.

    python -m training.train_lstm --data FILE.csv [--horizon 1h] [--step 1min] [--epochs N]
        [--holdout-fraction 0.1] [--model-id power_lstm] [--num-workers N] [--use-gpu]

The last `--holdout-fraction` of every series is never trained on: the registered model's metrics
(MAE/RMSE/MAPE, interval coverage, confidence vs hit rate) are measured there. When a model is already
active, the new one is activated only if it has a lower MAE on that same holdout (`--force-activate`
skips the comparison). Works locally and unchanged under `ray job submit`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from core.registry import ModelMetadata, ModelRegistry
from core.telemetry_csv import load_telemetry_csv
from training.cli import add_model_flags, duration_arg, load_with_overrides, run_cli
from training.metrics import interval_metrics, point_metrics
from training.power.dataset import PreparedData, prepare, train_forecaster
from training.power.forecaster import ArtifactError, PowerForecaster
from training.power.windows import Role

SYNTHETIC_PREFIX = "syn-"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.train_lstm", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="canonical telemetry CSV")
    source.add_argument("--from-store", action="store_true",
                        help="train on the telemetry store (the cluster's store actor, else INFLUX_HOST / embedded)")
    parser.add_argument("--since", type=duration_arg, default=14 * 86400,
                        help="with --from-store: how much history to read (default 14d)")
    parser.add_argument("--horizon", type=duration_arg, help="forecast horizon, e.g. 1h (default: config)")
    parser.add_argument("--holdout-fraction", type=float, default=0.1,
                        help="last share of every series kept for the model's metrics (default 0.1)")
    parser.add_argument("--model-id", default="power_lstm", help="registry id (default power_lstm)")
    parser.add_argument("--model-path", help="registry root (default: config model_path / $MODEL_PATH)")
    parser.add_argument("--force-activate", action="store_true",
                        help="activate even if it does not beat the active one")
    parser.add_argument("--no-activate", action="store_true", help="register without activating")
    add_model_flags(parser)
    args = parser.parse_args(argv)
    if not 0.0 < args.holdout_fraction < 0.5:
        parser.error(f"--holdout-fraction: {args.holdout_fraction} must lie between 0 and 0.5")
    return args


def holdout_metrics(forecaster: PowerForecaster, prepared: PreparedData, coverage: float,
                    tolerance: float) -> dict[str, Any]:
    """The forecaster's scores on the holdout (TEST role) windows of `prepared`."""
    test = prepared.windows(Role.TEST, pipeline=forecaster.pipeline, sequence_length=forecaster.sequence_length)
    if len(test) == 0:
        raise ValueError("holdout too short for one forecast; raise --holdout-fraction")
    forecast = forecaster.forecast(test.inputs, test.last_power)
    metrics: dict[str, Any] = point_metrics(forecast.point, test.targets, test.mask)
    metrics.update(interval_metrics(forecast.lower, forecast.upper, forecast.point, forecast.confidence,
                                    test.targets, test.mask, nominal=coverage, tolerance=tolerance))
    metrics["last_value_mae"] = point_metrics(
        test.last_power[:, None].repeat(test.targets.shape[1], axis=1), test.targets, test.mask)["mae"]
    metrics["holdout_points"] = int(test.mask.sum())
    return metrics


def _active_holdout_mae(registry: ModelRegistry, model_id: str, prepared: PreparedData,
                        coverage: float, tolerance: float) -> tuple[int, float] | None:
    """MAE of the active model on the new model's holdout, or None when there is none comparable."""
    if registry.active_version(model_id) is None:
        return None
    folder, metadata = registry.get(model_id)
    try:
        current = PowerForecaster.load(folder)
    except ArtifactError:
        return None
    if current.pipeline.step_s != prepared.pipeline.step_s or current.horizon != prepared.horizon:
        return None
    return metadata.version, holdout_metrics(current, prepared, coverage, tolerance)["mae"]


def _stored_frame(args: argparse.Namespace, step_s: int):
    # Imported here: collectors builds on training, so training reaches it only from this command's branch.
    from core.stores.frame import open_store, stored_frame

    store = open_store()
    try:
        return stored_frame(store, args.since, step_s)
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        config = load_with_overrides(args, horizon_s=args.horizon)
        model_config = config.models.power_predictor
        frame = _stored_frame(args, config.predictor.step) if args.from_store else load_telemetry_csv(args.data)
        synthetic = bool(frame["node_id"].astype(str).str.startswith(SYNTHETIC_PREFIX).all())
        prepared = prepare(frame, step_s=config.predictor.step, max_gap_s=config.predictor.max_gap,
                           features=config.features, sequence_length=model_config.sequence_length,
                           horizon=config.predictor.horizon_steps, train_fraction=1.0 - args.holdout_fraction,
                           skip_short=args.from_store)
        forecaster, weights = train_forecaster(prepared, model_config, num_workers=args.num_workers,
                                               use_gpu=args.use_gpu, cpus_per_worker=args.cpus_per_worker,
                                               verbose=not args.quiet)
        coverage, tolerance = model_config.interval_coverage, model_config.confidence_tolerance
        metrics = holdout_metrics(forecaster, prepared, coverage, tolerance)
        registry = ModelRegistry(args.model_path or config.model_path)
        incumbent = _active_holdout_mae(registry, args.model_id, prepared, coverage, tolerance)
        activate = not args.no_activate and (args.force_activate or incumbent is None or metrics["mae"] <= incumbent[1])
        with tempfile.TemporaryDirectory() as folder:
            forecaster.save(Path(folder))
            metadata = registry.publish(
                args.model_id, Path(folder), model_type="lstm", activate=activate,
                data_span=prepared.data_span(synthetic=synthetic),
                feature_spec={"names": prepared.pipeline.feature_names, "features": list(config.features),
                              "step_s": config.predictor.step, "sequence_length": model_config.sequence_length,
                              "horizon_steps": config.predictor.horizon_steps},
                feature_spec_hash=prepared.pipeline.spec_hash,
                config=config.model_dump(mode="json"),
                metrics=metrics,
                training={"seed": model_config.seed, "best_epoch": weights.best_epoch,
                          "epochs_run": weights.epochs_run, "duration_s": round(weights.duration_s, 1),
                          "num_workers": weights.num_workers, "use_gpu": weights.use_gpu,
                          "holdout_fraction": args.holdout_fraction, "synthetic_data": synthetic},
            )
        _say_result(metadata, metrics, activate, incumbent, synthetic)
        return 0

    return run_cli("train_lstm", body)


def _say_result(metadata: ModelMetadata, metrics: dict[str, Any], activated: bool,
                incumbent: tuple[int, float] | None, synthetic: bool) -> None:
    label = " (trained on SYNTHETIC data: for demos only)" if synthetic else ""
    sys.stderr.write(
        f"train_lstm: registered {metadata.model_id} version {metadata.version}{label}; holdout MAE "
        f"{metrics['mae']:.2f} W (last value {metrics['last_value_mae']:.2f} W), {metrics['nominal_coverage']:.0%} "
        f"interval covers {metrics['coverage']:.1%}, mean confidence {metrics['mean_confidence']:.3f} vs hit rate "
        f"{metrics['hit_rate']:.3f}\n")
    if incumbent is not None:
        verdict = "activated" if activated else "NOT activated (kept"
        sys.stderr.write(f"train_lstm: active version {incumbent[0]} scores {incumbent[1]:.2f} W on the same holdout: "
                         f"{verdict}{'' if activated else f' version {incumbent[0]})'}\n")
    elif activated:
        sys.stderr.write("train_lstm: activated (no model was active)\n")


if __name__ == "__main__":
    raise SystemExit(main())

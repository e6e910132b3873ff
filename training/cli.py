"""What the training command lines share: common flags, config overrides, clean failures."""

from __future__ import annotations

import argparse
import errno
import importlib.util
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path

import pandas as pd

from core.durations import parse_duration
from core.plotting import PLOTTING_NEEDS
from core.registry_metadata import ModelNotFoundError, check_model_id
from core.settings import CONFIG_FLAG_HELP, ConfigError, refuse_template_ray_token
from core.stores.base import StoreUnavailable
from core.telemetry_csv import TelemetryDataError
from training.power.forecaster import ArtifactError
from training.power.retrain_spec import ModelOverrides
from training.power.scaling import TrainScaling
from training.retrain_data import DEFAULT_STORE_SPAN, shape_span_s
from training.retrain_lock import AttemptStopped, ModelBusy
from training.settings import TrainingConfig, load_training_config

STATE_PATH_ENV = "KCLOUD_STATE_PATH"
DEFAULT_STATE_PATH = "state"  # the service's default args.state_path (app/settings.py)


def duration_arg(text: str) -> int:
    """argparse type for durations; the error names the bad value."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def output_path(text: str) -> str:
    """argparse type for a file a command writes at its end: refused at once when it is a folder, its folder is a
    file, or the folder it is written in cannot take a file, so a long run never ends unable to save its result."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder: name a file in it")
    if (problem := folder_problem(path.parent)) is not None:
        raise argparse.ArgumentTypeError(f"{text!r} cannot be written: {problem}")
    return text


def plot_path(text: str) -> str:
    """argparse type for `--plot`: an output path (`output_path`), refused at once where matplotlib is not
    installed, rather than after the run, its report unwritten."""
    if importlib.util.find_spec("matplotlib") is None:
        raise argparse.ArgumentTypeError(f"{PLOTTING_NEEDS}; or leave --plot out")
    return output_path(text)


def folder_problem(folder: Path) -> str | None:
    """Why a command could not write files in `folder` (created where missing), or None: it, or the nearest of its
    parents that exists, is a file, or cannot take a file (the results are written beside their path and moved over
    it: core/atomic_files.py)."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"{str(existing)!r} is a file"
    try:
        tempfile.TemporaryFile(dir=existing or Path.cwd()).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def require_writable_folder(label: str, folder: str | None) -> None:
    """Refuse, before any training, a folder a run writes its result in at the end (`label` names its flag or
    key); None, or a URI (a remote store: reached only by the run itself), is not checked."""
    if folder is None or "://" in folder:
        return
    if (problem := folder_problem(Path(folder))) is not None:
        raise ValueError(f"{label} {folder!r} cannot be written: {problem}")


def resolved_path(value: str) -> Path:
    """`value` made absolute with its symlinks followed; a symlink loop is a ValueError naming it (Python 3.11-3.12
    raise RuntimeError for it; 3.13 leaves the loop in the path, which its stat then finds)."""
    loop = ValueError(f"{value!r} runs through a symlink loop")
    try:
        path = Path(value).resolve()
        path.stat()
    except RuntimeError:
        raise loop from None
    except OSError as exc:  # a path still to be written is missing, and fine
        if exc.errno == errno.ELOOP:
            raise loop from None
    return path


INPUT_FLAGS = ("data", "trace", "suite", "policy", "config")
OUTPUT_FLAGS = ("output", "plot")


def refuse_overwriting_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (a usage error naming both flags) an output path that is one of the command's input files, which the
    command would otherwise write over at its end."""
    def resolved(flag: str, value: str) -> Path:
        try:
            return resolved_path(value)
        except ValueError as problem:
            parser.error(f"argument --{flag}: {problem}")

    inputs = {flag: resolved(flag, value) for flag in INPUT_FLAGS
              if isinstance(value := getattr(args, flag, None), str)}
    for out_flag in OUTPUT_FLAGS:
        if not isinstance(value := getattr(args, out_flag, None), str):
            continue
        written = resolved(out_flag, value)
        for in_flag, read in inputs.items():
            if written == read:
                parser.error(f"argument --{out_flag}: {value!r} is the --{in_flag} file, which it would write over: "
                             "name another file")
        inputs[out_flag] = written  # --plot may not name the --output file either: one would replace the other


MAX_KEEP_VERSIONS = 10_000  # as args.retrain.keep_versions


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def seed_arg(text: str) -> int:
    """argparse type for a random seed: a whole number from 0 to 2**32 - 1 (what numpy and LightGBM take)."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text!r} must lie between 0 and {2**32 - 1}")
    return value


def model_id_arg(text: str) -> str:
    """argparse type for a registry model id, checked before any work."""
    try:
        return check_model_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number above 0")
    return value


def number_in(low: float, high: float) -> Callable[[str], float]:
    """argparse type for a number in [low, high)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value < high:
            raise argparse.ArgumentTypeError(f"must be in [{low:g}, {high:g}), got {text}")
        return value
    return parse


def count_in(minimum: int, maximum: int = 2**31 - 1) -> Callable[[str], int]:
    """argparse type for a whole number from `minimum` to `maximum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be between {minimum:,} and {maximum:,}, got {value:,}")
        return value
    return parse


def fraction_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must lie strictly between 0 and 1")
    return value


def resources_arg(text: str) -> dict[str, float]:
    """argparse type for Ray resources as JSON, e.g. '{"trainer": 1}'."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON: {exc}") from exc
    valid = isinstance(value, dict) and all(
        isinstance(amount, int | float) and not isinstance(amount, bool) and 0 <= amount < math.inf
        for amount in value.values())
    if not valid:
        raise argparse.ArgumentTypeError(f"{text!r} must be a JSON object of resource names to finite amounts >= 0")
    if builtin := sorted(set(value) & {"CPU", "GPU"}):  # would silently override the flags that set them
        raise argparse.ArgumentTypeError(f"{text!r}: set {' and '.join(builtin)} with --cpus-per-worker / --use-gpu, "
                                         "not here")
    return {str(name): float(amount) for name, amount in value.items()}


def store_span(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`--since` for `--from-store` only: refused without it, where it would be ignored (a CSV is read whole)."""
    if args.since is not None and not args.from_store:
        parser.error("argument --since: applies to --from-store only (a CSV is read whole)")


def store_since_s(args: argparse.Namespace, config: TrainingConfig, sequence_length: int | None = None) -> int:
    """`--since`, else what the retrain API and the scheduler read for the shape `config` trains (with
    `sequence_length`, the longest input window a search tries, in place of its own): 14 days, or more where
    SPAN_WINDOWS of its windows (input window + horizon) need it (8 weeks for an hourly model)."""
    if args.since is not None:
        return args.since
    return shape_span_s(config.predictor.step, config.predictor.prediction_horizon,
                        sequence_length or config.models.power_predictor.sequence_length,
                        parse_duration(DEFAULT_STORE_SPAN))


def given(args: argparse.Namespace, flags: tuple[str, ...] | list[str]) -> list[str]:
    """Those of `flags` the command line gave a value."""
    return [flag for flag in flags if getattr(args, flag.removeprefix("--").replace("-", "_")) is not None]


CPUS_PER_WORKER_DEFAULT = ("when the command starts Ray itself on one machine, its free CPUs shared among the "
                           "workers; else 1")


def add_model_flags(parser: argparse.ArgumentParser, cpus_per_worker_default: str = CPUS_PER_WORKER_DEFAULT, *,
                    suite: bool = False) -> None:
    """Flags that override the config's model and series settings (`cpus_per_worker_default`: what the command
    reserves without --cpus-per-worker, for its help; `suite`: the command also takes --suite)."""
    with_suite = " (with --suite: where the suite and its case do not set it)" if suite else ""
    parser.add_argument("--config", help=CONFIG_FLAG_HELP)
    parser.add_argument("--step", type=duration_arg, help="sampling interval of the series, e.g. 1min")
    parser.add_argument("--sequence-length", type=positive_int, help=f"input window in steps{with_suite}")
    parser.add_argument("--epochs", type=positive_int, help=f"maximum training epochs{with_suite}")
    parser.add_argument("--hidden-size", type=positive_int, help=f"LSTM hidden units{with_suite}")
    parser.add_argument("--seed", type=seed_arg, help="random seed, 0 to 2**32 - 1 (same seed, same model)")
    parser.add_argument("--num-workers", type=positive_int, default=1, help="Ray Train workers (default 1)")
    parser.add_argument("--use-gpu", action="store_true", help="train on GPUs (one per worker)")
    parser.add_argument("--cpus-per-worker", type=positive_float,
                        help=f"CPUs each Ray Train worker reserves, and torch's threads in it (default: "
                             f"{cpus_per_worker_default})")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")


def train_scaling(args: argparse.Namespace, cpus_per_worker_default: float | None = None) -> TrainScaling:
    """Ray Train's scaling from `add_model_flags`' flags (and --resources-per-worker, where the command has it)."""
    return TrainScaling(num_workers=args.num_workers, use_gpu=args.use_gpu,
                        cpus_per_worker=args.cpus_per_worker or cpus_per_worker_default,
                        resources_per_worker=getattr(args, "resources_per_worker", {}))


def model_overrides(args: argparse.Namespace, horizon_s: int | None = None) -> ModelOverrides:
    """The config values the command line's flags replace."""
    return ModelOverrides(step=args.step, horizon=horizon_s, sequence_length=args.sequence_length,
                          epochs=args.epochs, hidden_size=args.hidden_size, seed=args.seed)


def load_with_overrides(args: argparse.Namespace, horizon_s: int | None = None) -> TrainingConfig:
    """The config file with the command line's overrides applied (and validated again)."""
    return model_overrides(args, horizon_s).apply(load_training_config(args.config))


def keep_versions_arg(text: str) -> int:
    value = positive_int(text)
    if value > MAX_KEEP_VERSIONS:
        raise argparse.ArgumentTypeError(f"{text!r} must be at most {MAX_KEEP_VERSIONS:,}")
    return value


def add_keep_versions_flag(parser: argparse.ArgumentParser) -> None:
    """`--keep-versions`: how many versions a successful run leaves (a scheduled command line, like the
    RayCronJob's)."""
    parser.add_argument("--keep-versions", type=keep_versions_arg,
                        help="after a success, delete the model's versions beyond the newest N, never the served "
                             "one, the N served before it nor a pinned one, as the service's attempts do "
                             "(args.retrain.keep_versions; default: delete none)")


def add_state_path_flag(parser: argparse.ArgumentParser) -> None:
    """`--state-path`: where the run takes the model's retrain lock and is recorded (training/cli_attempt.py)."""
    parser.add_argument("--state-path",
                        help="the service's state_path (serve config args.state_path): the run takes the model's "
                             "retrain lock there, as the API's retrain jobs and the retrain scheduler do, and is "
                             f"listed with them (default: ${STATE_PATH_ENV}, else ./{DEFAULT_STATE_PATH}, the "
                             "service's default)")


def state_path(args: argparse.Namespace, tool: str) -> str:
    """The state path `add_state_path_flag` names: the flag, else $KCLOUD_STATE_PATH, else the service's default,
    relative to the current directory: where that does not exist yet, a note says that no service shares the lock.
    One that cannot hold the lock (a file, a read-only folder) is refused, naming where it came from."""
    chosen = args.state_path or os.environ.get(STATE_PATH_ENV)
    if chosen:
        require_writable_folder("--state-path" if args.state_path else f"${STATE_PATH_ENV}", chosen)
        return chosen
    if not Path(DEFAULT_STATE_PATH).is_dir():
        sys.stderr.write(f"{tool}: note: no ./{DEFAULT_STATE_PATH} in {Path.cwd()}: this run takes the model's retrain "
                         f"lock in a new one, which no running service shares; to share a service's, give its "
                         f"args.state_path as --state-path or ${STATE_PATH_ENV}\n")
    return DEFAULT_STATE_PATH


def read_store(since_s: int, step_s: int, *, verbose: bool, only: Collection[str] | None = None) -> pd.DataFrame:
    """`--from-store`: the telemetry store's frame over the last `since_s` at `step_s` (only the nodes named, when
    given), joining the cluster of a `ray job submit` driver first so that its store actor is read."""
    from core.stores.frame import open_store, stored_frame
    from training.power.local_ray import join_submitted_cluster

    join_submitted_cluster(verbose)
    store = open_store()
    try:
        return stored_frame(store, since_s, step_s, only=only)
    finally:
        store.close()


def run_cli(name: str, body: Callable[[], int]) -> int:
    """Run a command's body; expected failures become one clear line and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        refuse_template_ray_token()  # a RayJob's cluster started with the Secret template's token
        return body()
    except (ConfigError, TelemetryDataError, ModelNotFoundError, ArtifactError, ValueError, OSError,
            StoreUnavailable, ModelBusy, AttemptStopped) as exc:
        sys.stderr.write(f"{name}: error: {exc}\n")
        return 2

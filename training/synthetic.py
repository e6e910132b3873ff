"""SYNTHETIC telemetry traces in the canonical CSV schema, for demos and tests only.

The traces imitate real AI servers closely enough to exercise the pipeline (job phases, checkpoints,
diurnal inference load, sensor noise, missing rows), but they are invented: never quote accuracy
measured on them. Every constant below is an assumption, with its source noted.

    python -m training.synthetic --output data/synthetic.csv --nodes 4 --duration 2d --step 1min
    python -m training.synthetic --output spikes.csv --pattern recurring_spikes --duration 42d --step 10min

`--pattern` writes a trace with a failure mode of the evaluation suites instead (training.synthetic_patterns:
recurring_spikes, level_shifts, regime_change): one server's unless `--nodes` asks for more, each with its own jitter
and noise, and with `--drop-fraction` and `--gaps` applied as to the mixed fleet.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter, lfilter_zi

from core.atomic_files import atomic_write_with
from core.durations import format_duration
from training.cli import count_in, duration_arg, number_in, output_path

COLUMNS = ("timestamp", "node_id", "power_watts", "cpu_utilization", "memory_usage", "gpu_utilization",
           "npu_utilization", "temperature", "workload_type")
WORKLOADS = ("training", "inference", "batch", "idle")
PATTERNS = ("recurring_spikes", "level_shifts", "regime_change")  # training.synthetic_patterns.Pattern
TRAINING, INFERENCE, BATCH, IDLE = range(4)
DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday, so default output is reproducible


@dataclass(frozen=True)
class NodeKind:
    """Power and thermal envelope of one server model (wall power, host included)."""

    prefix: str
    idle_w: float  # wall power with nothing running
    accel_w: float  # extra power of all accelerators at 100 % utilization and full intensity
    cpu_w: float  # extra power of the host CPUs at 100 % utilization
    temp_idle: float  # hottest device at idle, °C
    temp_full: float  # hottest device at full power, °C
    util_column: str | None


# 8x H100/A100 SXM (DGX/HGX class): ~0.7-0.9 kW at the wall idle; each GPU adds up to ~550 W under
# training (700 W TDP minus ~60-70 W idle), so 4-6 kW busy (vendor sheets, MLPerf power logs; assumption).
GPU = NodeKind("gpu", 800.0, 4400.0, 400.0, 33.0, 80.0, "gpu_utilization")
# 8x Ascend 910B class (~400 W TDP each, Atlas 800T A2 class): ~600 W idle, 3.5-4 kW busy (vendor sheet).
NPU = NodeKind("npu", 600.0, 3200.0, 300.0, 38.0, 72.0, "npu_utilization")
# 2-socket CPU-only server: ~180 W idle, ~480 W with all cores busy (SPECpower-style curves; assumption).
CPU_ONLY = NodeKind("idle", 180.0, 0.0, 300.0, 40.0, 75.0, None)
_MIX = (GPU, NPU, CPU_ONLY, GPU)  # 4 nodes -> 2 GPU, 1 NPU, 1 idle; larger fleets keep the 2:1:1 ratio

POWER_TAU_S = 20.0  # PSU/VRM/fan response plus the sensor's ~1-10 s averaging window (assumption)
TEMP_TAU_S = 150.0  # heatsink/cold-plate time constant of a 400-700 W device, 1-3 min (assumption)
POWER_NOISE = 0.01  # ~1 % relative sensor error (NVML/BMC readings are specified to within a few %)
JOB_MEDIAN_S = 6 * 3600.0  # training jobs: lognormal, hours to a day (cluster traces, e.g. Philly/Helios)
GAP_MEAN_S = 2 * 3600.0  # exponential idle time between jobs on a node (assumption)
BATCH_PROBABILITY = 0.3  # chance that an idle gap hosts a batch job (preprocessing, evaluation sweeps)
CHECKPOINT_EVERY_MIN = (15, 20, 30, 60)  # common checkpoint intervals of large-model training
CHECKPOINT_S = (45.0, 180.0)  # writing a sharded checkpoint takes tens of seconds to a few minutes
ITERATION_S = (2.0, 12.0)  # one optimizer step of a large model (compute followed by all-reduce)
BURSTS_PER_DAY = 4.0  # inference traffic spikes (launches, retries, batch clients; assumption)


def generate_trace(*, nodes: int = 4, start: datetime | None = None, duration_s: int = 2 * 86400,
                   step_s: int = 60, seed: int = 0, drop_fraction: float = 0.0,
                   gaps: int = 0) -> pd.DataFrame:
    """Return a SYNTHETIC telemetry frame in the canonical column order, time-major, one row per node/step.

    `timestamp` is UTC, utilizations are 0-100 (NaN where the node has no such device), `power_watts` is an
    integer. `drop_fraction` removes that share of rows at random; `gaps` removes `gaps` outages of
    10 min to 2 h from random nodes. The same arguments always give the same frame.
    """
    if nodes < 1:
        raise ValueError(f"nodes must be at least 1, got {nodes}")
    if step_s <= 0 or duration_s < step_s:
        raise ValueError(f"need 0 < step_s <= duration_s, got step_s={step_s}, duration_s={duration_s}")
    if not 0.0 <= drop_fraction < 1.0:
        raise ValueError(f"drop_fraction must be in [0, 1), got {drop_fraction}")
    if gaps < 0 or seed < 0:
        raise ValueError(f"gaps and seed must be at least 0, got gaps={gaps}, seed={seed}")
    start = DEFAULT_START if start is None else start
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    steps = duration_s // step_s
    t = np.arange(steps, dtype=float) * step_s
    times = pd.date_range(start, periods=steps, freq=pd.Timedelta(seconds=step_s))
    hour = times.hour.to_numpy() + times.minute.to_numpy() / 60.0
    weekend = times.day_of_week.to_numpy() >= 5

    counts = {kind.prefix: 0 for kind in _MIX}
    specs = []
    for i in range(nodes):
        kind = _MIX[i % len(_MIX)]
        counts[kind.prefix] += 1
        specs.append((f"syn-{kind.prefix}-{counts[kind.prefix]:02d}", kind, i, counts[kind.prefix]))
    specs.sort(key=lambda spec: spec[0])

    columns: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS[2:]}
    for _, kind, index, number in specs:
        rng = np.random.default_rng([seed, index])  # per node, so a node's trace ignores the fleet size
        if kind.util_column is None:
            cpu = rng.uniform(2.0, 5.0) + rng.normal(0.0, 0.5, steps)
            util, intensity = np.zeros(steps), np.zeros(steps)
            memory = rng.uniform(6.0, 12.0) + rng.normal(0.0, 0.2, steps)
            workload = np.full(steps, IDLE)
        elif number % 2 == 1:  # syn-gpu-01, -03, ... train; -02, -04, ... serve
            util, cpu, memory, intensity, workload = _training_node(rng, t)
        else:
            util, cpu, memory, intensity, workload = _inference_node(rng, t, hour, weekend, step_s)
        cpu = np.clip(cpu, 0.0, 100.0)
        util = np.clip(util, 0.0, 100.0)
        target = kind.idle_w + kind.accel_w * intensity * util / 100.0 + kind.cpu_w * cpu / 100.0
        power = _lag(target, step_s, POWER_TAU_S)
        heat = (power - kind.idle_w) / (kind.accel_w + kind.cpu_w)
        offset = rng.uniform(-3.0, 3.0)  # rack position, airflow
        warm = kind.temp_idle + offset + (kind.temp_full - kind.temp_idle) * heat
        temperature = _lag(warm, step_s, TEMP_TAU_S)
        blank = np.full(steps, np.nan)
        columns["power_watts"].append(np.maximum(np.rint(power * (1 + rng.normal(0, POWER_NOISE, steps))), 1))
        columns["cpu_utilization"].append(np.round(cpu, 1))
        columns["memory_usage"].append(np.round(np.clip(memory, 0.0, 100.0), 1))
        columns["gpu_utilization"].append(np.rint(util) if kind is GPU else blank)
        columns["npu_utilization"].append(np.rint(util) if kind is NPU else blank)
        columns["temperature"].append(np.rint(temperature + rng.normal(0.0, 0.4, steps)))
        columns["workload_type"].append(workload)

    keep = _kept_rows(np.random.default_rng([seed, 1_000_003]), nodes, steps, step_s, drop_fraction, gaps)
    keep = keep.T.ravel()
    data: dict[str, object] = {
        "timestamp": times.repeat(nodes)[keep],
        "node_id": np.tile(np.array([spec[0] for spec in specs], dtype=object), steps)[keep],
    }
    for name, arrays in columns.items():
        data[name] = np.stack(arrays).T.ravel()[keep]  # time-major: all nodes at t0, then t1, ...
    data["power_watts"] = data["power_watts"].astype(np.int64)
    data["workload_type"] = np.array(WORKLOADS, dtype=object)[data["workload_type"]]
    return pd.DataFrame(data, columns=list(COLUMNS)).reset_index(drop=True)


def _training_node(rng: np.random.Generator, t: np.ndarray) -> tuple[np.ndarray, ...]:
    """Training jobs with compute/all-reduce iterations and checkpoints, separated by idle or batch gaps."""
    starts, kinds = [], []
    cursor = -rng.uniform(0.0, JOB_MEDIAN_S)  # the cluster is in steady state when the trace begins
    while cursor <= t[-1]:
        starts.append(cursor), kinds.append(TRAINING)
        cursor += float(np.clip(rng.lognormal(np.log(JOB_MEDIAN_S), 0.6), 1800.0, 36 * 3600.0))
        gap = rng.exponential(GAP_MEAN_S) + 300.0
        if gap > 1800.0 and rng.random() < BATCH_PROBABILITY:
            starts.append(cursor), kinds.append(BATCH)
            cursor, gap = cursor + 0.6 * gap, 0.4 * gap
        starts.append(cursor), kinds.append(IDLE)
        cursor += gap
    n = len(starts)
    kind = np.array(kinds)
    seg = np.searchsorted(np.array(starts), t, side="right") - 1
    elapsed = t - np.array(starts)[seg]
    workload = kind[seg]
    busy = np.select([kind == TRAINING, kind == BATCH], [rng.uniform(90, 99, n), rng.uniform(40, 80, n)], 0.0)
    cpu_level = np.select([kind == TRAINING, kind == BATCH], [rng.uniform(15, 35, n), rng.uniform(40, 80, n)],
                          rng.uniform(1, 4, n))
    mem_level = np.select([kind == TRAINING, kind == BATCH], [rng.uniform(40, 85, n), rng.uniform(20, 60, n)],
                          rng.uniform(6, 12, n))
    intensity = np.where(kind == TRAINING, rng.uniform(0.8, 1.0, n), rng.uniform(0.5, 0.8, n))[seg]
    period, compute_share = rng.uniform(*ITERATION_S, n)[seg], rng.uniform(0.7, 0.85, n)[seg]
    every = rng.choice(CHECKPOINT_EVERY_MIN, n)[seg] * 60.0
    ckpt_s, warmup_s = rng.uniform(*CHECKPOINT_S, n)[seg], rng.uniform(120.0, 420.0, n)[seg]

    noise = rng.normal(0.0, 1.0, (3, t.size))
    util = busy[seg] + np.where(workload == BATCH, 8.0, 1.5) * noise[0] * (workload != IDLE)
    cpu = cpu_level[seg] + 1.5 * noise[1]
    memory = mem_level[seg] + 0.3 * noise[2]
    training = workload == TRAINING
    allreduce = training & ((elapsed % period) / period > compute_share)  # point samples land in either phase
    util = np.where(allreduce, rng.uniform(50.0, 65.0, t.size), util)  # power dips ~30-40 %
    quiet = training & ((elapsed < warmup_s) | (elapsed % every > every - ckpt_s))  # load / checkpoint
    util = np.where(quiet, rng.uniform(0.0, 8.0, t.size), util)
    cpu = np.where(quiet, rng.uniform(50.0, 70.0, t.size), cpu)  # serialization and storage I/O
    memory = np.where(quiet, memory + 5.0, memory)
    return util, cpu, memory, intensity, workload


def _inference_node(rng: np.random.Generator, t: np.ndarray, hour: np.ndarray, weekend: np.ndarray,
                    step_s: int) -> tuple[np.ndarray, ...]:
    """Serving load: daily cycle peaking ~15:00 UTC, quieter weekends, slow noise and short bursts."""
    load = 0.4 + 0.3 * np.cos(2 * np.pi * (hour - 15.0) / 24.0)
    load = load * np.where(weekend, 0.65, 1.0)  # consumer traffic is lower on weekends (assumption)
    a = np.exp(-step_s / 1200.0)  # 20 min correlation time of traffic noise
    load = load + lfilter([np.sqrt(1 - a * a)], [1.0, -a], rng.normal(0.0, 0.06, t.size))
    span = t[-1] + step_s
    for _ in range(rng.poisson(BURSTS_PER_DAY * span / 86400.0)):
        begin, length = rng.uniform(0.0, span), rng.uniform(300.0, 1200.0)
        load = load + rng.uniform(0.2, 0.4) * ((t >= begin) & (t < begin + length))
    load = np.clip(load, 0.02, 1.0)
    util = 100.0 * load * rng.uniform(0.85, 1.0) + rng.normal(0.0, 2.0, t.size)
    cpu = 8.0 + 25.0 * load + rng.normal(0.0, 1.0, t.size)
    memory = rng.uniform(35.0, 55.0) + 5.0 * load  # model weights resident, KV cache grows with load
    intensity = np.full(t.size, rng.uniform(0.6, 0.75))  # decode is memory bound: less power per util %
    return util, cpu, memory, intensity, np.full(t.size, INFERENCE)


def _lag(x: np.ndarray, step_s: int, tau_s: float) -> np.ndarray:
    """First-order lag with time constant `tau_s`, starting in steady state."""
    a = np.exp(-step_s / tau_s)
    b, den = [1.0 - a], [1.0, -a]
    return lfilter(b, den, x, zi=lfilter_zi(b, den) * x[0])[0]


def _kept_rows(rng: np.random.Generator, nodes: int, steps: int, step_s: int, drop_fraction: float,
               gaps: int) -> np.ndarray:
    """Boolean (nodes, steps) mask: False for randomly dropped rows and for collector outages."""
    keep = rng.random((nodes, steps)) >= drop_fraction
    for _ in range(gaps):
        length = int(np.clip(rng.uniform(600.0, 7200.0) // step_s, 1, max(1, steps // 4)))
        begin = int(rng.integers(0, steps - length + 1))
        keep[int(rng.integers(0, nodes)), begin:begin + length] = False
    return keep


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """Write `frame` as canonical CSV atomically (a fsynced temporary file in the same folder, then rename)."""
    codes, uniques = pd.factorize(frame["timestamp"])
    text = frame.assign(timestamp=np.asarray(uniques.strftime("%Y-%m-%dT%H:%M:%SZ"), dtype=object)[codes])

    def write(tmp: Path) -> None:
        text.to_csv(tmp, index=False, na_rep="", float_format="%g")
        os.chmod(tmp, 0o644)

    atomic_write_with(Path(path), write)


MAX_ROWS = 20_000_000
"""The most rows one trace may have (nodes x steps): about 2 GB of CSV."""


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (2 for bad arguments)."""
    parser = argparse.ArgumentParser(
        prog="python -m training.synthetic",
        description="Write a SYNTHETIC telemetry CSV (for demos and tests only).")
    parser.add_argument("--output", required=True, type=output_path, help="CSV file to write")
    parser.add_argument("--nodes", type=count_in(1, 10_000), help="number of nodes (default 4; 1 with --pattern)")
    parser.add_argument("--duration", type=duration_arg, default=2 * 86400, help="trace length (default 2d)")
    parser.add_argument("--step", type=duration_arg, default=60, help="sample interval (default 1min)")
    parser.add_argument("--seed", type=count_in(0), default=0, help="random seed (default 0)")
    parser.add_argument("--drop-fraction", type=number_in(0.0, 1.0), default=0.0, help="share of rows to drop")
    parser.add_argument("--gaps", type=count_in(0, 100_000), default=0, help="collector outages to insert (default 0)")
    parser.add_argument("--pattern", choices=PATTERNS,
                        help="a trace with a failure mode of the evaluation suites instead (whole days; each of "
                             "--nodes servers draws its own jitter and noise)")
    try:
        args = parser.parse_args(argv)
        if args.pattern is not None:
            return _write_pattern(parser, args)
        args.nodes = args.nodes or 4
        if args.step > args.duration:
            parser.error(f"argument --duration: {format_duration(args.duration)} is shorter than "
                         f"--step {format_duration(args.step)}")
        rows = args.nodes * (args.duration // args.step)
        if rows > MAX_ROWS:
            parser.error(f"argument --duration: {args.nodes} nodes x {args.duration // args.step:,} steps make "
                         f"{rows:,} rows, more than {MAX_ROWS:,}; use fewer nodes, a shorter --duration or a longer "
                         "--step")
        frame = generate_trace(nodes=args.nodes, duration_s=args.duration, step_s=args.step, seed=args.seed,
                               drop_fraction=args.drop_fraction, gaps=args.gaps)
        _write_checked(parser, args, frame)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    sys.stderr.write(f"wrote {len(frame):,} rows for {args.nodes} nodes "
                     f"(SYNTHETIC, for demos and tests only) to {args.output}\n")
    return 0


def _write_pattern(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from training.synthetic_patterns import generate_pattern  # it builds on this module's start date

    if args.duration % 86400:
        parser.error(f"argument --duration: {format_duration(args.duration)} is not a whole number of days "
                     "(with --pattern)")
    nodes = args.nodes or 1
    if args.step > 86400 or nodes * (args.duration // args.step) > MAX_ROWS:
        parser.error(f"argument --step: {format_duration(args.step)} gives no trace of at most {MAX_ROWS:,} rows "
                     f"over {format_duration(args.duration)} for {nodes} node(s); use fewer --nodes, a shorter "
                     "--duration or a longer --step")
    servers = [generate_pattern(args.pattern, days=args.duration // 86400, step_s=args.step, seed=args.seed,
                                server=server) for server in range(nodes)]
    steps = len(servers[0])
    keep = _kept_rows(np.random.default_rng([args.seed, 1_000_003]), nodes, steps, args.step, args.drop_fraction,
                      args.gaps)
    frame = pd.concat(servers, ignore_index=True)  # server-major: row = server * steps + step
    order = np.arange(nodes * steps).reshape(nodes, steps).T.ravel()[keep.T.ravel()]  # time-major, kept rows
    frame = frame.iloc[order].reset_index(drop=True)
    args.nodes = nodes
    _write_checked(parser, args, frame)
    sys.stderr.write(f"wrote {len(frame):,} rows of the {args.pattern} pattern for {nodes} node(s) (SYNTHETIC, for "
                     f"tests and the evaluation suites only) to {args.output}\n")
    return 0


def _write_checked(parser: argparse.ArgumentParser, args: argparse.Namespace, frame: pd.DataFrame) -> None:
    """Write the trace, refusing one whose outages left a node without a row (it reads as no rows for it)."""
    if empty := args.nodes - frame["node_id"].nunique():
        parser.error(f"argument --gaps: {args.gaps} outages (with --drop-fraction {args.drop_fraction:g}) leave "
                     f"{empty} of {args.nodes} node(s) without a row; insert fewer")
    try:
        write_csv(frame, args.output)
    except OSError as exc:
        parser.error(f"argument --output: cannot write {args.output}: {exc.strerror or exc}")


if __name__ == "__main__":
    raise SystemExit(main())

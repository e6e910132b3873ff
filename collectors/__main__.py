"""`python -m collectors --once`: collect one round of telemetry on this node and print it.

Exit status: 0 when at least one source answered with samples, 1 when none did, 2 for a usage or config error.
"""

from __future__ import annotations

import argparse
import logging
import re
import socket
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from collectors.base import TelemetrySource
from collectors.settings import NodeSettings, load_collector_config
from collectors.sources import SOURCE_NAMES, build_sources
from core.settings import CONFIG_FLAG_HELP, ConfigError
from core.telemetry import ID_PATTERN, MAX_ID_CHARS, TelemetrySample

POLL_S, SAY_EVERY_S = 1.0, 10.0  # how often a source whose first read is under way is asked again, and said so
_COLUMNS = ("node", "source", "device", "power_W", "util_%", "mem_%", "temp_C", "limit_W", "energy_J", "quality")


def _node_id(text: str) -> str:
    """argparse type for --node-id: what a telemetry sample takes as its node (core/telemetry.py)."""
    if not text:
        raise argparse.ArgumentTypeError("empty: name the node, or leave the flag out for $NODE_NAME or the host name")
    if len(text) > MAX_ID_CHARS:
        raise argparse.ArgumentTypeError(f"{len(text)} characters, more than {MAX_ID_CHARS}")
    if not re.fullmatch(ID_PATTERN, text):
        raise argparse.ArgumentTypeError("holds a control character or a backslash")
    return text


def _seconds(text: str) -> float:
    """argparse type for --wait: seconds, 0 to 3600."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} s is outside 0 to 3600 s")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m collectors",
        description="Collect one round of telemetry from this node's sources and print it.",
        epilog="--once is required for now: continuous collection runs as Ray actors (CollectorActor).")
    parser.add_argument("--once", action="store_true", help="collect a single round and exit (required)")
    parser.add_argument("--sources", default=",".join(SOURCE_NAMES),
                        help=f"comma-separated sources to read (default: all of {','.join(SOURCE_NAMES)})")
    parser.add_argument("--json", action="store_true", help="print one TelemetrySample JSON object per line")
    parser.add_argument("--node-id", default=None, type=_node_id,
                        help="node name for the samples (default: $NODE_NAME, as the collector actor's, else this "
                             "host's name)")
    parser.add_argument("--wait", default=120.0, type=_seconds, metavar="SECONDS",
                        help="how long to wait for a source whose first read is still under way, as a BMC without "
                             "DCMI sending its sensor repository (tens of seconds) (default: 120)")
    parser.add_argument("--config", default=None, help=CONFIG_FLAG_HELP)
    parser.add_argument("-v", "--verbose", action="store_true", help="log source details on stderr")
    return parser


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(samples: list[TelemetrySample], out: TextIO) -> None:
    rows = [(s.node_id, s.source.value, s.device_id, _cell(s.power_watts), _cell(s.utilization),
             _cell(s.memory_usage), _cell(s.temperature, 0), _cell(s.power_limit_watts, 0),
             _cell(s.energy_joules, 0), s.quality.value) for s in samples]
    widths = [max(len(str(row[i])) for row in [_COLUMNS, *rows]) for i in range(len(_COLUMNS))]
    for row in [_COLUMNS, *rows]:
        out.write("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")


def _available(source: TelemetrySource, name: str, wait_s: float, err: TextIO) -> tuple[bool, str]:
    """The source's availability, asked again every `POLL_S` for up to `wait_s` while its first read is under way
    (saying so every `SAY_EVERY_S`)."""
    deadline, said = time.monotonic() + wait_s, float("-inf")
    ok, reason = source.available()
    while not ok and getattr(source, "first_read_under_way", False) and time.monotonic() < deadline:
        if time.monotonic() - said >= SAY_EVERY_S:
            err.write(f"source {name}: {reason}; waiting up to {wait_s:g} s (--wait)\n")
            said = time.monotonic()
        time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.0)))
        ok, reason = source.available()
    return ok, reason


def _collect(sources: list[TelemetrySource], err: TextIO, wait_s: float = 0.0) -> tuple[list[TelemetrySample], int]:
    """One round: availability (waiting up to `wait_s` for a first read under way), one warm-up wait for delta-based
    sources, then a sample from each."""
    ready = []
    for source in sources:
        name = getattr(source, "label", source.kind.value)
        ok, reason = _available(source, name, wait_s, err)
        if ok:
            ready.append((name, source))
            if reason:  # read, with a caveat (a GPU left out)
                err.write(f"source {name}: {reason}\n")
        else:
            err.write(f"source {name} unavailable: {reason}\n")
    time.sleep(max((getattr(source, "warmup_s", 0.0) for _, source in ready), default=0.0))
    samples, answered = [], 0
    for name, source in ready:
        got = source.sample()
        if got:
            answered += 1
            samples += got
        else:
            err.write(f"source {name} returned no samples (read failed; see the log)\n")
    return samples, answered


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None,
         configure_logging: bool = False) -> int:
    """Run the CLI; `configure_logging` sets up logging on stderr (the command line does, callers need not)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.once:
        parser.error("--once is required for now (continuous collection runs as Ray actors)")
    names = [name.strip() for name in args.sources.split(",") if name.strip()]
    unknown = [name for name in names if name not in SOURCE_NAMES]
    if unknown or not names:
        parser.error(f"unknown source {', '.join(map(repr, unknown))}; choose from {', '.join(SOURCE_NAMES)}"
                     if unknown else "--sources names no source")
    if configure_logging:
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=err,
                            format="%(levelname)s %(name)s: %(message)s")
    try:
        config, node = load_collector_config(args.config), NodeSettings.from_env()
        sources = build_sources(config, args.node_id or node.node_name or socket.gethostname(),
                                selected=set(names), node=node)
    except ConfigError as exc:
        err.write(f"config error: {exc}\n")
        return 2
    try:
        samples, answered = _collect(sources, err, args.wait)
    finally:
        for source in sources:
            source.close()
    if args.json:
        for sample in samples:
            out.write(sample.model_dump_json() + "\n")
    else:
        _table(samples, out)
    return 0 if answered else 1


def run() -> int:
    """The command line (`python -m collectors`, console script `kcloud-collect`): `main` with logging."""
    return main(configure_logging=True)


if __name__ == "__main__":
    sys.exit(run())

"""Human durations ("15s", "10min", "1h", "30m", "24h", "7d") as whole seconds.

One parser serves the config file, the command lines and the REST API, so "30m" means the same thing
everywhere: minutes (months are never meant in this domain).
"""

from __future__ import annotations

import re

_UNIT_SECONDS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(text: str | int | float) -> int:
    """Return the duration in whole seconds; a bare number means seconds.

    Raises:
        ValueError: naming the text and the accepted units when it is not a positive duration.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _PATTERN.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not a duration like '15s', '10min', '1h' or '7d'")
        number, unit = match.groups()
        unit = unit.lower() or "s"
        if unit not in _UNIT_SECONDS:
            known = ", ".join(sorted({"s", "min", "m", "h", "d", "w"}))
            raise ValueError(f"{text!r} has an unknown unit {unit!r}; use one of {known}")
        seconds = float(number) * _UNIT_SECONDS[unit]
    if seconds <= 0 or seconds != int(seconds):
        raise ValueError(f"{text!r} must be a positive whole number of seconds")
    return int(seconds)


def format_duration(seconds: int) -> str:
    """Shortest exact spelling of a duration, e.g. 600 -> '10min', 3600 -> '1h'."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"

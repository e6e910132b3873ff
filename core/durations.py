"""Human durations ("15s", "10min", "1h", "30m", "24h", "7d") as whole seconds.

One parser serves the config file, the command lines and the REST API, so "30m" means the same thing
everywhere: minutes (months are never meant in this domain).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

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
MAX_TEXT_CHARS = 32
"""Longest duration text accepted; anything longer is refused before it is parsed."""
MAX_SECONDS = 10 * 366 * 86400
"""Longest duration accepted (about ten years): bounds every arithmetic done with a parsed duration."""
_NUMBER = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")  # no nested or adjacent quantifiers: linear time
_NUMBER_CHARS = frozenset("0123456789.")


def _shown(text: str) -> str:
    """The text for an error message, cut so a hostile input never fills a log line or a response."""
    return repr(text) if len(text) <= MAX_TEXT_CHARS else f"{text[:MAX_TEXT_CHARS]!r}... ({len(text)} characters)"


def _split(text: str) -> tuple[str, str]:
    """Number part and unit part of a stripped duration text (one pass, no backtracking)."""
    end = 0
    while end < len(text) and text[end] in _NUMBER_CHARS:
        end += 1
    return text[:end], text[end:].strip()


def parse_duration(text: str | int | float, *, allow_zero: bool = False) -> int:
    """Return the duration in whole seconds; a bare number means seconds (`allow_zero`: 0 in any unit is one).

    Runs in time linear in the text, refuses text over MAX_TEXT_CHARS characters and durations over
    MAX_SECONDS.

    Raises:
        ValueError: naming the text and the accepted units when it is not a positive duration.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration")
    if isinstance(text, int) and abs(text) > MAX_SECONDS:  # before any float: a 400-digit int would overflow one
        raise ValueError(f"{_shown(str(text))} is longer than the longest duration accepted "
                         f"({MAX_SECONDS // 86400} days)")
    if isinstance(text, int | float):
        if not math.isfinite(text):
            raise ValueError(f"{text!r} is not a finite duration")
        seconds = float(text)
    elif isinstance(text, str):
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"{_shown(text)} is too long for a duration (at most {MAX_TEXT_CHARS} characters)")
        number, unit = _split(text.strip())
        if _NUMBER.fullmatch(number) is None:
            raise ValueError(f"{text!r} is not a duration like '15s', '10min', '1h' or '7d'")
        if unit == "M":  # "m" is minutes; a capital M as often means months
            raise ValueError(f"{text!r}: 'M' could mean minutes or months; write 'min' for minutes")
        unit = unit.lower() or "s"
        if unit not in _UNIT_SECONDS:
            known = ", ".join(sorted({"s", "min", "m", "h", "d", "w"}))
            raise ValueError(f"{text!r} has an unknown unit {unit!r}; use one of {known}")
        seconds = Fraction(number) * _UNIT_SECONDS[unit]  # exact: 1.1 h is 3,960 s, not 3,960.0000000000005
    else:
        raise ValueError(f"{type(text).__name__} is not a duration like '15s', '10min', '1h' or '7d'")
    if seconds < 0 or (seconds == 0 and not allow_zero) or seconds != int(seconds):
        raise ValueError(f"{_shown(str(text)) if isinstance(text, str) else repr(text)} "
                         f"must be a {'' if allow_zero else 'positive '}whole number of seconds")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{_shown(str(text)) if isinstance(text, str) else repr(text)} is longer than the "
                         f"longest duration accepted ({MAX_SECONDS // 86400} days)")
    return int(seconds)


def format_duration(seconds: int) -> str:
    """Shortest exact spelling of a duration, e.g. 600 -> '10min', 3600 -> '1h'."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"

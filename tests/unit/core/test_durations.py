"""Unit tests for human durations (core.durations)."""

from __future__ import annotations

import pytest

from core.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15s", 15),
        ("10min", 600),
        ("30m", 1800),  # minutes, never months
        ("1h", 3600),
        ("24h", 86400),
        ("7d", 7 * 86400),
        ("2w", 14 * 86400),
        ("1.5min", 90),  # a fractional number is fine when the result is whole seconds
        ("1.1h", 3960),  # exactly, though 1.1 * 3600 is 3960.0000000000005 in floats (regression)
        ("2.2d", 190080),
        ("90", 90),  # bare number text means seconds
        (" 5 MIN ", 300),  # spaces and case are tolerated
        ("3 hours", 10800),
        ("1day", 86400),
        (45, 45),  # bare int
        (120.0, 120),  # whole float
    ],
)
def test_parse_accepts(text: str | int | float, seconds: int) -> None:
    result = parse_duration(text)
    assert result == seconds
    assert type(result) is int


@pytest.mark.parametrize("text", ["", "   ", "abc", "5y", "-1h", "0s", "0", "1.5s", "h", "1h30m", 0, -5, 2.5, True])
def test_parse_refuses(text: str | int | float) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)  # the message names what was given


def test_a_capital_m_is_refused_as_ambiguous() -> None:
    """ "1M" read as a minute, by the case-insensitive units, would surprise someone who meant a month."""
    with pytest.raises(ValueError, match=r"'1M'.*minutes or months.*'min'"):
        parse_duration("1M")


def test_unknown_unit_message_lists_units() -> None:
    with pytest.raises(ValueError, match=r"unknown unit 'y'.*h.*min"):
        parse_duration("5y")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(15, "15s"), (61, "61s"), (60, "1min"), (600, "10min"), (1800, "30min"), (3600, "1h"), (5400, "90min"),
     (86400, "1d"), (7 * 86400, "7d"), (90000, "25h")],
)
def test_format(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [1, 59, 60, 61, 300, 3599, 3600, 7200, 86399, 86400, 604800, 1234567])
def test_format_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["9" * 400, "1" + " " * 20_000 + "1", "1" * 40 + "s", "5" + "m" * 100])
def test_hostile_text_is_refused_by_length_without_parsing(text: str) -> None:
    """Over-long text never reaches the parser (it was quadratic, and "9"*400 overflowed to a 500)."""
    with pytest.raises(ValueError, match="too long for a duration") as caught:
        parse_duration(text)
    assert len(str(caught.value)) < 200  # the message shows a cut of the text, not all of it


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e300, "99999999999d", 10**12, 10**400, -(10**400)])
def test_unbounded_magnitudes_are_refused(value: str | int | float) -> None:
    """10**400 (a JSON integer Python reads whole) overflowed the float conversion: a 500 from the policy API."""
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert len(str(caught.value)) < 200


def test_longest_accepted_duration() -> None:
    assert parse_duration("3650d") == 3650 * 86400

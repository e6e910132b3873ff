"""Read a CSV file's cells as text, refusing the shapes pandas would otherwise repair in silence.

pandas takes a first column as the row index when every data row has one field more than the header (the
trailing comma some exports write), which shifts every column by one, and it drops a row's extra values when told
not to; it renames a duplicated header name. Both loaders of the project's CSV inputs (telemetry and job records)
read through `read_text_csv`, so a value is never read under another column's name.
"""

from __future__ import annotations

import csv
import functools
import warnings
from pathlib import Path

import pandas as pd

_MAX_REPORTED = 5


class CsvShapeError(ValueError):
    """A CSV file whose shape cannot be read safely; the message names the file, the line and the reason."""


def read_text_csv(path: Path) -> pd.DataFrame:
    """Every cell as a string (none read as NaN), blank lines kept, so the row labelled i is line i + 2 (records of
    one line each; blank lines before the header included).

    Header names are stripped of spaces and must be unique. A data row with more fields than the header is
    refused when an extra field holds a value and trimmed when they are all empty."""
    header_line, header = _header(path)
    names = [name.strip() for name in header]
    twice = sorted({name for name in names if name and names.count(name) > 1})
    if twice:
        raise CsvShapeError(f"{path}: line {header_line}: the header names {', '.join(twice)} more than once")
    read = functools.partial(pd.read_csv, path, dtype=str, keep_default_na=False, skip_blank_lines=False,
                             index_col=False, skiprows=header_line - 1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            try:
                raw = read()
            except pd.errors.ParserError:  # a later row longer than the first ones
                _refuse_extra_values(path, header)
                raw = read(engine="python", on_bad_lines=lambda row: row[:len(header)])  # empty extras only: trim
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CsvShapeError(f"{path}: not a readable CSV file ({' '.join(str(exc).split())})") from exc
    if any(issubclass(warning.category, pd.errors.ParserWarning) for warning in caught):
        _refuse_extra_values(path, header)
    raw.columns = [str(name).strip() for name in raw.columns]
    raw.index = raw.index + header_line - 1  # labels keep counting the file's lines
    return raw


def _header(path: Path) -> tuple[int, list[str]]:
    """The header's line number and fields: the first line that is not blank."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            for row in reader:
                if row:
                    return reader.line_num, row
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CsvShapeError(f"{path}: not a readable CSV file ({exc})") from exc
    raise CsvShapeError(f"{path}: not a readable CSV file (no header line)")


def _refuse_extra_values(path: Path, header: list[str]) -> None:
    width, found = len(header), []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            for row in reader:
                if len(row) > width and any(cell.strip() for cell in row[width:]):
                    found.append(reader.line_num)
        except csv.Error as exc:  # e.g. a field over the csv module's size limit
            raise CsvShapeError(f"{path}: line {reader.line_num}: not a readable CSV row ({exc})") from None
    if found:
        shown = ", ".join(str(line) for line in found[:_MAX_REPORTED])
        more = f" (and {len(found) - _MAX_REPORTED} more)" if len(found) > _MAX_REPORTED else ""
        raise CsvShapeError(f"{path}: line(s) {shown}{more}: values beyond the header's {width} columns "
                            f"({', '.join(header)}): a value without a column name cannot be read")

"""Parsers for the vendor NPU tools: Huawei `npu-smi info` and Baidu Kunlun `xpu_smi -m`.

Both are built from recorded real outputs (tests/data/npu/SOURCES.md). They are tolerant of what differs between
versions (column widths, `Chip`/`Chip Phy-ID`/`Chip Device` headers, an HBM column or not, NA and "-" values, a
process table after the devices) and loud about what they cannot read: a ParseError that quotes the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class ParseError(ValueError):
    """Tool output this parser does not understand; the message quotes the offending line."""


@dataclass(frozen=True)
class ChipReading:
    """One NPU chip (die) as the tool reported it; None where the tool printed NA, "-" or nothing."""

    device_id: str
    name: str
    power_watts: float | None
    temperature: float | None
    utilization: float | None
    memory_used_mb: float | None
    memory_total_mb: float | None

    @property
    def memory_usage(self) -> float | None:
        if self.memory_used_mb is None or not self.memory_total_mb:
            return None
        return min(100.0, 100.0 * self.memory_used_mb / self.memory_total_mb)


_MISSING = {"NA", "N/A", "-", "--", ""}
_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-fxX]{2}:[0-9A-Fa-fxX]{2}\.[0-9A-Fa-fxX]$")
_CELL_VALUE = re.compile(r"(\S+)\s*/\s*(\S+)|(\S+)")  # "3412 / 65536" is one value
_NPU_DEFAULT = ["Power(W)", "Temp(C)", "Hugepages-Usage(page)"]
_CHIP_DEFAULT = ["AICore(%)", "Memory-Usage(MB)", "HBM-Usage(MB)"]


def _number(text: str, line: str) -> float | None:
    if text.upper() in _MISSING:
        return None
    try:
        return float(text)
    except ValueError:
        raise ParseError(f"not a number: {text!r} in line {line.strip()!r}") from None


def _values(cell: str, names: list[str], line: str) -> dict[str, tuple[str, ...]]:
    """Map the header's column names to the cell's values, in order ("a / b" pairs count as one)."""
    found = [(m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3),)
             for m in _CELL_VALUE.finditer(cell)]
    if len(found) != len(names):
        raise ParseError(f"expected {len(names)} values ({', '.join(names)}), found {len(found)} "
                         f"in line {line.strip()!r}")
    return dict(zip(names, found, strict=True))


def _column(values: dict[str, tuple[str, ...]], prefix: str) -> tuple[str, ...] | None:
    return next((value for name, value in values.items() if name.lower().startswith(prefix.lower())), None)


def parse_npu_smi_info(text: str) -> list[ChipReading]:
    """Chips from `npu-smi info` (the device table; the process table after it is skipped).

    Each chip row follows the NPU row it belongs to; power is reported per NPU, so on cards that print one NPU
    row per chip (Atlas A3) only the first chip carries the power and the others say "-". Device memory is the
    HBM pair where the table has one with a non-zero total, else Memory-Usage.
    """
    npu_names, chip_names = _NPU_DEFAULT, _CHIP_DEFAULT
    chips: list[ChipReading] = []
    npu: tuple[str, str, float | None, float | None] | None = None  # id, name, power, temperature
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("|"):
            continue  # borders, blank lines, anything around the table
        cells = [cell.strip() for cell in stripped.strip("|").split("|")]
        first = cells[0].split()
        if any("Process id" in cell for cell in cells):
            break  # the process table: nothing more about the devices
        if len(cells) == 1:
            if first and first[0] == "npu-smi":
                continue  # version banner
            if cells[0].startswith("No running processes"):
                break  # the process table, printed by some versions without its header row
            raise ParseError(f"unexpected row in the npu-smi device table: {stripped!r}")
        if len(cells) != 3:
            raise ParseError(f"expected 3 columns in the npu-smi device table, got {len(cells)}: {stripped!r}")
        if first and first[0] in ("NPU", "Chip"):
            names = cells[2].split()
            if first[0] == "NPU":
                npu_names = names
            else:
                chip_names = names
            continue
        if not first or not first[0].isdigit():
            raise ParseError(f"unexpected row in the npu-smi device table: {stripped!r}")
        if _BUS_ID.match(cells[1]):  # chip row: chip id [phy-id|device], bus id, AICore / memory / HBM
            if npu is None:
                raise ParseError(f"chip row before any NPU row: {stripped!r}")
            values = _values(cells[2], chip_names, stripped)
            aicore = _column(values, "AICore")
            used = total = None
            for prefix in ("Memory-Usage", "HBM-Usage"):  # the later non-empty pair wins (HBM on 910)
                pair = _column(values, prefix)
                if pair is not None and len(pair) == 2 and (_number(pair[1], stripped) or 0) > 0:
                    used, total = _number(pair[0], stripped), _number(pair[1], stripped)
            chips.append(ChipReading(
                device_id=f"npu{npu[0]}-chip{first[0]}", name=npu[1], power_watts=npu[2], temperature=npu[3],
                utilization=None if aicore is None else _number(aicore[0], stripped),
                memory_used_mb=used, memory_total_mb=total))
            npu = (npu[0], npu[1], None, npu[3])  # the power belongs to the first chip only
        else:  # NPU row: id name..., health, power temp hugepages
            values = _values(cells[2], npu_names, stripped)
            power, temperature = _column(values, "Power"), _column(values, "Temp")
            name = " ".join(first[1:])
            npu = (first[0], name, None if power is None else _number(power[0], stripped),
                   None if temperature is None else _number(temperature[0], stripped))
    if not chips:
        head = next((line.strip() for line in text.splitlines() if line.strip()), "")
        raise ParseError(f"no NPU chips in the npu-smi output (first line: {head!r})")
    return chips


_XPU_TOKEN = re.compile(r'"[^"]*"|\S+')
_XPU_MIN_FIELDS = 20
_XPU_MW_THRESHOLD = 2000.0  # no XPU draws 2 kW: bigger numbers are milliwatts (older xpu_smi)


def parse_xpu_smi_m(text: str) -> list[ChipReading]:
    """Devices from `xpu_smi -m` (one space-separated row per device, no header).

    Fields by position (0-based): 0 bus id, 2 device id, 4 temperature C, 8 power, 17/18 memory used/total MiB,
    19 utilization %, 21 quoted model name. Power is watts on recent drivers (P800) and milliwatts on older
    ones (K200, xpu 4.x): a value above 2000 is read as milliwatts. Both dies of a two-die card (K200) report
    the whole card's power: dies of one PCI device (the same bus id but its function) with the same power keep it
    on the first die only, so the node's sum counts the card once. Lines that do not start with a bus id are
    ignored (banners, warnings); a row that starts with one but cannot be read raises ParseError.
    """
    chips: list[ChipReading] = []
    card_power: dict[str, float | None] = {}  # bus id without its function -> the power its first die reported
    for line in text.splitlines():
        tokens = _XPU_TOKEN.findall(line)
        if not tokens or not _BUS_ID.match(tokens[0]):
            continue
        if len(tokens) < _XPU_MIN_FIELDS or not tokens[2].isdigit():
            raise ParseError(f"xpu_smi -m row with {len(tokens)} fields (need {_XPU_MIN_FIELDS}): {line.strip()!r}")
        power = _number(tokens[8], line)
        if power is not None and power > _XPU_MW_THRESHOLD:
            power /= 1000.0
        name = tokens[21].strip('"') if len(tokens) > 21 and tokens[21].startswith('"') else "Kunlun XPU"
        card = tokens[0].rsplit(".", 1)[0].lower()
        if card in card_power and card_power[card] == power:
            power = None  # the card's second die repeats the card's power
        else:
            card_power.setdefault(card, power)
        chips.append(ChipReading(
            device_id=f"xpu{tokens[2]}", name=name, power_watts=power, temperature=_number(tokens[4], line),
            utilization=_number(tokens[19], line), memory_used_mb=_number(tokens[17], line),
            memory_total_mb=_number(tokens[18], line)))
    if not chips:
        head = next((line.strip() for line in text.splitlines() if line.strip()), "")
        raise ParseError(f"no XPU rows in the xpu_smi -m output (first line: {head!r})")
    return chips

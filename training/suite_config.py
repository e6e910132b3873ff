"""The backtest suite file: which traces, at which step and horizons, over which seeds.

    data_root: ../data            # optional; relative to this file; `--data-root` overrides it
    seeds: [0, 1, 2]              # training seeds of every case (results are mean +- spread over them)
    train_fraction: 0.8
    split: series                 # optional: or time, one cut in time for all series (training.power.windows)
    learning_rate: 0.01           # optional model overrides for every case (a case's own win): sequence_length,
                                  # epochs, hidden_size, learning_rate, relative_power,
                                  # power_input_challenger
    cases:
      - name: upm_workloads
        trace: upm_servers_workloads_1s/canonical.csv   # relative to the data root
        step: 1min
        horizons: [30min, 1h]
        sequence_length: 60       # optional overrides: the model's (as above) and max_gap
      - name: spikes
        synthetic: recurring_spikes                     # training.synthetic_patterns
        days: 42
        step: 10min
        horizons: [1h]

A relative `trace` with no data root is read relative to the suite file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from core.settings import ConfigError, Duration, format_errors, read_yaml_mapping
from training.power.windows import Split
from training.synthetic_patterns import Pattern

SuiteModel = TypeVar("SuiteModel", bound=BaseModel)
CaseName = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.-]+$")]


def _distinct(values: tuple) -> tuple:
    if len(set(values)) < len(values):
        raise ValueError(f"each value once (a repeat measures the same thing twice): {list(values)}")
    return values


Seeds = Annotated[tuple[Annotated[int, Field(ge=0, lt=2**32)], ...], Field(min_length=1), AfterValidator(_distinct)]
"""Training seeds of a suite: distinct, 0 .. 2**32 - 1 (what numpy and LightGBM take)."""


class ModelKnobs(BaseModel):
    """Power forecaster settings that replace the service config's (None keeps it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sequence_length: PositiveInt | None = None
    epochs: PositiveInt | None = None
    hidden_size: PositiveInt | None = None
    learning_rate: PositiveFloat | None = None
    relative_power: bool | None = None
    power_input_challenger: bool | None = None

    def knobs(self) -> dict[str, int | float | bool]:
        return self.model_dump(include=set(ModelKnobs.model_fields), exclude_none=True)


class TraceCase(ModelKnobs):
    """A case's telemetry, in both suites: a CSV (`trace`) or a synthetic pattern, at one step."""

    name: CaseName
    trace: str | None = None
    synthetic: Pattern | None = None
    days: PositiveInt = 42  # synthetic only
    data_seed: int = Field(0, ge=0)  # synthetic only: the trace's own seed (the training seeds vary apart)
    step: Duration
    max_gap: Duration | None = None  # default: the config's, at least one step
    train_fraction: float | None = Field(None, gt=0.0, lt=1.0)
    split: Split | None = None  # default: the suite's

    @model_validator(mode="after")
    def _one_source(self) -> TraceCase:
        if (self.trace is None) == (self.synthetic is None):
            raise ValueError("give exactly one of trace (a CSV) or synthetic (a pattern)")
        ignored = [key for key in ("days", "data_seed") if key in self.model_fields_set]
        if self.trace is not None and ignored:  # a trace is read whole, as it is
            raise ValueError(f"{' and '.join(ignored)}: synthetic cases only (a trace is read whole)")
        if self.max_gap is not None and self.max_gap < self.step:
            raise ValueError(f"max_gap ({self.max_gap}s) must be at least step ({self.step}s)")
        return self

    def trace_file(self, root: Path) -> Path:
        """The case's CSV under `root` (SuiteFile.trace_root)."""
        if self.trace is None:
            raise ValueError(f"case {self.name} is synthetic: it has no trace file")
        return root / self.trace


class SuiteCase(TraceCase):
    """One trace at one step, backtested at every listed horizon."""

    horizons: Annotated[tuple[Duration, ...], Field(min_length=1), AfterValidator(_distinct)]

    @model_validator(mode="after")
    def _whole_steps(self) -> SuiteCase:
        for horizon in self.horizons:
            if horizon % self.step or horizon < self.step:
                raise ValueError(f"horizon {horizon}s is not a whole multiple of step {self.step}s")
        return self


class SuiteFile(ModelKnobs):
    """What both suite files hold: where the traces are, the training share, defaults for every case, the cases
    (each name once)."""

    data_root: str | None = None
    train_fraction: float = Field(0.8, gt=0.0, lt=1.0)
    split: Split = "series"
    cases: tuple[TraceCase, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> SuiteFile:
        check_unique_names(case.name for case in self.cases)
        return self

    def trace_root(self, suite_file: Path, data_root: str | None) -> Path:
        """Where the cases' traces are: `--data-root`, else the file's `data_root` (relative to the file), else
        the file's folder."""
        if data_root is not None:
            return Path(data_root)
        return suite_file.parent / self.data_root if self.data_root is not None else suite_file.parent


class Suite(SuiteFile):
    """The backtest suite file: its seeds and cases besides what every suite holds."""

    seeds: Seeds = (0, 1, 2)
    cases: tuple[SuiteCase, ...] = Field(min_length=1)


def check_unique_names(names: Iterable[str]) -> None:
    """A suite's case names, each once (ValueError naming the repeated ones)."""
    names = list(names)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"case names must be unique; repeated: {repeated}")


def load_suite_file(path: str | Path, model: type[SuiteModel], what: str = "suite file") -> SuiteModel:
    """Read and validate a suite file as `model`; ConfigError names the file, the key and the reason."""
    path = Path(path)
    data = read_yaml_mapping(path, what=what)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(str(path), exc)) from exc


def load_suite(path: str | Path) -> Suite:
    """Read and validate a backtest suite file."""
    return load_suite_file(path, Suite)


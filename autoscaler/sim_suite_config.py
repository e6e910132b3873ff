"""The simulation suite file: which traces, replayed as which demands, under which actuation delays and policy.

    data_root: ../data              # optional; relative to this file; `--data-root` overrides it
    policy: policy.simulation.yaml  # relative to this file: the policy every case runs
    seeds: [0]                      # training seeds of the forecaster (every case is replayed once per seed)
    train_fraction: 0.8
    split: series                   # optional: or time, one cut in time for all series (training.power.windows)
    margin: 10                      # reactive_margin: both thresholds lowered by this many points
    actuation_delays: [step, 10min] # for every case that gives none; `step` is the case's own step
    learning_rate: 0.01             # optional model overrides for every case, a case's own winning:
                                    # sequence_length, epochs, hidden_size, learning_rate,
                                    # relative_power, power_input_challenger
    cases:
      - name: upm_workloads
        trace: upm_servers_workloads_1s/canonical.csv   # relative to the data root
        step: 1min
        sequence_length: 60
        transforms:                 # dynamic demand = demand_scale * max(trace - demand_offset, 0)
          - {name: x40, idle_watts: 300, demand_scale: 40, demand_offset: 150}
      - name: spikes
        synthetic: recurring_spikes # training.synthetic_patterns
        days: 42
        step: 10min
        transforms: [{name: x100, idle_watts: 300, demand_scale: 100, demand_offset: 35}]

A relative `trace` with no data root is read relative to the suite file. One forecaster is trained per case and
seed (for the longest risk window its delays need) and replayed under every transform and delay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autoscaler.trace_replay import delay_problem
from core.settings import Duration
from training.suite_config import CaseName, Seeds, SuiteFile, TraceCase, load_suite_file

Watts = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Delay = Literal["step"] | Duration


class DemandTransform(BaseModel):
    """How trace power becomes the workload's demand (autoscaler.trace_replay.DemandModel)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: CaseName
    idle_watts: Watts = 100.0
    demand_scale: float = Field(1.0, gt=0, allow_inf_nan=False)
    demand_offset: Watts = 0.0


class SimCase(TraceCase):
    """One trace at one step, replayed under every transform and delay."""

    transforms: tuple[DemandTransform, ...] = Field(min_length=1)
    actuation_delays: tuple[Delay, ...] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _unique_transforms(self) -> SimCase:
        names = [t.name for t in self.transforms]
        if len(set(names)) != len(names):
            raise ValueError(f"transform names must be unique within a case; got {names}")
        return self

    def delays(self, default: tuple[Delay, ...]) -> tuple[int, ...]:
        """The case's actuation delays in seconds (`step` is its step), each once, in the order given."""
        seconds = [self.step if d == "step" else d for d in (self.actuation_delays or default)]
        return tuple(dict.fromkeys(seconds))


class SimSuite(SuiteFile):
    """The simulation suite file: its policy, seeds, margin, delays and cases besides what every suite holds."""

    policy: str = Field(min_length=1)
    seeds: Seeds = (0,)
    margin: float = Field(10.0, ge=0, allow_inf_nan=False)
    actuation_delays: tuple[Delay, ...] = Field(("step", 600), min_length=1)
    cases: tuple[SimCase, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _delays_on_steps(self) -> SimSuite:
        for case in self.cases:
            for delay in case.delays(self.actuation_delays):
                if problem := delay_problem(case.step, delay):
                    raise ValueError(f"case {case.name!r}: actuation delay {problem}")
        return self

    def policy_file(self, suite_file: Path) -> Path:
        """The policy every case runs (relative to the suite file)."""
        return suite_file.parent / self.policy


def load_sim_suite(path: str | Path) -> SimSuite:
    """Read and validate a simulation suite file; ConfigError names the file, the key and the reason."""
    return load_suite_file(path, SimSuite, what="simulation suite file")


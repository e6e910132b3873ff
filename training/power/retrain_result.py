"""What a retraining did: the version it registered, its holdout scores, and whether (and why) it was activated."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, computed_field, model_validator

from training.power.holdout import HoldoutMetrics, Incumbent

Decision = Literal["no_incumbent", "beat_incumbent", "did_not_beat", "forced", "not_requested"]
ACTIVATING: frozenset[Decision] = frozenset({"no_incumbent", "beat_incumbent", "forced"})
_REASONS: dict[Decision, str] = {"no_incumbent": "no comparable active model", "forced": "activation forced",
                                 "not_requested": "activation not requested"}


class TrainingFacts(BaseModel):
    """How the weights were trained (recorded in the registry's metadata)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int
    best_epoch: int
    epochs_run: int
    duration_s: float
    num_workers: int
    use_gpu: bool
    holdout_fraction: float


class RetrainResult(BaseModel):
    """The registered version and the activation decision, with the scores it rests on."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_id: str
    version: int
    decision: Decision
    metrics: HoldoutMetrics
    incumbent: Incumbent | None = None  # the active version scored on the same holdout, when comparable
    synthetic: bool  # trained on generated data only (training.synthetic): for demos
    training: TrainingFacts

    @computed_field
    @property
    def activated(self) -> bool:
        return self.decision in ACTIVATING

    @computed_field
    @property
    def reason(self) -> str:
        """The activation decision in words."""
        if self.incumbent is None or self.decision not in ("beat_incumbent", "did_not_beat"):
            return _REASONS[self.decision]
        verb = "beat" if self.decision == "beat_incumbent" else "did not beat"
        return (f"{verb} active version {self.incumbent.version}: holdout MAE {self.metrics.mae:.2f} W "
                f"vs {self.incumbent.mae:.2f} W")

    @model_validator(mode="after")
    def _compared_needs_incumbent(self) -> RetrainResult:
        if self.incumbent is None and self.decision in ("beat_incumbent", "did_not_beat"):
            raise ValueError(f"decision {self.decision!r} needs the incumbent it was compared with")
        return self

    def summary_lines(self) -> list[str]:
        """The outcome as `train_lstm` reports it, one line per fact."""
        m = self.metrics
        label = " (trained on SYNTHETIC data: for demos only)" if self.synthetic else ""
        lines = [f"registered {self.model_id} version {self.version}{label}; holdout MAE {m.mae:.2f} W "
                 f"(last value {m.last_value_mae:.2f} W), {m.nominal_coverage:.0%} interval covers {m.coverage:.1%}, "
                 f"mean confidence {m.mean_confidence:.3f} vs hit rate {m.hit_rate:.3f}"]
        if self.incumbent is not None:
            kept = "activated" if self.activated else f"NOT activated (kept version {self.incumbent.version})"
            lines.append(f"active version {self.incumbent.version} scores {self.incumbent.mae:.2f} W on the same "
                         f"holdout: {kept}")
        elif self.activated:
            lines.append("activated (no model was active)")
        return lines

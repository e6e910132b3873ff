"""What a retraining did: the version it registered, its holdout scores, and whether (and why) it was activated."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, computed_field, model_validator

from core.durations import format_duration
from core.registry import ActivationFailed, ModelRegistry
from training.metrics import COVERAGE_TOLERANCE
from training.power.holdout import HoldoutMetrics, Incomparable, Incumbent

logger = logging.getLogger(__name__)

Decision = Literal["no_incumbent", "beat_incumbent", "did_not_beat", "not_comparable", "forced", "not_requested",
                   "champion_changed", "activation_failed"]
ACTIVATING: frozenset[Decision] = frozenset({"no_incumbent", "beat_incumbent", "forced"})
CHAMPION_CHANGED = ("another version was activated while this one trained; registered without activation (the next "
                    "retraining compares with it)")
ACTIVATION_FAILED = ("it won or was forced, but its activation could not be written (the registry's files, see the "
                     "log); registered without activation (the next retraining compares with the served version)")
_REASONS: dict[Decision, str] = {"no_incumbent": "no comparable active model", "forced": "activation forced",
                                 "not_requested": "activation not requested", "champion_changed": CHAMPION_CHANGED,
                                 "activation_failed": ACTIVATION_FAILED}


def promote(registry: ModelRegistry, model_id: str, version: int, decision: Decision,
            compared: int | None) -> Decision:
    """Activate a published version that won (or met no served version) unless the served version is no longer
    `compared`, the one it was scored against: then it stays registered without activation ("champion_changed"),
    as it does when the activation cannot be written ("activation_failed": the version is registered all the same,
    so the retraining has not failed). A forced activation happens on publishing (when it fails:
    `activation_failed`); other decisions activate nothing."""
    if decision not in ("no_incumbent", "beat_incumbent"):
        return decision
    try:
        return decision if registry.promote(model_id, version, over=compared) else "champion_changed"
    except OSError:
        logger.warning("%s version %d registered, but its activation could not be written", model_id, version,
                       exc_info=True)
        return decision if _served_all_the_same(registry, model_id, version) else "activation_failed"


def _served_all_the_same(registry: ModelRegistry, model_id: str, version: int) -> bool:
    """Whether the replicas serve `version` though its activation failed: a model's first version is served as its
    latest, with no active one named (False where that cannot be read either)."""
    try:
        return registry.served_version(model_id) == version
    except OSError:
        return False


def activation_failed(failed: ActivationFailed) -> tuple[int, Decision]:
    """The version a publishing registered without its (forced) activation, and the decision "activation_failed";
    a warning with the traceback."""
    meta = failed.metadata
    logger.warning("%s version %d registered, but its activation could not be written", meta.model_id, meta.version,
                   exc_info=failed)
    return meta.version, "activation_failed"


class TrainingFacts(BaseModel):
    """How the weights were trained (recorded in the registry's metadata)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int
    best_epoch: int
    epochs_run: int
    refit_epochs: int = 0  # epochs the best weights then trained on the whole training part (training.power.fit)
    duration_s: float
    num_workers: int
    use_gpu: bool
    holdout_fraction: float
    worker_nodes: list[str] = []  # the Ray node id each training worker ran on, in rank order
    served: str = "lstm"  # what the service answers with (training.power.blend): lstm, lightgbm or a blend
    gbm_half_life_steps: float | None = None  # the LightGBM partner's recency half-life (training.power.recency)
    lstm_half_life_steps: float | None = None  # the recency half-life the LSTM's samples were drawn with
    lstm_relative_power: bool = False  # the LSTM reads power relative to the window's last value (PowerLSTM)


class RetrainResult(BaseModel):
    """The registered version and the activation decision, with the scores it rests on."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_id: str
    version: int
    decision: Decision
    metrics: HoldoutMetrics
    incumbent: Incumbent | None = None  # the active version scored on the same holdout, when comparable
    incomparable: Incomparable | None = None  # the active version, when it could not be compared fairly
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
        incumbent, comparison = self.incumbent, ""
        if incumbent is not None:
            where = f" on the same holdout {_common(incumbent)}" if incumbent.resampled else ""
            stand_in = ("" if incumbent.scored_version is None else
                        f" (it cannot be loaded: version {incumbent.scored_version}, served in its place, was scored)")
            comparison = f"{stand_in}{where}: holdout MAE {incumbent.challenger_mae:.2f} W vs {incumbent.mae:.2f} W"
        return describe_decision(self.decision, _REASONS, incumbent and incumbent.version, comparison,
                                 self.incomparable and (self.incomparable.version, self.incomparable.why),
                                 " (force the activation to serve it anyway)")

    def _calibration_note(self) -> list[str]:
        """A warning when the holdout says the static intervals are off: promotion rests on MAE alone (a challenger
        whose intervals the online correction fixes in service should not lose to a less accurate champion)."""
        m = self.metrics
        if abs(m.coverage - m.nominal_coverage) <= COVERAGE_TOLERANCE:
            return []
        return [f"note: its {m.nominal_coverage:.0%} interval covers {m.coverage:.1%} of the holdout, outside "
                f"{m.nominal_coverage:.0%} +- {COVERAGE_TOLERANCE:.0%}: only forecasts from the telemetry store are "
                f"corrected online from the nodes' outcomes"]

    @model_validator(mode="after")
    def _decision_has_its_grounds(self) -> RetrainResult:
        if self.incumbent is None and self.decision in ("beat_incumbent", "did_not_beat"):
            raise ValueError(f"decision {self.decision!r} needs the incumbent it was compared with")
        if self.incomparable is None and self.decision == "not_comparable":
            raise ValueError("decision 'not_comparable' needs the active version and why")
        if self.incumbent is not None and self.incomparable is not None:
            raise ValueError("the active version was either compared or not")
        return self

    def summary_lines(self, *, cli: bool = True) -> list[str]:
        """The outcome as `train_lstm` reports it, one line per fact; `cli=False` (an API or scheduled attempt's
        record) leaves out what only the command line can do."""
        m = self.metrics
        label = " (trained on SYNTHETIC data: for demos only)" if self.synthetic else ""
        lines = [f"registered {self.model_id} version {self.version}{label}; holdout MAE {m.mae:.2f} W "
                 f"(last value {m.last_value_mae:.2f} W), {m.nominal_coverage:.0%} interval covers {m.coverage:.1%}, "
                 f"mean confidence {m.mean_confidence:.3f} vs hit rate {m.hit_rate:.3f}", *self._calibration_note()]
        if self.incumbent is not None:
            best = self.incumbent
            kept = "activated" if self.activated else f"NOT activated (kept version {best.version})"
            where = (f"vs {best.challenger_mae:.2f} W for this version on the same holdout {_common(best)}"
                     if best.resampled else "on the same holdout")
            scored = (f"active version {best.version} scores" if best.scored_version is None else
                      f"active version {best.version} cannot be loaded; version {best.scored_version}, served in "
                      f"its place, scores")
            lines.append(f"{scored} {best.mae:.2f} W {where}: {kept}")
        elif self.incomparable is not None:
            other = self.incomparable
            kept = "activated (forced)" if self.activated else f"NOT activated (kept version {other.version})"
            hint = "; --force-activate serves it anyway" if cli and self.decision == "not_comparable" else ""
            lines.append(f"active version {other.version} could not be compared: {other.why}: {kept}{hint}")
        elif self.activated:
            lines.append("activated (no model was active)")
        return lines


def _common(incumbent: Incumbent) -> str:
    return f"at a {format_duration(incumbent.step_s)} step over {incumbent.lead_steps} common lead(s)"


def describe_decision(decision: Decision, reasons: Mapping[Decision, str], incumbent_version: int | None,
                      comparison: str, incomparable: tuple[int, str] | None, hint: str = "") -> str:
    """A promotion decision in words, for any model: `comparison` follows "beat active version N" (where and by
    how much), `incomparable` is (version, why) when the active version could not be compared fairly."""
    if decision == "not_comparable" and incomparable is not None:
        return (f"not compared with active version {incomparable[0]}: {incomparable[1]}; registered without "
                f"activation{hint}")
    if incumbent_version is None or decision not in ("beat_incumbent", "did_not_beat"):
        return reasons[decision]
    verb = "beat" if decision == "beat_incumbent" else "did not beat"
    return f"{verb} active version {incumbent_version}{comparison}"

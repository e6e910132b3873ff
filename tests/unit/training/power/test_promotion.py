"""Promotion never blind: a new version of a finer step or a longer horizon than the active one's is compared on the
same holdout at the active one's step over its leads; one that does not answer every request the active one answers
(a coarser step, a shorter horizon) or cannot be compared is registered without activation, with the reason.
And a minimum of training: too few epochs, or a served horizon under two steps, is refused before training.

Ray Train is replaced by tests.fakes.trainer (the `shift` fixture in conftest.py); the rest is the real code.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import training.power.retrain as retrain_module
from core.telemetry_csv import validate_telemetry
from tests.fakes.trainer import untrained
from training.power.common_leads import NotComparable, score_common
from training.power.dataset import prepare
from training.power.features import POWER_CHANGE_COLUMN
from training.power.forecaster import PowerForecaster
from training.power.holdout import Incumbent, holdout_spans
from training.power.retrain import retrain_power
from training.power.retrain_spec import ModelOverrides, RetrainRefused, RetrainSpec
from training.power.windows import Role
from training.retrain_attempt import ChampionScore, power_outcome
from training.settings import TrainingConfig

SMALL = TrainingConfig.model_validate({
    "predictor": {"step": "2min", "prediction_horizon": "20min"},
    "models": {"power_predictor": {"sequence_length": 15, "hidden_size": 8, "num_layers": 1}},
})
GOOD, BAD = 0.0, 5.0
COARSER = ModelOverrides(step="4min", horizon="20min")
SHORTER = ModelOverrides(horizon="10min")
FINER = ModelOverrides(step="1min", horizon="20min")
LONGER = ModelOverrides(horizon="40min")


def unwritable(*args, **kwargs):
    """A registry write that fails (ACTIVE on a volume with an I/O error)."""
    raise OSError(5, "Input/output error")


def spec(**fields) -> RetrainSpec:
    return RetrainSpec(config=SMALL, verbose=False, **fields)


def champion(sample, registry, shift, units: float, **fields) -> None:
    shift(units)
    assert retrain_power(sample, spec(**fields), registry=registry).activated


def test_a_forecaster_whose_held_out_error_is_no_number_is_not_registered_and_one_active_gives_way(
        sample, registry, shift):
    """Regression: diverged weights (a NaN MAE) were activated as the first version; and an active version scoring NaN
    could never be beaten (x <= NaN is False)."""
    shift(float("nan"))
    with pytest.raises(retrain_module.TrainingDiverged, match="not a number"):
        retrain_power(sample, spec(), registry=registry)
    assert registry.versions("power_lstm") == []
    diverged = Incumbent(version=1, mae=float("nan"), challenger_mae=3.0, step_s=120, lead_steps=10, points=50)
    assert retrain_module.decide("auto", diverged) == "beat_incumbent"
    assert retrain_module.decide("auto", diverged.model_copy(update={"mae": 2.0})) == "did_not_beat"


def test_weights_that_diverged_in_training_are_refused_before_the_served_blend_is_chosen(sample, registry,
                                                                                         monkeypatch):
    """Regression: with a LightGBM partner fitted, an LSTM whose validation error is not a number made the choice of
    the served blend end in a StopIteration traceback (a NaN best score compares as no better than any)."""
    diverged = untrained(float("nan"))
    monkeypatch.setattr("training.power.dataset.train_power_lstm", lambda *args, **kwargs: dataclasses.replace(
        diverged(*args, **kwargs), best_val_mae_watts=float("nan")))
    with pytest.raises(retrain_module.TrainingDiverged, match="validation error is not a number"):
        retrain_power(sample, spec(), registry=registry)
    assert registry.versions("power_lstm") == []


def test_a_version_trained_on_a_synthetic_trace_never_replaces_one_trained_on_real_telemetry(sample, registry, shift):
    """Regression: `train_lstm --data synthetic.csv` against the service's registry (the README's Training section
    makes one) scored the active version on generated nodes it never saw, and the new version, as good there,
    replaced the model of the real servers. As the cost model does, it is registered without activation."""
    champion(sample, registry, shift, GOOD)
    generated = sample.assign(node_id="syn-" + sample["node_id"].astype(str))
    result = retrain_power(generated, spec(), registry=registry)
    assert result.decision == "not_comparable" and not result.activated
    assert "SYNTHETIC" in result.incomparable.why and registry.active_version("power_lstm") == 1
    real_again = retrain_power(sample, spec(), registry=registry)  # the other way round they are compared
    assert real_again.incumbent is not None and real_again.incumbent.version == 1


@pytest.mark.parametrize("overrides", [FINER, LONGER], ids=["finer-step", "longer-horizon"])
def test_a_worse_version_of_another_step_or_horizon_is_not_activated(sample, registry, shift, overrides):
    champion(sample, registry, shift, GOOD)
    shift(BAD)
    result = retrain_power(sample, spec(overrides=overrides), registry=registry)
    assert (result.version, result.decision, result.activated) == (2, "did_not_beat", False)
    best = result.incumbent
    assert best is not None and best.resampled and best.version == 1 and best.mae < best.challenger_mae
    assert (best.step_s, best.lead_steps) == (120, 10)  # the active version's step and leads
    assert result.reason.startswith("did not beat active version 1 on the same holdout at a ")
    assert result.summary_lines()[-1].endswith(": NOT activated (kept version 1)")
    assert registry.active_version("power_lstm") == 1


@pytest.mark.parametrize("overrides", [FINER, LONGER], ids=["finer-step", "longer-horizon"])
def test_a_better_version_of_another_step_or_horizon_is_activated(sample, registry, shift, overrides):
    champion(sample, registry, shift, BAD)
    shift(GOOD)
    result = retrain_power(sample, spec(overrides=overrides), registry=registry)
    assert (result.decision, result.activated) == ("beat_incumbent", True)
    assert result.incumbent is not None and result.incumbent.challenger_mae < result.incumbent.mae
    assert registry.active_version("power_lstm") == 2


@pytest.mark.parametrize("overrides", [COARSER, SHORTER], ids=["coarser-step", "shorter-horizon"])
def test_a_better_version_that_answers_less_than_the_active_one_is_not_activated(sample, registry, shift, overrides):
    """Regression: an API retrain with `prediction_horizon: 30m` beat the 1-hour model over its 30 leads and was
    activated; the service then routed the hour's requests (the seed's example) to the hourly model."""
    champion(sample, registry, shift, BAD)
    shift(GOOD)
    result = retrain_power(sample, spec(overrides=overrides), registry=registry)
    assert (result.decision, result.activated) == ("not_comparable", False)
    assert result.incomparable is not None and result.incomparable.why.endswith(
        "the active version 20min at 2min steps: in its place, requests the active version answers would go to "
        "another model")
    assert registry.active_version("power_lstm") == 1


def test_an_incomparable_version_is_registered_not_activated_with_the_reason(sample, registry, shift):
    champion(sample, registry, shift, BAD, overrides=ModelOverrides(step="3min", horizon="21min"))
    shift(GOOD)
    result = retrain_power(sample, spec(overrides=ModelOverrides(horizon="22min")), registry=registry)
    assert (result.version, result.decision, result.activated) == (2, "not_comparable", False)
    assert result.incumbent is None and result.incomparable is not None
    assert result.incomparable.version == 1 and result.incomparable.why == "steps 2min and 3min do not nest"
    assert result.reason == ("not compared with active version 1: steps 2min and 3min do not nest; registered "
                             "without activation (force the activation to serve it anyway)")
    assert result.summary_lines()[-1] == ("active version 1 could not be compared: steps 2min and 3min do not "
                                          "nest: NOT activated (kept version 1); --force-activate serves it anyway")
    # an API or scheduled attempt's record: no command-line flag to follow
    assert power_outcome(result, registry, cli=False).message.endswith("do not nest: NOT activated (kept version 1)")
    assert registry.versions("power_lstm") == [1, 2] and registry.active_version("power_lstm") == 1


def test_a_winner_compared_with_a_champion_replaced_meanwhile_is_not_activated(sample, registry, shift,
                                                                               monkeypatch):
    """Regression: a retraining compared with version 1 activated its own version after another retraining had
    activated version 2 meanwhile, replacing a version it was never compared with."""
    champion(sample, registry, shift, BAD)
    publish = retrain_module._publish

    def another_retraining_finishes_first(*args, **kwargs):
        publish(*args, **{**kwargs, "activate": True})  # version 2, activated while version 3 trained
        return publish(*args, **kwargs)

    monkeypatch.setattr(retrain_module, "_publish", another_retraining_finishes_first)
    shift(GOOD)
    result = retrain_power(sample, spec(), registry=registry)
    assert (result.version, result.decision, result.activated) == (3, "champion_changed", False)
    assert result.incumbent is not None and result.incumbent.version == 1  # what it was compared with
    assert "another version was activated while this one trained" in result.reason
    assert registry.active_version("power_lstm") == 2


def test_a_winner_whose_activation_cannot_be_written_is_registered_and_says_so(sample, registry, shift,
                                                                               monkeypatch, caplog):
    """Regression: an I/O error writing ACTIVE failed the whole retraining although its version was registered."""
    champion(sample, registry, shift, BAD)
    monkeypatch.setattr(type(registry), "promote", unwritable)
    shift(GOOD)
    result = retrain_power(sample, spec(), registry=registry)
    assert (result.version, result.decision, result.activated) == (2, "activation_failed", False)
    assert "its activation could not be written" in result.reason
    assert registry.versions("power_lstm") == [1, 2] and registry.active_version("power_lstm") == 1
    assert any(r.exc_info and "activation could not be written" in r.getMessage() for r in caplog.records)


def test_without_an_active_pointer_the_served_latest_version_is_the_incumbent(sample, registry, shift):
    """Regression: with no ACTIVE pointer (a registry from before it) the service serves the latest version, yet
    the next retraining met "no incumbent" and was activated without any comparison."""
    shift(GOOD)
    first = retrain_power(sample, spec(), registry=registry)
    assert first.decision == "no_incumbent"
    (registry.root / "power_lstm" / "ACTIVE").unlink()
    assert registry.active_version("power_lstm") is None and registry.served_version("power_lstm") == 1
    shift(BAD)
    result = retrain_power(sample, spec(), registry=registry)
    assert (result.decision, result.activated) == ("did_not_beat", False)
    assert result.incumbent is not None and result.incumbent.version == 1
    assert registry.served_version("power_lstm") == 1  # pinned: version 2 is not served for being the latest


def test_a_first_version_trained_without_activation_is_not_served_and_the_next_one_is_activated(sample, registry,
                                                                                               shift):
    """`train_lstm --no-activate` on an empty registry: nothing is served (it was, for being the only version), so
    the next retraining has no incumbent to beat."""
    shift(GOOD)
    first = retrain_power(sample, spec(activation="never"), registry=registry)
    assert first.decision == "not_requested" and registry.served_version("power_lstm") is None
    result = retrain_power(sample, spec(), registry=registry)
    assert (result.decision, result.activated) == ("no_incumbent", True)
    assert registry.served_version("power_lstm") == 2


def test_an_unreadable_active_model_is_not_replaced_blindly(sample, registry, shift):
    champion(sample, registry, shift, GOOD)
    folder, _ = registry.get("power_lstm", 1)
    (folder / "architecture.json").unlink()
    result = retrain_power(sample, spec(), registry=registry)
    assert (result.decision, result.activated) == ("not_comparable", False)
    assert result.incomparable is not None and result.incomparable.why.startswith("it cannot be loaded (")
    assert str(folder) not in result.reason  # no paths in what the API shows
    assert registry.active_version("power_lstm") == 1


def test_recent_data_too_short_for_the_active_models_window_is_not_comparable(sample, registry, shift):
    shift(GOOD)
    model = SMALL.models.power_predictor.model_copy(update={"sequence_length": 60})
    long_window = SMALL.model_copy(update={"models": SMALL.models.model_copy(update={"power_predictor": model})})
    assert retrain_power(sample, RetrainSpec(config=long_window, verbose=False), registry=registry).activated
    last = sample.groupby("node_id")["timestamp"].transform("max")
    recent = sample[sample["timestamp"] > last - pd.Timedelta(minutes=90)]  # 45 steps a series
    result = retrain_power(recent, spec(), registry=registry)
    assert result.decision == "not_comparable" and result.incomparable is not None
    assert result.incomparable.why == "the holdout it never trained on is too short for a window of 60 steps"
    assert registry.active_version("power_lstm") == 1


def with_window(steps: int) -> TrainingConfig:
    model = SMALL.models.power_predictor.model_copy(update={"sequence_length": steps})
    return SMALL.model_copy(update={"models": SMALL.models.model_copy(update={"power_predictor": model})})


def test_versions_with_other_input_windows_are_scored_on_the_same_points(sample, registry, shift):
    """A 20-min gap splits each series: fewer holdout origins of its short last segment have 32 steps before them
    than 15, so the two versions' own holdouts differ; the comparison scores both on the 32-step windows'."""
    last = sample.groupby("node_id")["timestamp"].transform("max")
    gapped = sample[(sample["timestamp"] <= last - pd.Timedelta(minutes=100))
                    | (sample["timestamp"] > last - pd.Timedelta(minutes=80))]
    shift(GOOD)
    assert retrain_power(sample, RetrainSpec(config=with_window(32), verbose=False), registry=registry).activated
    result = retrain_power(gapped, spec(), registry=registry)
    assert result.incumbent is not None and not result.incumbent.resampled
    common = prepare(gapped, step_s=120, max_gap_s=600, features=SMALL.features, sequence_length=32, horizon=10,
                     train_fraction=0.9).windows(Role.TEST)
    assert result.incumbent.points == int(common.mask.sum()) < result.metrics.holdout_points
    assert result.incumbent.challenger_mae != pytest.approx(result.metrics.mae)  # not its own holdout's MAE


def test_forced_activation_serves_an_incomparable_version(sample, registry, shift):
    champion(sample, registry, shift, GOOD, overrides=ModelOverrides(step="3min", horizon="21min"))
    shift(BAD)
    result = retrain_power(sample, spec(overrides=ModelOverrides(horizon="22min"), activation="force"),
                           registry=registry)
    assert (result.decision, result.activated, result.reason) == ("forced", True, "activation forced")
    assert result.incomparable is not None and result.summary_lines()[-1] == (
        "active version 1 could not be compared: steps 2min and 3min do not nest: activated (forced)")
    assert registry.active_version("power_lstm") == 2


def test_a_first_version_whose_activation_cannot_be_written_is_recorded_as_the_served_one_it_is(
        sample, registry, shift, monkeypatch):
    """Regression: recorded as not activated, while replicas served it as the model's latest (no ACTIVE file)."""
    monkeypatch.setattr(type(registry), "promote", unwritable)
    shift(GOOD)
    result = retrain_power(sample, spec(), registry=registry)
    assert (result.version, result.decision, result.activated) == (1, "no_incumbent", True)
    assert registry.served_version("power_lstm") == 1


def test_a_forced_activation_that_cannot_be_written_leaves_the_version_registered(sample, registry, shift,
                                                                                  monkeypatch):
    """Regression: the publication's failed activation failed the retraining although its version was registered."""
    champion(sample, registry, shift, GOOD)
    shift(BAD)

    def unwritable(*_args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(type(registry), "activate", unwritable)
    result = retrain_power(sample, spec(activation="force"), registry=registry)
    assert (result.version, result.decision, result.activated) == (2, "activation_failed", False)
    assert registry.versions("power_lstm") == [1, 2] and registry.active_version("power_lstm") == 1


def test_the_common_score_compares_a_model_with_itself_evenly(sample, registry, shift):
    champion(sample, registry, shift, BAD, overrides=COARSER)
    model = PowerForecaster.load(registry.get("power_lstm")[0])
    prepared = prepare(sample, step_s=240, max_gap_s=300, features=SMALL.features, sequence_length=15, horizon=5,
                       train_fraction=0.9)
    seen = []
    experts = model.experts
    model.experts = lambda inputs, *args, **kwargs: seen.append(np.array(inputs)) or experts(inputs, *args, **kwargs)
    score = score_common(model, model, sample, holdout_spans(prepared), max_gap_s=300)
    assert score.mae[0] == score.mae[1] and (score.step_s, score.lead_steps) == (240, 5) and score.points > 0
    # regression: its windows carried the change from the step before their first, which no served window has
    assert seen and all((inputs[:, 0, POWER_CHANGE_COLUMN] == 0).all() for inputs in seen)
    assert any((inputs[:, 1:, POWER_CHANGE_COLUMN] != 0).any() for inputs in seen)
    with pytest.raises(NotComparable, match="no holdout point"):
        score_common(model, model, sample, {}, max_gap_s=300)


def test_each_model_is_scored_on_windows_filled_over_its_own_gaps(sample, registry, shift):
    """Regression: both models' windows were filled over the challenger's `max_gap`; a finer challenger's shorter gap
    split the active model's series where it trains and is served filled, so it lost windows (and its held-forward
    inputs) on the score that decides promotion."""
    champion(sample, registry, shift, BAD, overrides=COARSER)
    model = PowerForecaster.load(registry.get("power_lstm")[0])
    assert model.pipeline.max_gap_s == 1200  # 5 of its 4-minute steps
    prepared = prepare(sample, step_s=240, max_gap_s=1200, features=SMALL.features, sequence_length=15, horizon=5,
                       train_fraction=0.9)
    spans = holdout_spans(prepared)
    node, (start, _) = next(iter(spans.items()))
    gap_from = pd.Timestamp(start, unit="s", tz="UTC") - pd.Timedelta(minutes=20)  # 12 min, inside its windows
    gapped = sample[~((sample["node_id"] == node) & (sample["timestamp"] >= gap_from)
                      & (sample["timestamp"] < gap_from + pd.Timedelta(minutes=12)))]
    own = score_common(model, model, gapped, spans, max_gap_s=1200)
    assert score_common(model, model, gapped, spans, max_gap_s=300) == own
    assert own.points == score_common(model, model, sample, spans, max_gap_s=1200).points  # filled, as served


@pytest.mark.parametrize("epochs", [1, 3])
def test_too_few_epochs_are_refused_naming_the_field(sample, registry, epochs):
    with pytest.raises(RetrainRefused, match=rf"^epochs: {epochs} is below the minimum of 4 training epochs "
                                             r"\(models.power_predictor.min_epochs\)$") as caught:
        retrain_power(sample, spec(overrides=ModelOverrides(epochs=epochs)), registry=registry)
    assert caught.value.field == "epochs"
    assert not registry.root.exists()


def test_the_epochs_floor_is_a_setting(sample, registry, shift):
    shift(GOOD)
    relaxed = TrainingConfig.model_validate({**SMALL.model_dump(), "models": {
        "power_predictor": {**SMALL.models.power_predictor.model_dump(), "min_epochs": 1}}})
    result = retrain_power(sample, RetrainSpec(config=relaxed, overrides=ModelOverrides(epochs=1), verbose=False),
                           registry=registry)
    assert result.version == 1


def test_a_served_horizon_under_two_steps_is_refused(sample, registry, shift):
    one_step = ModelOverrides(horizon="2min")
    with pytest.raises(RetrainRefused, match=r"^prediction_horizon: 2min is 1 step of 2min; a model that may be "
                                             r"served forecasts at least 2 steps") as caught:
        retrain_power(sample, spec(overrides=one_step), registry=registry)
    assert caught.value.field == "prediction_horizon" and not registry.root.exists()
    shift(GOOD)
    assert retrain_power(sample, spec(overrides=one_step, activation="never"), registry=registry).version == 1


def test_the_active_version_is_scored_only_where_it_never_trained(sample, registry, shift):
    """Trained with a 5 % holdout, the active version saw the first half of the new version's 10 % holdout: those
    points flattered it. Both are now scored on the last 5 % only; and on data it trained on entirely, there is
    nothing fair to compare."""
    champion(sample, registry, shift, GOOD, holdout_fraction=0.05)
    result = retrain_power(sample, spec(), registry=registry)
    unseen = prepare(sample, step_s=120, max_gap_s=600, features=SMALL.features, sequence_length=15, horizon=10,
                     train_fraction=0.95).windows(Role.TEST)
    assert result.incumbent is not None
    assert result.incumbent.points == int(unseen.mask.sum()) < result.metrics.holdout_points
    assert len(result.metrics.mae_by_lead) == 10 and None not in result.metrics.mae_by_lead
    middle = sample.groupby("node_id")["timestamp"].transform(lambda times: times.quantile(0.6))
    trained_on_all = retrain_power(sample[sample["timestamp"] <= middle], spec(), registry=registry)
    assert trained_on_all.incomparable is not None
    assert trained_on_all.incomparable.why.startswith("it trained on all of this holdout's data")


def test_a_version_is_not_promoted_on_a_handful_of_points(sample, registry, shift):
    """Regression: only a holdout with no point at all was incomparable. The active version held out 2 %: of the new
    version's 10 % it never trained on 60 points, six forecasts of 10 leads; a worse version could win there by
    chance (a tie goes to it)."""
    champion(sample, registry, shift, GOOD, holdout_fraction=0.02)
    shift(BAD)
    result = retrain_power(sample, spec(), registry=registry)
    assert result.decision == "not_comparable" and not result.activated
    assert result.incomparable.why.startswith("only 60 holdout points it never trained on, fewer than 10 forecasts")


def test_an_unreadable_active_model_is_scored_by_the_version_replicas_serve_in_its_place(sample, registry, shift):
    """Regression: an active version that cannot be loaded made every retraining 'not_comparable', although the
    replicas serve the newest formerly served version that loads (deployments.registry_follower)."""
    champion(sample, registry, shift, GOOD)
    champion(sample, registry, shift, GOOD, activation="force")
    folder, _ = registry.get("power_lstm", 2)
    (folder / "architecture.json").unlink()
    shift(BAD)
    result = retrain_power(sample, spec(), registry=registry)
    assert (result.decision, result.activated) == ("did_not_beat", False)
    assert (result.incumbent.version, result.incumbent.scored_version) == (2, 1)
    assert any("active version 2 cannot be loaded; version 1, served in its place, scores" in line
               for line in result.summary_lines())
    # regression: the attempt's record named the unloadable active version as the champion, beside the MAE of the
    # version scored in its place
    scored = result.incumbent
    assert power_outcome(result, registry).champion == ChampionScore(
        version=1, mae=scored.mae, challenger_mae=scored.challenger_mae, unloadable_active_version=2)
    assert result.reason.startswith("did not beat active version 2 (it cannot be loaded: version 1, served in its "
                                    "place, was scored): holdout MAE ")
    shift(GOOD)
    better = retrain_power(sample, spec(), registry=registry)
    assert (better.decision, better.activated) == ("beat_incumbent", True)
    assert registry.active_version("power_lstm") == better.version
    assert power_outcome(better, registry).champion.unloadable_active_version == 2


def test_an_active_model_a_storage_error_keeps_from_loading_is_not_replaced_by_an_older_one_s_score(
        sample, registry, shift, monkeypatch):
    """Regression: a passing read error (EIO on a network volume) on the active version's files was taken for a
    corrupt version, so the gate scored the version before it, and a challenger worse than the active version could
    replace it for good."""
    import errno

    import training.power.forecaster as forecaster_module

    champion(sample, registry, shift, BAD)
    champion(sample, registry, shift, GOOD, activation="force")
    real_load = forecaster_module.torch.load

    def flaky(path, *args, **kwargs):
        if "/power_lstm/2/" in str(path):
            raise OSError(errno.EIO, "Input/output error")
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(forecaster_module.torch, "load", flaky)
    shift(BAD)  # worse than version 2, as good as version 1
    result = retrain_power(sample, spec(), registry=registry)
    assert (result.decision, result.activated) == ("not_comparable", False)
    assert result.incomparable.why == "it cannot be loaded (ArtifactUnreadable; details in the log)"
    assert registry.active_version("power_lstm") == 2


def test_the_common_truth_lays_out_only_the_holdout_s_bins():
    """Regression: the bins ran from a series' first sample to its last, so one mistyped year (2001 among 2025)
    laid out 12.6 M bins at a 60 s step before the holdout's few were kept."""
    from training.power.common_leads import _truth

    start = pd.Timestamp("2025-03-01", tz="UTC")
    rows = [{"timestamp": start + pd.Timedelta(minutes=m), "node_id": "n1", "power_watts": 100.0 + m}
            for m in range(120)]
    rows.append({"timestamp": pd.Timestamp("2001-03-01", tz="UTC"), "node_id": "n1", "power_watts": 5.0})
    frame = validate_telemetry(pd.DataFrame(rows))
    held_from, held_to = int((start + pd.Timedelta(minutes=90)).timestamp()), int(
        (start + pd.Timedelta(minutes=120)).timestamp())
    bins, power = _truth(frame, 60, 300, {"n1": (held_from, held_to)})["n1"]
    assert len(bins) == 30 and bins[0] * 60 == held_from and (bins[-1] + 1) * 60 == held_to
    np.testing.assert_array_equal(power, 100.0 + np.arange(90, 120))


def test_a_version_served_over_other_gaps_is_scored_on_the_windows_it_answers(sample, registry, shift):
    """Review: at the same step both versions were scored on the challenger's windows, filled over the challenger's
    `max_gap`: an active version served over shorter gaps was scored across a 12-min gap it never fills, on
    requests the service refuses it. Each is now scored as served, on the points both answer."""
    last = sample.groupby("node_id")["timestamp"].transform("max")
    gapped = sample[(sample["timestamp"] <= last - pd.Timedelta(minutes=75))
                    | (sample["timestamp"] > last - pd.Timedelta(minutes=63))]
    shift(GOOD)
    assert retrain_power(sample, spec(), registry=registry).activated  # served over gaps up to 10 min
    wider = SMALL.model_copy(update={"predictor": SMALL.predictor.model_copy(update={"max_gap": 1800})})
    result = retrain_power(gapped, RetrainSpec(config=wider, verbose=False), registry=registry)
    incumbent = result.incumbent
    assert incumbent is not None and incumbent.resampled and incumbent.version == 1, result.reason
    assert incumbent.points < result.metrics.holdout_points  # not the challenger's windows across the gap


def test_a_version_that_fills_shorter_gaps_than_the_active_one_is_not_activated(sample, registry, shift):
    """Review: a challenger filling gaps up to 5 min where the active version fills 30 min was scored on the windows
    both answer and could be activated: in its place, stored windows with a 10-min gap would be refused."""
    wide = SMALL.model_copy(update={"predictor": SMALL.predictor.model_copy(update={"max_gap": 1800})})
    narrow = SMALL.model_copy(update={"predictor": SMALL.predictor.model_copy(update={"max_gap": 300})})
    champion_spec = RetrainSpec(config=wide, verbose=False)
    shift(BAD)
    assert retrain_power(sample, champion_spec, registry=registry).activated
    shift(GOOD)
    result = retrain_power(sample, RetrainSpec(config=narrow, verbose=False), registry=registry)
    assert result.decision == "not_comparable" and not result.activated, result.reason
    assert "fills gaps in the telemetry up to 5min, the active version up to 30min" in result.incomparable.why

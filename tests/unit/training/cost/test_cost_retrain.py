"""retrain_cost: the cost model's challenger is promoted only when it beats the champion on the same held-out jobs
(issue 13: before, every cost retraining was activated). Small real LightGBM fits, so `slow`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.registry import ModelRegistry
from training.cost.catalog import generate_job_records, load_catalog
from training.cost.retrain import CostRetrainSpec, record_shares, retrain_cost
from training.settings import TrainingConfig

pytestmark = pytest.mark.slow
SMALL = TrainingConfig.model_validate({"models": {"cost_predictor": {"n_estimators": 20}}})


def spec(**fields) -> CostRetrainSpec:
    return CostRetrainSpec(config=SMALL, **fields)


def test_the_first_version_is_activated_with_its_held_out_scores(tmp_path):
    registry = ModelRegistry(tmp_path)
    result = retrain_cost(generate_job_records(600, 1), spec(), registry=registry)
    assert (result.version, result.decision, result.activated) == (1, "no_incumbent", True)
    held = int((record_shares(generate_job_records(600, 1)) < 0.15).sum())
    assert result.records == 600 and result.metrics["n_holdout"] == held and 60 <= held <= 120
    assert result.summary_lines()[0].startswith("registered cost_gbm version 1; holdout MAE ")
    _, metadata = registry.get("cost_gbm", 1)
    assert metadata.model_type == "lightgbm" and metadata.metrics["mae"] == result.metrics["mae"]
    assert registry.active_version("cost_gbm") == 1


def test_a_worse_challenger_stays_registered_inactive_with_the_reason(tmp_path):
    registry = ModelRegistry(tmp_path)
    jobs = generate_job_records(2000, 1)
    retrain_cost(jobs, spec(), registry=registry)
    stunted = TrainingConfig.model_validate({"models": {"cost_predictor": {"n_estimators": 1}}})
    result = retrain_cost(jobs, CostRetrainSpec(config=stunted, seed=3), registry=registry)  # one tree
    champion = result.incumbent
    assert (result.version, result.decision, result.activated) == (2, "did_not_beat", False)
    assert champion is not None and champion.version == 1 and champion.mae < champion.challenger_mae
    assert result.reason.startswith("did not beat active version 1 on the same held-out jobs: MAE ")
    assert registry.active_version("cost_gbm") == 1 and registry.versions("cost_gbm") == [1, 2]


def test_a_better_challenger_is_activated(tmp_path):
    registry = ModelRegistry(tmp_path)
    jobs = generate_job_records(2000, 1)
    stunted = TrainingConfig.model_validate({"models": {"cost_predictor": {"n_estimators": 1}}})
    retrain_cost(jobs, CostRetrainSpec(config=stunted, seed=3), registry=registry)  # one tree
    result = retrain_cost(jobs, spec(), registry=registry)
    assert (result.decision, result.activated) == ("beat_incumbent", True)
    assert registry.active_version("cost_gbm") == 2


def test_an_unreadable_champion_is_not_compared_and_not_replaced(tmp_path):
    registry = ModelRegistry(tmp_path)
    retrain_cost(generate_job_records(600, 1), spec(), registry=registry)
    folder, _ = registry.get("cost_gbm", 1)
    (folder / "cost_model.json").write_text("{}")
    result = retrain_cost(generate_job_records(600, 2), spec(), registry=registry)
    assert (result.decision, result.activated) == ("not_comparable", False)
    assert result.incomparable is not None and "cannot be loaded" in result.incomparable.why
    assert str(tmp_path) not in result.incomparable.why  # a job record shows it to every reader
    assert registry.active_version("cost_gbm") == 1


def test_an_active_version_that_cannot_be_loaded_is_scored_as_the_version_replicas_serve_in_its_place(tmp_path):
    """Review: the cost path compared only the active version, so a damaged one (a truncated file) made every later
    retraining `not_comparable` while replicas served the version before it; docs/retraining.md said the version
    served in its place is scored, as the power path does."""
    from training.retrain_attempt import cost_outcome

    registry = ModelRegistry(tmp_path)
    jobs = generate_job_records(2000, 1)
    stunted = TrainingConfig.model_validate({"models": {"cost_predictor": {"n_estimators": 1}}})
    retrain_cost(jobs, CostRetrainSpec(config=stunted, seed=3), registry=registry)  # version 1: one tree
    retrain_cost(jobs, CostRetrainSpec(config=stunted, seed=3), registry=registry)  # version 2, the same
    registry.activate("cost_gbm", 2)
    folder, _ = registry.get("cost_gbm", 2)
    (folder / "cost_model.json").write_text("{}")  # damaged: replicas serve version 1, active before it
    result = retrain_cost(jobs, spec(), registry=registry)
    champion = result.incumbent
    assert champion is not None and (champion.version, champion.scored_version) == (2, 1)
    assert (result.decision, result.activated) == ("beat_incumbent", True)
    assert "it cannot be loaded: version 1, served in its place, was scored" in result.reason
    assert cost_outcome(result).champion.unloadable_active_version == 2
    assert registry.active_version("cost_gbm") == 3


def two_versions_the_second_damaged(tmp_path, first_synthetic: bool = False):
    """A registry whose active version 2 cannot be loaded (its booster file is missing), version 1 active before
    it; and the jobs both trained on."""
    registry = ModelRegistry(tmp_path)
    jobs = generate_job_records(2000, 1)
    stunted = TrainingConfig.model_validate({"models": {"cost_predictor": {"n_estimators": 1}}})
    retrain_cost(jobs, CostRetrainSpec(config=stunted, seed=3, synthetic=first_synthetic), registry=registry)
    retrain_cost(jobs, CostRetrainSpec(config=stunted, seed=3), registry=registry)
    registry.activate("cost_gbm", 2)
    return registry, jobs, registry.get("cost_gbm", 2)[0]


def test_a_booster_file_that_cannot_be_read_just_now_is_no_damaged_version(tmp_path, monkeypatch):
    """Review: LightGBM read the booster files itself, and says "could not open" whatever the cause, so a passing
    read error (an NFS blip) counted as a damaged version: the version before it was scored in its place and the
    working active version replaced."""
    import errno
    from pathlib import Path

    registry, jobs, folder = two_versions_the_second_damaged(tmp_path)
    read_text = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (_ for _ in ()).throw(OSError(errno.EIO, "I/O"))
                        if self.parent == folder and self.suffix == ".txt" else read_text(self, *a, **k))
    result = retrain_cost(jobs, spec(), registry=registry)
    assert (result.decision, result.activated) == ("not_comparable", False), result.reason
    assert registry.active_version("cost_gbm") == 2


def test_a_generated_jobs_challenger_is_not_compared_with_a_stand_in_for_a_version_trained_on_real_jobs(tmp_path):
    """Review: the check read the stand-in's metadata only, so with the active version (real jobs) damaged and the
    one before it trained on generated jobs, a generated-jobs challenger could replace the model of real jobs."""
    registry, jobs, folder = two_versions_the_second_damaged(tmp_path, first_synthetic=True)
    (folder / "cost_model.json").write_text("{}")
    result = retrain_cost(jobs, spec(synthetic=True), registry=registry)
    assert (result.decision, result.activated) == ("not_comparable", False), result.reason
    assert "trained on real job records" in result.incomparable.why


def test_a_challenger_trained_on_generated_jobs_does_not_replace_one_trained_on_real_jobs(tmp_path):
    """Regression: scored on generated held-out jobs, a catalog-trained challenger replaced an operator's model of
    real jobs; over one trained on generated jobs it is still compared."""
    registry = ModelRegistry(tmp_path)
    stunted = TrainingConfig.model_validate({"models": {"cost_predictor": {"n_estimators": 1}}})
    retrain_cost(generate_job_records(2000, 1), CostRetrainSpec(config=stunted, seed=3), registry=registry)
    result = retrain_cost(generate_job_records(2000, 1), spec(synthetic=True), registry=registry)
    assert (result.decision, result.activated) == ("not_comparable", False)
    assert result.incomparable is not None and "real job records" in result.incomparable.why
    result = retrain_cost(generate_job_records(2000, 1), spec(activation="force", synthetic=True), registry=registry)
    assert result.activated and registry.active_version("cost_gbm") == 3
    result = retrain_cost(generate_job_records(2000, 1), spec(synthetic=True), registry=registry)
    assert result.decision in ("beat_incumbent", "did_not_beat") and result.incumbent.version == 3


def test_forced_and_never_activation(tmp_path):
    registry = ModelRegistry(tmp_path)
    retrain_cost(generate_job_records(2000, 1), spec(), registry=registry)
    forced = retrain_cost(generate_job_records(200, 2), spec(activation="force"), registry=registry)
    assert (forced.decision, registry.active_version("cost_gbm")) == ("forced", 2)
    never = retrain_cost(generate_job_records(2000, 1), spec(activation="never"), registry=registry)
    assert (never.decision, registry.active_version("cost_gbm")) == ("not_requested", 2)


def test_a_forced_activation_that_cannot_be_written_leaves_the_version_registered(tmp_path, monkeypatch, caplog):
    """Regression: the publication's failed activation failed the retraining although its version was registered."""
    registry = ModelRegistry(tmp_path)
    retrain_cost(generate_job_records(600, 1), spec(), registry=registry)

    def unwritable(*_args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ModelRegistry, "activate", unwritable)
    result = retrain_cost(generate_job_records(600, 2), spec(activation="force"), registry=registry)
    assert (result.version, result.decision, result.activated) == (2, "activation_failed", False)
    assert result.reason.startswith("it won or was forced, but its activation could not be written")
    assert registry.versions("cost_gbm") == [1, 2] and registry.active_version("cost_gbm") == 1
    assert any(r.exc_info and "version 2 registered, but its activation could not be written" in r.getMessage()
               for r in caplog.records)


def test_too_few_records_for_a_holdout_are_refused(tmp_path):
    held = int((record_shares(generate_job_records(100, 1)) < 0.15).sum())
    expected = rf"leave {held} for the holdout \(the records whose hash falls in its 15%\); need at least 20: "
    expected += r"give more records \(267 or more hold that many out all but always\)"
    with pytest.raises(ValueError, match=expected):
        retrain_cost(generate_job_records(100, 1), spec(), registry=ModelRegistry(tmp_path))
    assert retrain_cost(generate_job_records(300, 1), spec(), registry=ModelRegistry(tmp_path)).version == 1


def test_a_gpu_type_added_to_the_catalog_leaves_its_jobs_out_of_the_comparison(tmp_path):
    """The active version cannot price a type added since it was trained: compared on every other held-out job, not
    refused as incomparable (then the API's retraining could never put a version that prices it in service)."""
    full = load_catalog()
    data = full.model_dump()
    dropped = next(name for name in data["gpu"]["types"] if name != data["gpu"]["default_type"])
    del data["gpu"]["types"][dropped]
    older = type(full).model_validate(data)
    registry = ModelRegistry(tmp_path)
    retrain_cost(generate_job_records(600, 1, older), spec(catalog=older), registry=registry)
    result = retrain_cost(generate_job_records(2000, 1, full), spec(catalog=full), registry=registry)
    champion = result.incumbent
    assert result.decision in ("beat_incumbent", "did_not_beat"), result.reason
    held = int((record_shares(generate_job_records(2000, 1, full)) < 0.15).sum())
    assert champion is not None and champion.left_out > 0 and champion.jobs + champion.left_out == held
    assert f"({champion.left_out} held-out jobs left out" in result.reason


def test_regression_the_champion_is_scored_only_on_jobs_it_never_trained_on(tmp_path):
    """The holdout was a seeded shuffle of whatever records a run read: run again with another seed, or on the same
    file grown by a few jobs, most held-out jobs were in the champion's training part, and a better challenger lost
    to an in-sample score."""
    registry = ModelRegistry(tmp_path)
    jobs = generate_job_records(2000, 1)
    retrain_cost(jobs, spec(seed=0), registry=registry)
    grown = pd.concat([jobs.sample(frac=1.0, random_state=5), generate_job_records(200, 9)], ignore_index=True)
    result = retrain_cost(grown, spec(seed=1), registry=registry)
    champion = result.incumbent
    unseen_by_both = int((record_shares(jobs) < 0.15).sum())  # the grown file's new jobs are not in the first
    assert champion is not None and champion.unseen
    assert champion.jobs + champion.left_out == result.metrics["n_holdout"] > unseen_by_both
    assert "seeded shuffle" not in result.reason


def test_a_champion_held_out_the_old_way_is_compared_with_the_caveat(tmp_path):
    registry = ModelRegistry(tmp_path)
    retrain_cost(generate_job_records(600, 1), spec(), registry=registry)
    folder, metadata = registry.get("cost_gbm", 1)
    stored = json.loads((folder / "metadata.json").read_text())
    del stored["training"]["holdout"]  # as versions before 2026-12-05 were registered
    (folder / "metadata.json").write_text(json.dumps(stored))
    result = retrain_cost(generate_job_records(600, 2), spec(), registry=registry)
    assert result.incumbent is not None and not result.incumbent.unseen
    assert "held out by a seeded shuffle and may have trained on some of them" in result.reason


def test_the_holdout_is_the_same_whatever_the_values_types_and_order():
    """A job read from a CSV (strings parsed to floats, missing as NaN) and the same job generated (ints, None) land
    on the same side: the share hashes one canonical text per value, not a library's hash of its dtype."""
    jobs = generate_job_records(300, 4)
    shares = record_shares(jobs)
    as_text = jobs.astype(object).where(jobs.notna(), None)
    as_text[["gpu_count"]] = as_text[["gpu_count"]].astype(float)
    assert (record_shares(as_text) == shares).all()
    shuffled = jobs.sample(frac=1.0, random_state=1)
    assert (record_shares(shuffled) == shares[shuffled.index.to_numpy()]).all()
    assert 0.0 <= shares.min() and shares.max() < 1.0 and 0.08 < (shares < 0.15).mean() < 0.22
    from decimal import Decimal

    from training.cost.retrain import _canonical
    assert {_canonical(v) for v in (1, 1.0, np.float64(1), Decimal("1"), np.int64(1))} == {"1.0"}
    assert _canonical(-0.0) == _canonical(0) and _canonical(None) == _canonical(float("nan")) == ""


def test_an_active_version_scoring_no_number_gives_way_to_a_challenger():
    """Regression: x <= NaN is False, so a champion gone bad could never be beaten."""
    from training.cost.retrain import CostIncumbent, _decide

    assert _decide("auto", CostIncumbent(version=1, mae=float("nan"), challenger_mae=3.0)) == "beat_incumbent"
    assert _decide("auto", CostIncumbent(version=1, mae=2.0, challenger_mae=3.0)) == "did_not_beat"

"""`train_lstm --settings-from` a tune report (with the fake Ray Train step, tests.fakes.trainer, and no LightGBM
partner) and the flags both commands refuse; the real search is tests/integration/test_tune_command.py."""

from __future__ import annotations

import pytest

from core.registry import ModelRegistry
from tests.fakes.trainer import serve_lstm_alone, untrained
from tests.paths import TEST_DATA
from training import train_lstm, tune
from training.power.tune_report import DataFacts, SearchFacts, TrialOutcome, TuneReport

SAMPLE = str(TEST_DATA / "upm_sample.csv")
SMALL = ["--step", "2min", "--horizon", "20min", "--sequence-length", "15", "--hidden-size", "8", "--quiet"]


def _report(tmp_path, **best) -> str:
    settings = {"learning_rate": 0.002, "hidden_size": 8, "num_layers": 2, "sequence_length": 15, "dropout": 0.1,
                "batch_size": 64}
    trials = [TrialOutcome(trial_id="a", config=settings, default=True, status="completed", score=10.0, val_mae=9.0,
                           epochs=4),
              TrialOutcome(trial_id="b", config={**settings, **best}, default=False, status="completed", score=9.0,
                           val_mae=8.0, epochs=4)]
    data = DataFacts(source=SAMPLE, series=3, step_s=120, horizon_steps=10, features=[], holdout_fraction=0.1,
                     holdout_points=300)
    search = SearchFacts(trials_requested=2, time_budget_s=None, elapsed_s=60.0, num_workers=1,
                         max_concurrent_trials=2, scheduler="ASHA", seed=42)
    path = tmp_path / "tune.json"
    path.write_text(TuneReport.from_trials(trials, data, search).model_dump_json())
    return str(path)


def test_the_best_trial_is_chosen_on_validation_never_on_the_holdout_it_reports():
    """The trial of the lowest holdout MAE was chosen: a `train_lstm --settings-from` run on the same data then
    reported (and compared the active version on) the very points the settings were chosen on."""
    settings = {"learning_rate": 0.002, "hidden_size": 8, "num_layers": 2, "sequence_length": 15, "dropout": 0.1,
                "batch_size": 64}
    trials = [TrialOutcome(trial_id="default", config=settings, default=True, status="completed", score=10.0,
                           val_mae=9.0, epochs=4),
              TrialOutcome(trial_id="lucky", config={**settings, "dropout": 0.2}, default=False, status="completed",
                           score=8.0, val_mae=9.5, epochs=4),
              TrialOutcome(trial_id="chosen", config={**settings, "dropout": 0.3}, default=False,
                           status="completed", score=9.0, val_mae=8.5, epochs=4),
              TrialOutcome(trial_id="cut", config={**settings, "dropout": 0.4}, default=False,
                           status="early_stopped", score=None, val_mae=7.0, epochs=2)]
    data = DataFacts(source=SAMPLE, series=3, step_s=120, horizon_steps=10, features=[], holdout_fraction=0.1,
                     holdout_points=300)
    search = SearchFacts(trials_requested=4, time_budget_s=None, elapsed_s=60.0, num_workers=1,
                         max_concurrent_trials=2, scheduler="ASHA", seed=42)
    report = TuneReport.from_trials(trials, data, search)
    assert report.best_config["dropout"] == 0.3 and report.best_score == 9.0 and report.gain_percent == 10.0
    assert "chosen 9.00 W, default 10.00 W, spread 8.00..10.00 W" in report.summary_lines()[1]


def test_train_lstm_trains_with_the_best_settings_and_flags_still_win(tmp_path, monkeypatch):
    monkeypatch.setattr("training.power.dataset.train_power_lstm", untrained(0.0))
    serve_lstm_alone(monkeypatch)
    models = tmp_path / "models"
    path = _report(tmp_path, learning_rate=0.004, num_layers=1, sequence_length=7, dropout=0.2, batch_size=32)
    args = ["--data", SAMPLE, "--step", "2min", "--horizon", "20min", "--quiet", "--model-path", str(models)]
    assert train_lstm.main([*args, "--settings-from", path]) == 0
    _, metadata = ModelRegistry(models).get("power_lstm", 1)
    model = metadata.config["models"]["power_predictor"]
    assert (model["learning_rate"], model["num_layers"], model["sequence_length"], model["dropout"],
            model["batch_size"], model["hidden_size"]) == (0.004, 1, 7, 0.2, 32, 8)
    assert metadata.feature_spec["sequence_length"] == 7
    assert train_lstm.main([*args, "--settings-from", path, "--sequence-length", "15", "--no-activate"]) == 0
    assert ModelRegistry(models).get("power_lstm", 2)[1].feature_spec["sequence_length"] == 15


def test_train_lstm_records_the_storage_path_and_the_worker_options(tmp_path, monkeypatch):
    seen = {}
    fake = untrained(0.0)

    def train(*args, **options):
        seen.update(options)
        return fake(*args, **options)

    monkeypatch.setattr("training.power.dataset.train_power_lstm", train)
    serve_lstm_alone(monkeypatch)
    monkeypatch.setenv("KCLOUD_STORAGE_PATH", "s3://from-env/runs")
    models = tmp_path / "models"
    common = ["--data", SAMPLE, *SMALL, "--epochs", "4", "--model-path", str(models)]
    assert train_lstm.main(common) == 0
    assert seen["storage_path"] == "s3://from-env/runs"
    assert train_lstm.main([*common, "--storage-path", "/mnt/shared/runs", "--resources-per-worker",
                            '{"trainer": 1}']) == 0
    assert seen["storage_path"] == "/mnt/shared/runs" and seen["scaling"].resources_per_worker == {"trainer": 1.0}
    _, metadata = ModelRegistry(models).get("power_lstm", 2)
    assert metadata.config["storage_path"] == "/mnt/shared/runs"
    assert metadata.training["worker_nodes"] == []  # the fake trainer runs no Ray workers


def test_bad_settings_files_and_resources_are_refused(tmp_path, capsys):
    args = ["--data", SAMPLE, *SMALL, "--model-path", str(tmp_path / "models")]
    assert train_lstm.main([*args, "--settings-from", str(tmp_path / "none.json")]) == 2
    assert "none.json: cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        train_lstm.main([*args, "--resources-per-worker", '{"trainer": -1}'])
    assert refused.value.code == 2
    assert "must be a JSON object of resource names to finite amounts >= 0" in capsys.readouterr().err
    for refused_json, phrase in (('{"trainer": Infinity}', "finite amounts"), ('{"CPU": 4}', "--cpus-per-worker")):
        with pytest.raises(SystemExit):  # Infinity was taken; CPU silently overrode --cpus-per-worker
            train_lstm.main([*args, "--resources-per-worker", refused_json])
        assert phrase in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tune.main(["--data", SAMPLE, "--output", str(tmp_path / "t.json"), "--resources-per-worker", "not json"])
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize(("step", "max_gap"), [("10min", 3000), ("2min", 600)])
def test_max_gap_follows_the_step_with_settings_from(tmp_path, step, max_gap):
    """A `predictor.max_gap` the config does not give follows --step, tuned settings or not (5 steps, >= 5min)."""
    args = train_lstm.parse_args(["--data", SAMPLE, "--step", step, "--horizon", "1h", "--settings-from",
                                  _report(tmp_path)])
    assert train_lstm.build_spec(args).effective_config().predictor.max_gap == max_gap


def test_the_search_centres_on_the_served_window_of_its_step_and_horizon():
    """`tune --step 1min --horizon 1h` searched around the hourly model's 168-step window, not power_lstm's 60."""
    def window(*flags: str) -> int:
        args = tune.parse_args(["--data", SAMPLE, "--output", "tune.json", *flags])
        return tune.base_config(args).models.power_predictor.sequence_length

    assert window("--step", "1min", "--horizon", "1h") == 60
    assert window("--step", "1h", "--horizon", "7d") == 168
    assert window("--step", "1min", "--horizon", "1h", "--sequence-length", "30") == 30


def test_a_search_on_the_store_splits_as_train_lstm_does():
    """From the store, train_lstm holds out every node from one time on; the search scores on that same split."""
    def split(*source: str) -> str:
        return tune.search_plan(tune.parse_args([*source, "--output", "t.json"])).split

    assert (split("--from-store"), split("--data", SAMPLE)) == ("time", "series")


def test_a_search_on_the_store_reads_what_the_searched_shape_needs(monkeypatch):
    """Regression: the search read 14 days whatever its shape; an hourly search scored on one week's window. It
    reads 4 of the longest windows it tries (double the configured one)."""
    reads: list[tuple[int, int]] = []
    monkeypatch.setattr(tune, "read_store", lambda since_s, step_s, verbose: reads.append((since_s, step_s)))
    for flags in ([], ["--step", "1h", "--horizon", "7d"], ["--step", "1h", "--horizon", "7d", "--since", "20d"]):
        args = tune.parse_args(["--from-store", "--output", "t.json", *flags])
        tune.read_frame(args, tune.base_config(args))
    assert reads == [(14 * 86400, 60), (4 * (336 * 3600 + 7 * 86400), 3600), (20 * 86400, 3600)]

"""The train_lstm command line over retrain_power: flags to a RetrainSpec, the result to its stderr lines.

Ray Train is replaced by tests.fakes.trainer, and the versions serve their LSTM alone (no LightGBM partner: 3 s a
run); tests/integration/test_training_cli.py runs the real thing.
"""

from __future__ import annotations

import pytest

from core.registry import ModelRegistry
from tests.fakes.trainer import serve_lstm_alone, untrained
from tests.paths import TEST_DATA
from training import train_lstm

SMALL = ["--data", str(TEST_DATA / "upm_sample.csv"), "--step", "2min", "--horizon", "20min",
         "--sequence-length", "15", "--hidden-size", "8", "--quiet"]


@pytest.fixture
def models(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("training.power.dataset.train_power_lstm", untrained(0.0))
    serve_lstm_alone(monkeypatch)
    return tmp_path / "models"


def _lines(capsys) -> list[str]:
    """stderr's lines but the note on the trained shape (SMALL is not the shape `power_lstm` is served at)."""
    return [line for line in capsys.readouterr().err.splitlines() if not line.startswith("train_lstm: note:")]


def test_a_shape_other_than_the_served_resolution_is_noted(models, capsys):
    assert train_lstm.main([*SMALL, "--model-path", str(models)]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train_lstm: note:")]
    assert notes[0] == ("train_lstm: note: predictor.resolutions serves power_lstm at 1min steps up to 1h from 60 "
                        "steps; this run trains 2min steps up to 20min from 15 steps (--step, --horizon and "
                        "--sequence-length set it)")
    assert all("interval covers" in note for note in notes[1:])  # the rest: the calibration note, if any
    matching = train_lstm.parse_args([*SMALL, "--step", "1min", "--horizon", "1h", "--sequence-length", "60"])
    assert train_lstm.shape_note(train_lstm.build_spec(matching)) is None


def test_registers_activates_and_says_so(models, capsys):
    assert train_lstm.main([*SMALL, "--model-path", str(models)]) == 0
    lines = [line for line in _lines(capsys) if line.startswith("train_lstm")]
    assert lines[0].startswith("train_lstm: registered power_lstm version 1; holdout MAE ")
    assert lines[1:] == ["train_lstm: activated (no model was active)"]
    assert ModelRegistry(models).active_version("power_lstm") == 1


def test_a_second_run_is_compared_and_no_activate_keeps_the_active_one(models, capsys):
    assert train_lstm.main([*SMALL, "--model-path", str(models)]) == 0
    capsys.readouterr()
    assert train_lstm.main([*SMALL, "--model-path", str(models), "--no-activate"]) == 0
    last = [line for line in _lines(capsys) if line.startswith("train_lstm")][-1]
    assert last.startswith("train_lstm: active version 1 scores ")
    assert last.endswith(" W on the same holdout: NOT activated (kept version 1)")
    assert ModelRegistry(models).active_version("power_lstm") == 1


def test_force_activate_and_no_activate_together_are_refused(models, capsys):
    with pytest.raises(SystemExit) as refused:
        train_lstm.main([*SMALL, "--model-path", str(models), "--no-activate", "--force-activate"])
    assert refused.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert not models.exists()


def test_force_activate_activates(models, capsys):
    assert train_lstm.main([*SMALL, "--model-path", str(models), "--no-activate"]) == 0
    assert train_lstm.main([*SMALL, "--model-path", str(models), "--force-activate"]) == 0
    assert ModelRegistry(models).active_version("power_lstm") == 2


def test_a_bad_model_id_is_named_before_training(models, capsys):
    assert train_lstm.main([*SMALL, "--model-path", str(models), "--model-id", "Bad Id"]) == 2
    assert _lines(capsys)[-1].startswith("train_lstm: error: command line: model_id: invalid model id 'Bad Id'")
    assert not models.exists()


def test_a_version_that_cannot_be_compared_is_registered_and_says_why(models, capsys):
    assert train_lstm.main([*SMALL, "--model-path", str(models)]) == 0
    capsys.readouterr()
    other_step = [*SMALL, "--model-path", str(models), "--step", "3min", "--horizon", "21min"]
    assert train_lstm.main(other_step) == 0
    assert [line for line in _lines(capsys) if line.startswith("train_lstm")][-1] == (
        "train_lstm: active version 1 could not be compared: it forecasts 21min ahead at 3min steps, the active "
        "version 20min at 2min steps: in its place, requests the active version answers would go to another model: "
        "NOT activated (kept version 1); --force-activate serves it anyway")
    assert ModelRegistry(models).active_version("power_lstm") == 1


def test_too_few_epochs_are_refused_before_training(models, capsys):
    assert train_lstm.main([*SMALL, "--model-path", str(models), "--epochs", "1"]) == 2
    assert _lines(capsys)[-1] == ("train_lstm: error: epochs: 1 is below the minimum of 4 training epochs "
                                  "(models.power_predictor.min_epochs)")
    assert not models.exists()


def _window(*flags: str) -> int:
    spec = train_lstm.build_spec(train_lstm.parse_args(["--data", str(TEST_DATA / "upm_sample.csv"), *flags]))
    return spec.effective_config().models.power_predictor.sequence_length


def test_a_served_step_and_horizon_train_the_served_window_unless_the_window_is_given(tmp_path):
    """Regression: the retraining jobs' `--step 1min --horizon 1h` trained power_lstm from the hourly model's 168
    steps, while predictor.resolutions serves it from 60."""
    assert _window("--step", "1min", "--horizon", "1h") == 60
    assert _window() == 60  # the config's step and horizon: power_lstm's
    assert _window("--step", "1h", "--horizon", "7d") == 168
    assert _window("--step", "2min", "--horizon", "20min") == 168  # served by no resolution: the config's window
    assert _window("--step", "1min", "--horizon", "1h", "--sequence-length", "30") == 30
    config = tmp_path / "config.yaml"
    config.write_text("predictor:\n  resolutions:\n    - {model_id: power_lstm, step: 1min, horizon: 1h, "
                      "sequence_length: 90}\n")
    assert _window("--config", str(config), "--step", "1min", "--horizon", "1h") == 90
    spec = train_lstm.build_spec(train_lstm.parse_args(["--data", "x.csv", "--step", "1min", "--horizon", "1h"]))
    assert train_lstm.shape_note(spec) is None


def test_a_store_s_nodes_are_held_out_from_one_time_on_and_a_csv_s_series_each_at_its_end():
    """A store's nodes record at the same times: one cut keeps a node that joined late from training on times the
    others are scored at. A CSV's series may be runs recorded on other days: each keeps its own tail."""
    from_store = train_lstm.build_spec(train_lstm.parse_args(["--from-store", "--since", "14d"]))
    assert (from_store.split, from_store.skip_short) == ("time", True)
    assert train_lstm.build_spec(train_lstm.parse_args(["--data", "x.csv"])).split == "series"


def test_a_store_run_without_since_reads_what_the_trained_shape_needs_as_the_scheduler_does():
    """Regression: `--from-store` read 14 days whatever it trained, so an hourly model (a week's window and
    horizon) was trained on one window's worth, where the scheduler and the retrain API read 8 weeks for it."""
    def since(*flags: str) -> int | None:
        args = train_lstm.parse_args(["--from-store", *flags])
        return train_lstm.training_data(args, train_lstm.build_spec(args)).since_s

    assert since() == 14 * 86400  # the config's 1-minute model: 4 windows are under 14 days
    assert since("--step", "1h", "--horizon", "7d") == 4 * (168 * 3600 + 7 * 86400)  # 8 weeks
    assert since("--step", "1h", "--horizon", "7d", "--since", "20d") == 20 * 86400  # given: as given

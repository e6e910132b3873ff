"""Bad input to the training command lines: one clear line naming the problem, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler import simulate
from training import evaluate, preprocess, train_lstm, tune

GOOD_HEADER = "timestamp,node_id,power_watts,cpu_utilization\n"


def _csv(tmp_path, text: str):
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return path


def _long_series(minutes: int = 30) -> str:
    return "".join(f"2026-01-01T00:{m:02d}:00Z,n1,{200 + m},50\n" for m in range(minutes))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timestamp,node_id,cpu_utilization\n2026-01-01T00:00:00Z,n1,5\n", "power_watts"),
        (GOOD_HEADER + "yesterday,n1,200,5\n", "line 2"),
        (GOOD_HEADER + "2026-01-01T00:00:00Z,n1,-5,5\n", "negative watts"),
        (GOOD_HEADER + "2026-01-01T00:00:00Z,n1,1e308,5\n", "above 10 MW"),
        (GOOD_HEADER + "2026-01-01T00:00:00Z,n1,abc,5\n", "not a finite number"),
        (GOOD_HEADER + _long_series(5), "series shorter than one window"),
    ],
)
def test_evaluate_refuses_bad_data(tmp_path, capsys, text, expected):
    data = _csv(tmp_path, text)
    output = tmp_path / "report.json"
    code = evaluate.main(["--data", str(data), "--step", "1min", "--horizon", "5min", "--sequence-length", "10",
                          "--output", str(output)])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("evaluate: error:") and expected in error
    assert "Traceback" not in error
    assert not output.exists()


def test_short_series_error_names_the_series(tmp_path, capsys):
    text = GOOD_HEADER + _long_series(30) + "".join(f"2026-01-01T00:{m:02d}:00Z,tiny,100,5\n" for m in range(4))
    code = train_lstm.main(["--data", str(_csv(tmp_path, text)), "--step", "1min", "--horizon", "5min",
                            "--sequence-length", "10", "--model-path", str(tmp_path / "models")])
    assert code == 2
    assert "'tiny'" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_data_sampled_coarser_than_max_gap_is_told_to_use_a_longer_step(tmp_path, capsys):
    """10-minute samples at a 1-minute step: every sample its own stretch, and the message said "use a shorter
    --sequence-length or step", which made it worse."""
    text = GOOD_HEADER + "".join(f"2026-01-01T{h:02d}:{m:02d}:00Z,n1,{200 + m},50\n" for h in range(8)
                                 for m in range(0, 60, 10))
    code = train_lstm.main(["--data", str(_csv(tmp_path, text)), "--step", "1min", "--horizon", "5min",
                            "--sequence-length", "10", "--model-path", str(tmp_path / "models")])
    err = capsys.readouterr().err
    assert code == 2 and "their samples lie more than max_gap (5min) apart" in err and "or step" not in err


def test_missing_file_is_named(tmp_path, capsys):
    code = evaluate.main(["--data", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "r.json")])
    assert code == 2
    assert "nope.csv" in capsys.readouterr().err


def test_bad_horizon_unit_is_an_argument_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--data", "x.csv", "--horizon", "1 fortnight", "--output", "r.json"])
    assert exit_info.value.code == 2
    assert "--horizon" in capsys.readouterr().err


@pytest.mark.parametrize("cpus", ["0", "-1", "nan", "inf", "two"])
def test_cpus_per_worker_must_be_a_number_above_zero(capsys, cpus):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--data", "x.csv", "--cpus-per-worker", cpus, "--output", "r.json"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--cpus-per-worker" in error and repr(cpus) in error


def test_horizon_not_multiple_of_step_names_the_key(tmp_path, capsys):
    data = _csv(tmp_path, GOOD_HEADER + _long_series(30))
    code = evaluate.main(["--data", str(data), "--step", "2min", "--horizon", "5min",
                          "--output", str(tmp_path / "r.json")])
    assert code == 2
    assert "prediction_horizon" in capsys.readouterr().err


def test_preprocess_reports_segments_and_writes_regular_series(tmp_path, capsys):
    rows = _long_series(10) + "".join(f"2026-01-01T00:{m:02d}:00Z,n1,300,60\n" for m in range(40, 50))
    data = _csv(tmp_path, GOOD_HEADER + rows)
    output = tmp_path / "resampled.csv"
    assert preprocess.main(["--data", str(data), "--step", "1min", "--max-gap", "5min", "--output", str(output)]) == 0
    table = capsys.readouterr().out
    assert "n1" in table and table.split("\n")[1].split()[-1] == "2"  # the 30-minute gap splits the series
    assert output.read_text().count("\n") == 21


def test_preprocess_splits_gaps_as_training_does_at_another_step(tmp_path, capsys):
    """At --step 1h training allows gaps of 5 steps (the config's max_gap follows the step); preprocess used the
    config's 5 minutes and split an hourly series at every missing hour."""
    hours = [h for h in range(24) if h not in (10, 11, 12)]
    data = _csv(tmp_path, GOOD_HEADER + "".join(f"2026-01-01T{h:02d}:00:00Z,n1,{200 + h},50\n" for h in hours))
    assert preprocess.main(["--data", str(data), "--step", "1h"]) == 0
    assert capsys.readouterr().out.split("\n")[1].split()[-1] == "1"
    assert preprocess.main(["--data", str(data), "--step", "45min"]) == 0  # no horizon to divide: any step resamples


@pytest.mark.parametrize("command", [evaluate, preprocess])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for output, reason in ((tmp_path, "is a folder"), (blocker / "report.json", "is a file"),
                           (Path("/sys/report.json"), "cannot be written")):  # a folder no one may write in
        with pytest.raises(SystemExit) as refused:
            command.main(["--data", str(tmp_path / "never-read.csv"), "--output", str(output)])
        assert refused.value.code == 2 and reason in capsys.readouterr().err


@pytest.mark.parametrize(("command", "flags"), [(preprocess, ["--output"]), (evaluate, ["--output", "--plot"]),
                                               (tune, ["--output"]), (simulate, ["--output", "--plot"])])
def test_regression_an_output_that_is_an_input_file_is_refused_before_any_work(tmp_path, capsys, command, flags):
    """`preprocess --data c.csv --output c.csv` replaced the raw trace by its resampled rows; evaluate would have
    written its report over the trace after training."""
    data = _csv(tmp_path, GOOD_HEADER + _long_series())
    before = data.read_text()
    source = ["--trace", str(data), "--policy", str(tmp_path / "p.yaml")] if command is simulate else ["--data",
                                                                                                      str(data)]
    for flag in flags:
        with pytest.raises(SystemExit) as refused:
            command.main([*source, "--output", str(tmp_path / "out.json"), flag, str(tmp_path / ".." /
                                                                                  tmp_path.name / "trace.csv")])
        err = capsys.readouterr().err
        assert refused.value.code == 2 and f"argument {flag}:" in err and "would write over" in err, err
    assert data.read_text() == before
    if "--plot" in flags:  # nor may the plot replace the report (or the report the plot)
        with pytest.raises(SystemExit) as refused:
            command.main([*source, "--output", str(tmp_path / "out.json"), "--plot", str(tmp_path / "out.json")])
        err = capsys.readouterr().err
        assert refused.value.code == 2 and "argument --plot:" in err and "the --output file" in err, err


@pytest.mark.parametrize(("argv", "flag"), [(["--seed", "-1"], "--seed"), (["--model-id", "A/../x"], "--model-id"),
                                            (["--records", "100000000000"], "--records")])
def test_train_gbm_names_a_bad_flag_before_training(tmp_path, capsys, argv, flag):
    from training import train_gbm

    with pytest.raises(SystemExit) as refused:
        train_gbm.main([*argv, "--model-path", str(tmp_path / "models")])
    assert refused.value.code == 2 and f"argument {flag}:" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("command", [train_lstm, evaluate])
@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_numpy_cannot_take_is_refused_naming_the_flag(tmp_path, capsys, command, seed):
    """2**32 passed the flag and failed inside the Ray Train worker, after the data was read, with a traceback."""
    with pytest.raises(SystemExit) as refused:
        command.main(["--data", str(tmp_path / "never-read.csv"), "--seed", seed, "--output", str(tmp_path / "r.json")]
                     if command is evaluate else ["--data", str(tmp_path / "never-read.csv"), "--seed", seed])
    assert refused.value.code == 2 and "argument --seed:" in capsys.readouterr().err


def test_an_unreachable_store_is_one_line_naming_it_not_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ray.is_initialized", lambda: False)  # not the test session's store actor: the environment's
    monkeypatch.delenv("INFLUX_HOST", raising=False)
    monkeypatch.setenv("PROMETHEUS_URL", "http://127.0.0.1:1")  # nothing listens there
    code = train_lstm.main(["--from-store", "--model-path", str(tmp_path / "models")])
    error = capsys.readouterr().err
    assert code == 2 and "train_lstm: error:" in error and "Traceback" not in error, error
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(("command", "extra"), [(train_lstm.main, []), (tune.main, ["--output", "t.json"])])
def test_since_without_the_store_is_refused_not_ignored(command, extra, capsys):
    with pytest.raises(SystemExit) as exit_info:
        command(["--data", "x.csv", "--since", "3d", *extra])
    assert exit_info.value.code == 2 and "--since: applies to --from-store only" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "named"), [
    (["--sequence-length", "30"], "--sequence-length"),
    (["--epochs", "5", "--hidden-size", "8"], "--epochs, --hidden-size"),
    (["--num-workers", "2"], "--num-workers"),
    (["--use-gpu"], "--use-gpu"),
    (["--cpus-per-worker", "2"], "--cpus-per-worker"),
])
def test_evaluate_refuses_training_flags_with_a_registered_model(extra, named, capsys):
    """They were silently ignored: the report was of the model's own window and training, the run exited 0."""
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--data", "x.csv", "--model", "power_lstm/1", *extra, "--output", "r.json"])
    assert exit_info.value.code == 2
    assert f"{named}: not with --model (the registered model is evaluated as trained)" in capsys.readouterr().err


def test_evaluate_refuses_a_model_path_without_a_model(capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--data", "x.csv", "--model-path", "/models", "--output", "r.json"])
    assert "--model-path: only with --model" in capsys.readouterr().err


def test_a_command_line_under_the_template_s_ray_token_refuses_to_start(tmp_path, capsys, monkeypatch):
    """Only the Serve apps checked it: a RayJob or RayCronJob cluster applied with the Secret template's Ray token
    ran its training (and its dashboard and job API) behind a token anyone with the repository knows."""
    monkeypatch.setenv("RAY_AUTH_TOKEN", "REPLACE_ME-ray-auth-token")
    data = _csv(tmp_path, GOOD_HEADER + _long_series())
    assert train_lstm.main(["--data", str(data), "--model-path", str(tmp_path / "models")]) == 2
    assert "Ray's auth token (RAY_AUTH_TOKEN, Secret kcloud-ray-auth) is still" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("flag", ["--model-path", "--storage-path"])
def test_regression_a_folder_the_result_cannot_be_written_in_is_refused_before_training(tmp_path, capsys, flag):
    """A --model-path that was a file was found only when the trained model was published, its training lost."""
    blocker = tmp_path / "file.csv"
    blocker.write_text("")
    data = _csv(tmp_path, GOOD_HEADER + _long_series())
    folders = {"--model-path": str(tmp_path / "models"), flag: str(blocker / "sub")}
    code = train_lstm.main(["--data", str(data), "--step", "1min", "--horizon", "5min", "--sequence-length", "10",
                            *(part for pair in folders.items() for part in pair)])
    error = capsys.readouterr().err
    assert code == 2 and f"train_lstm: error: {flag} " in error and "is a file" in error, error
    if flag == "--model-path":
        from training import train_gbm

        assert train_gbm.main(["--records", "200", "--model-path", str(blocker)]) == 2
        assert "train_gbm: error: --model-path" in capsys.readouterr().err


@pytest.mark.parametrize("command", [evaluate.main, simulate.main])
def test_a_plot_without_matplotlib_is_refused_before_the_run(command, tmp_path, capsys, monkeypatch):
    """Regression: on an install without the `plot` extra the picture failed after the whole backtest, with a
    traceback, and the report was never written."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "matplotlib" else
                        real(name, *args))
    with pytest.raises(SystemExit) as stop:
        command(["--data", str(tmp_path / "t.csv"), "--output", str(tmp_path / "r.json"), "--plot",
                 str(tmp_path / "r.png")])
    assert stop.value.code == 2
    assert "argument --plot: drawing a picture needs matplotlib: pip install 'kcloud-opt-predictor[plot]'; or " \
        "leave --plot out" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "flag"), [(evaluate, "--data"), (evaluate, "--output"), (simulate, "--trace"),
                                               (preprocess, "--output"), (train_lstm, "--data")])
def test_a_path_through_a_symlink_loop_is_one_line_naming_it(tmp_path, capsys, command, flag):
    """Python 3.11 raises RuntimeError for a symlink loop where a path is resolved: it ended in a traceback."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    paths = {"--data": str(_csv(tmp_path, GOOD_HEADER + _long_series())), "--output": str(tmp_path / "out.json"),
             "--trace": str(tmp_path / "trace.csv"), "--policy": str(tmp_path / "p.yaml")}
    paths[flag] = str(tmp_path / "a" / "x")
    wanted = ["--trace", "--policy", "--output"] if command is simulate else ["--data", "--output"]
    argv = [part for name in wanted if command is not train_lstm or name != "--output" for part in (name, paths[name])]
    try:
        code = command.main([*argv, *(["--epochs", "4"] if command is train_lstm else [])])
    except SystemExit as refused:
        code = refused.code
    err = capsys.readouterr().err
    assert code == 2 and "runs through a symlink loop" in err and "Traceback" not in err, err

"""A small Ray Train job through the real command lines, then the backtest contract on real data."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from core.registry import ModelRegistry
from tests.conftest import SMALL_POWER
from tests.fakes.trainer import serve_lstm_alone
from training import evaluate, train_lstm
from training.power.forecaster import PowerForecaster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = SMALL_POWER


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory, served_models, monkeypatch_module):
    """A registry of this module's own, where MODEL_PATH points, holding the session's first power_lstm version
    (`train_lstm --data <the real sample>` with SMALL's flags) as its only and active one."""
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(served_models / "power_lstm" / "1", root / "power_lstm" / "1")
    ModelRegistry(root).activate("power_lstm", 1)
    monkeypatch_module.setenv("MODEL_PATH", str(root))
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_train_registers_an_active_calibrated_model(registry_root):
    registry = ModelRegistry(registry_root)
    assert registry.versions("power_lstm") == [1]
    folder, metadata = registry.get("power_lstm")
    assert metadata.model_type == "lstm"
    assert metadata.data_span is not None and sorted(metadata.data_span.series) == [
        "hybrid_1", "radiance_1", "sysbench_2"]
    assert metadata.feature_spec["horizon_steps"] == 10
    for key in ("mae", "rmse", "mape", "coverage", "mean_confidence", "hit_rate"):
        assert math.isfinite(metadata.metrics[key]), key
    forecaster = PowerForecaster.load(folder)
    assert forecaster.horizon == 10 and forecaster.sequence_length == 15
    assert forecaster.pipeline.spec_hash == metadata.feature_spec_hash


def test_backtest_contract_on_real_sample(tmp_path, registry_root, upm_sample):
    report_path, plot_path = tmp_path / "report.json", tmp_path / "report.png"
    code = evaluate.main(["--data", str(upm_sample), *SMALL, "--train-fraction", "0.8",
                          "--output", str(report_path), "--plot", str(plot_path)])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["horizon_steps"] == 10 and report["step_seconds"] == 120
    assert report["test_points"] > 50
    assert {"lstm", "last_value", "lightgbm"} <= set(report["metrics"])
    for name, metrics in report["metrics"].items():
        assert {"mae", "rmse", "mape"} <= set(metrics), name
        assert metrics["rmse"] >= metrics["mae"] > 0
    assert {"coverage", "nominal_coverage"} <= set(report["metrics"]["lstm"])
    assert 0.0 <= report["metrics"]["lstm"]["coverage"] <= 1.0
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_backtest_of_a_registered_model(tmp_path, registry_root, upm_sample):
    report_path = tmp_path / "registered.json"
    code = evaluate.main(["--data", str(upm_sample), "--step", "2min", "--horizon", "20min",
                          "--model", "power_lstm/1", "--output", str(report_path)])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert {"source": "registry", "model_id": "power_lstm", "version": 1}.items() <= report["model"].items()
    # trained on 90 % of every series: scored only on the last 10 %, whatever --train-fraction says
    assert evaluate.main(["--data", str(upm_sample), "--step", "2min", "--horizon", "20min", "--model",
                          "power_lstm/1", "--train-fraction", "0.5", "--output", str(tmp_path / "half.json")]) == 0
    half = json.loads((tmp_path / "half.json").read_text())
    assert half["test_points"] == report["test_points"] > 0
    assert set(report["model"]["data_span"]["series_end"]) == set(report["data"]["series"])


def test_second_training_is_compared_with_the_active_model(registry_root, upm_sample, capsys):
    assert train_lstm.main(["--data", str(upm_sample), *SMALL]) == 0
    registry = ModelRegistry(registry_root)
    assert registry.versions("power_lstm") == [1, 2]
    assert "on the same holdout" in capsys.readouterr().err


def test_mismatched_model_step_is_refused(tmp_path, registry_root, upm_sample, capsys):
    code = evaluate.main(["--data", str(upm_sample), "--step", "1min", "--horizon", "20min",
                          "--model", "power_lstm", "--output", str(tmp_path / "r.json")])
    assert code == 2
    assert "--step" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_a_registered_model_that_does_not_say_what_it_trained_on_is_refused(tmp_path, registry_root, upm_sample,
                                                                           capsys):
    """Regression: a version without data_span (older metadata) was scored on the whole test part, rows it may have
    trained on among them, with only `data_span: null` in the report to say so."""
    copy = tmp_path / "models"
    shutil.copytree(Path(registry_root) / "power_lstm" / "1", copy / "power_lstm" / "1")
    metadata_file = copy / "power_lstm" / "1" / "metadata.json"
    metadata_file.write_text(json.dumps({**json.loads(metadata_file.read_text()), "data_span": None}))
    code = evaluate.main(["--data", str(upm_sample), "--step", "2min", "--horizon", "20min", "--model", "power_lstm/1",
                          "--model-path", str(copy), "--output", str(tmp_path / "r.json")])
    assert code == 2 and "records no data_span" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_train_from_the_telemetry_store(tmp_path, telemetry_store, upm_sample):
    """Real runs written into the cluster's store actor (ending now), then `train_lstm --from-store --since 1d`.

    The session's store also holds short series (replayed minutes, other tests' nodes): those are left out.
    """
    import pandas as pd

    from core.stores.remote import RemoteStore
    from core.stores.window import replay_samples
    from core.telemetry_csv import load_telemetry_csv

    frame = load_telemetry_csv(upm_sample)
    now = pd.Timestamp.now(tz="UTC").floor("60s")
    for node in ("hybrid_1", "radiance_1"):
        minutes = frame[frame["node_id"] == node].set_index("timestamp")[["power_watts", "cpu_utilization"]]
        minutes = minutes.resample("60s").mean().dropna()
        samples = []
        for offset, (_, row) in enumerate(minutes.iterrows()):
            stamp = (now - pd.Timedelta(minutes=len(minutes) - 1 - offset)).to_pydatetime()
            samples += replay_samples(stamp, f"stored-{node}", row.to_dict())
        RemoteStore().write(samples)
    models = tmp_path / "models"
    assert train_lstm.main(["--from-store", "--since", "1d", "--model-path", str(models), *SMALL]) == 0
    _, metadata = ModelRegistry(models).get("power_lstm")
    assert {"stored-hybrid_1", "stored-radiance_1"} <= set(metadata.data_span.series)
    assert metadata.data_span.rows > 100


def test_workers_the_cluster_cannot_place_fail_the_run_with_what_they_asked_for(tmp_path, ray_cluster, upm_sample,
                                                                                 monkeypatch, capsys):
    """Regression: `--use-gpu` on a cluster without GPUs retried the worker group's start without end (Ray's default),
    holding the model's retrain lock until the job was stopped by hand."""
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "2")  # Ray Train hands it to its controller
    monkeypatch.setattr("training.power.ray_trainer.STARTUP_TRIES", 2)
    serve_lstm_alone(monkeypatch)  # the LightGBM partner, fitted first, is not what this is about
    code = train_lstm.main(["--data", str(upm_sample), *SMALL, "--use-gpu", "--model-path", str(tmp_path / "models"),
                            "--state-path", str(tmp_path / "state")])
    err = capsys.readouterr().err
    assert code == 2
    assert "Ray Train could not place 1 worker(s), each reserving CPU 1, GPU 1, in 2 tries; the cluster has" in err
    assert "GPU 0" in err and "or no GPU (train_lstm's --num-workers, --cpus-per-worker, --use-gpu" in err
    assert ModelRegistry(tmp_path / "models").versions("power_lstm") == []

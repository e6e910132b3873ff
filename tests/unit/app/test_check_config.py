"""`python -m app.check_config [PATH]` (make check-config CONFIG=PATH): a config checked without starting
anything; the effective settings and exit 0, or file, dotted key and reason and exit 2 (issue 12)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.check_config import main, masked
from tests.paths import REPO_ROOT, TEST_DATA

SEED = TEST_DATA / "seed" / "config.yaml"


def test_a_valid_file_prints_every_effective_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(SEED)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# {SEED}: valid\n")
    settings = yaml.safe_load(out)
    assert list(settings)[:3] == ["predictor", "models", "features"]
    assert set(settings) == {"predictor", "models", "features", "auto_scaling", "workloads", "telemetry",
                             "model_path", "storage_path", "influx_host", "gpu_monitoring_enabled", "ipmi_hosts"}
    assert settings["models"]["cost_predictor"]["type"] == "lightgbm"  # the file says gradient_boosting
    assert settings["models"]["power_predictor"]["sequence_length"] == 168
    assert settings["auto_scaling"]["power_based"]["cooldown_period"] == 300
    assert settings["predictor"]["max_gap"] == 300


def test_errors_name_the_file_the_dotted_key_and_the_reason(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(SEED.read_text(encoding="utf-8").replace("hidden_size: 128", "hidden_size: -2")
                    .replace("scale_in_threshold: 50", "scale_in_threshold: 90") + "bogus: 1\n", encoding="utf-8")
    assert main([str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"{path}: bogus: unknown key",
        f"{path}: auto_scaling.power_based: scale_in_threshold (90) must be below scale_out_threshold (80)",
        f"{path}: predictor.models.power_predictor.hidden_size: Input should be greater than or equal to 1 (got -2)",
    ]


@pytest.mark.parametrize(("text", "expected"), [
    (None, "config file not found"),
    ("predictor: [unclosed\n", "not valid YAML"),
    ("- a list\n", "top level must be a mapping"),
    ("auto_scaling:\n  policies:\n    - {name: p, target: {kind: ray_serve, app: a, deployment: d}, max_replicas: 0}\n",
     "auto_scaling.policies[0]: max_replicas: Input should be greater than or equal to 1 (got 0)"),
])
def test_unreadable_or_invalid_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None,
                                            expected: str) -> None:
    path = tmp_path / "config.yaml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: ") and expected in err


def test_without_a_path_the_file_every_command_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KCLOUD_CONFIG", raising=False)
    monkeypatch.delenv("MODEL_PATH", raising=False)
    assert main([]) == 0
    assert capsys.readouterr().out.startswith("# no config file (no $KCLOUD_CONFIG, ./config.yaml or configs/")
    (tmp_path / "config.yaml").write_text("model_path: here\n")
    monkeypatch.setenv("MODEL_PATH", "/srv/models")
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# config.yaml: valid\n# effective settings; durations in seconds; from the environment: "
                          "MODEL_PATH\n")
    assert yaml.safe_load(out)["model_path"] == "/srv/models"


def test_secrets_are_masked() -> None:
    shown = masked({"storage_path": "s3://key:s3cr3t@bucket/runs", "store": {"INFLUX_TOKEN": "abc", "n": 1},
                    "hosts": ["https://u:pw@h:8086", "plain"]})
    assert shown == {"storage_path": "s3://key:********@bucket/runs", "store": {"INFLUX_TOKEN": "********", "n": 1},
                     "hosts": ["https://u:********@h:8086", "plain"]}


def test_the_command_line_never_shows_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("telemetry:\n  stale_after: soon\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "app.check_config", str(path)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"{path}: telemetry.stale_after: ") and "Traceback" not in done.stderr

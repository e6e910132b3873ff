"""The autoscaler's settings: `auto_scaling` and `workloads` of the config file, the controller's environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.actuators.base import ActuationError
from autoscaler.actuators.kubernetes import load_api_client
from autoscaler.settings import (
    DEFAULT_DASHBOARD_URL,
    AutoscalerConfig,
    ControllerEnvironment,
    ControllerSettings,
    load_autoscaler_config,
)
from core.settings import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_autoscaler_config(path, environ={})
    return str(caught.value)


def test_defaults(tmp_path: Path) -> None:
    config = load_autoscaler_config(write(tmp_path, ""), environ={})
    assert config == AutoscalerConfig()
    assert config.auto_scaling.power_based.cooldown_period == 300
    assert (config.auto_scaling.evaluation_interval, config.workloads) == (30, {})


@pytest.mark.parametrize(("text", "expected"), [("30m", 1800), ("10min", 600), ("1h", 3600), ("90", 90)])
def test_durations(tmp_path: Path, text: str, expected: int) -> None:
    path = write(tmp_path, f"auto_scaling:\n  power_based:\n    cooldown_period: {text}\n")
    assert load_autoscaler_config(path, environ={}).auto_scaling.power_based.cooldown_period == expected


def test_thresholds_cross_check(tmp_path: Path) -> None:
    path = write(tmp_path, "auto_scaling:\n  power_based:\n    scale_in_threshold: 80\n")
    message = error_of(path)
    expected = "auto_scaling.power_based: scale_in_threshold (80) must be below scale_out_threshold (80)"
    assert expected in message


def test_workloads_map(tmp_path: Path) -> None:
    path = write(tmp_path, "workloads:\n  llm: [gpu-1, gpu-2]\n")
    assert load_autoscaler_config(path, environ={}).workloads == {"llm": ("gpu-1", "gpu-2")}
    message = error_of(write(tmp_path, "workloads:\n  llm: [gpu-1, '']\n"))
    assert message.startswith(f"{path}: workloads.llm[1]: String should have at least 1 character")
    message = error_of(write(tmp_path, "workloads:\n  llm: []\n"))  # a workload no node answers for
    assert message.startswith(f"{path}: workloads.llm: Tuple should have at least 1 item")
    message = error_of(write(tmp_path, "workloads:\n  llm: [gpu-1, gpu-2, gpu-1]\n"))  # its power summed twice
    assert message.startswith(f"{path}: workloads.llm: a node is listed more than once: gpu-1")


def test_controller_environment() -> None:
    assert ControllerEnvironment.from_env({}).ray_dashboard_url == DEFAULT_DASHBOARD_URL
    assert not ControllerEnvironment.from_env({}).in_cluster
    env = ControllerEnvironment.from_env({"RAY_DASHBOARD_URL": "http://head:8265", "KUBECONFIG": "/k",
                                          "KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert (env.ray_dashboard_url, env.kubeconfig, env.in_cluster) == ("http://head:8265", "/k", True)


def test_kubernetes_credentials_follow_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # in a pod, but without its service account files
    with pytest.raises(ActuationError, match="from the in-cluster service account"):
        load_api_client()
    missing = tmp_path / "no-kubeconfig"
    with pytest.raises(ActuationError, match=f"from {missing}"):
        load_api_client(str(missing))  # an explicit path wins over the service account


def test_controller_settings_are_frozen_and_strict() -> None:
    settings = ControllerSettings(state_file="s.sqlite")
    with pytest.raises(ValueError):
        settings.interval_s = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="interval"):
        ControllerSettings(state_file="s.sqlite", interval=5)  # type: ignore[call-arg]


def test_a_request_that_went_out_to_the_api_server_is_never_sent_again(tmp_path: Path) -> None:
    """urllib3's default retries send any method again after, say, a TLS error while reading the answer: a scale
    that had landed was sent twice, and the second's 409 taken for a refusal (the cooldown freed)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n")
    retries = load_api_client(str(kubeconfig)).configuration.retries
    assert (retries.connect, retries.read, retries.other, retries.status) == (3, 2, 0, 0)
    assert not retries.is_retry("PATCH", 500) and "PATCH" not in retries.allowed_methods  # read errors: GETs only

"""The collectors' settings: config keys with their environment overrides, and each node's environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.settings import CollectorConfig, NodeSettings, load_collector_config, parse_bmc_target
from core.settings import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path | None = None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_collector_config(path, environ={} if environ is None else environ)
    return str(caught.value)


def test_defaults(tmp_path: Path) -> None:
    config = load_collector_config(write(tmp_path, ""), environ={})
    assert config == CollectorConfig()
    assert (config.gpu_monitoring_enabled, config.ipmi_hosts, config.telemetry.stale_after) == (True, (), 120)


def test_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "gpu_monitoring_enabled: true\nipmi_hosts: [bmc0]\n")
    config = load_collector_config(path, environ={"GPU_MONITORING_ENABLED": "No", "IPMI_HOSTS": "bmc1, bmc2:623"})
    assert config.gpu_monitoring_enabled is False
    assert config.ipmi_hosts == ("bmc1", "bmc2:623")
    assert load_collector_config(path, environ={"GPU_MONITORING_ENABLED": "TRUE"}).gpu_monitoring_enabled is True
    assert load_collector_config(path, environ={"GPU_MONITORING_ENABLED": "0"}).gpu_monitoring_enabled is False
    assert load_collector_config(path, environ={"IPMI_HOSTS": ""}).ipmi_hosts == ("bmc0",)  # empty: unset


def test_bad_gpu_flag_names_variable() -> None:
    message = error_of(environ={"GPU_MONITORING_ENABLED": "maybe"})
    assert message.startswith("GPU_MONITORING_ENABLED: ")
    assert "'maybe'" in message


@pytest.mark.parametrize("value", ["bmc1,,bmc2", "bmc1:0", "bmc1:70000", "bmc1:ipmi", ":623", "[::1]:y"])
def test_bad_ipmi_hosts_env_refused(value: str) -> None:
    assert error_of(environ={"IPMI_HOSTS": value}).startswith("IPMI_HOSTS: ")


def test_bad_ipmi_hosts_file_entry_refused(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "ipmi_hosts: [bmc1, 'bmc2:99999']\n"))
    assert "ipmi_hosts[1]: port 99999 out of range; use 1..65535" in message


def test_an_ipmi_hosts_entry_with_a_login_is_refused_without_showing_it() -> None:
    """Regression: the entry was quoted back, and a login written into it (`user:password@host`) with it."""
    for login in ("admin:S3cretPass@10.0.0.5", "admin:S3cretPass@bmc2:623", "admin:S3cretPass@[fe80::2]:623",
                  "admin:S3cretPass:bmc2:623"):
        message = error_of(environ={"IPMI_HOSTS": f"bmc1,{login}"})
        assert message.startswith("IPMI_HOSTS: ") and "entry 2: not 'host[:port]'" in message, message
        assert "S3cret" not in message and "admin" not in message


def test_bmc_targets_with_ports_and_ipv6() -> None:
    hosts = load_collector_config(environ={"IPMI_HOSTS": "bmc1, bmc2:6230,[fe80::1]:624,::1 , 10.0.0.5:623"},
                                  path=None).ipmi_hosts
    assert [parse_bmc_target(host) for host in hosts] == [("bmc1", 623), ("bmc2", 6230), ("fe80::1", 624),
                                                          ("::1", 623), ("10.0.0.5", 623)]
    assert load_collector_config(environ={"IPMI_HOSTS": " "}).ipmi_hosts == ()


def test_unknown_top_level_key_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "no_such_key: 1\n")
    assert error_of(path) == f"{path}: no_such_key: unknown key"


# -- the node's environment ------------------------------------------------------------------------------
def test_node_settings_from_the_environment() -> None:
    node = NodeSettings.from_env({"NODE_NAME": " gpu-7 ", "NPU_MONITORING_ENABLED": "no", "NVML_LIBRARY_PATH": "/x.so",
                                  "NPU_SMI_PATH": "/bin/npu-smi", "XPU_SMI_PATH": "", "UNRELATED": "1"})
    assert (node.node_name, node.npu_monitoring_enabled, node.nvml_library_path) == ("gpu-7", False, "/x.so")
    assert (node.npu_smi_path, node.xpu_smi_path) == ("/bin/npu-smi", None)
    assert NodeSettings.from_env({}) == NodeSettings.from_env({"NODE_NAME": "  "})


def test_node_settings_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "before")
    node = NodeSettings.from_env()
    monkeypatch.setenv("NODE_NAME", "after")
    assert node.node_name == "before"
    with pytest.raises(ValueError):
        node.node_name = "changed"  # type: ignore[misc]


def test_credentials_from_env(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    credentials = NodeSettings.from_env({"IPMI_USERNAME": "root", "IPMI_PASSWORD": "pw"}).ipmi_credentials()
    assert credentials.password.get_secret_value() == "pw"
    env = {"IPMI_USERNAME": "root", "IPMI_PASSWORD": "env", "IPMI_PASSWORD_FILE": str(secret)}
    both = NodeSettings.from_env(env).ipmi_credentials()
    assert (both.username, both.password.get_secret_value()) == ("root", "from-file")  # the file wins
    assert "from-file" not in repr(both) and "env" not in repr(NodeSettings.from_env(env).ipmi_password)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"IPMI_PASSWORD": "pw"}, "IPMI_USERNAME"),
        ({"IPMI_USERNAME": " ", "IPMI_PASSWORD": "pw"}, "IPMI_USERNAME"),
        ({"IPMI_USERNAME": "root"}, "IPMI_PASSWORD"),
        ({"IPMI_USERNAME": "root", "IPMI_PASSWORD": ""}, "IPMI_PASSWORD"),
        ({"IPMI_USERNAME": "root", "IPMI_PASSWORD_FILE": "/nonexistent/pw"}, "IPMI_PASSWORD_FILE"),
    ],
)
def test_missing_credentials_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        NodeSettings.from_env(env).ipmi_credentials()


def test_empty_password_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("\n")
    with pytest.raises(ConfigError, match="IPMI_PASSWORD_FILE .* is empty"):
        NodeSettings.from_env({"IPMI_USERNAME": "root", "IPMI_PASSWORD_FILE": str(tmp_path / "pw")}).ipmi_credentials()


def test_ingestion_bounds_and_spill_cap(tmp_path: Path) -> None:
    defaults = CollectorConfig().telemetry
    assert (defaults.future_tolerance, defaults.max_node_watts, defaults.max_spill_mib) == (300, 15_000.0, 512)
    config = load_collector_config(write(tmp_path, "telemetry:\n  future_tolerance: 1min\n  max_node_watts: 40000\n"
                                                   "  max_spill_mib: 64\n"), environ={})
    assert (config.telemetry.future_tolerance, config.telemetry.max_node_watts) == (60, 40_000.0)
    assert config.telemetry.max_spill_mib == 64
    for bad in ("max_node_watts: .inf", "max_node_watts: 0", "max_spill_mib: 0", "future_tolerance: 0s"):
        assert f"telemetry.{bad.split(':')[0]}" in error_of(write(tmp_path, f"telemetry:\n  {bad}\n"))

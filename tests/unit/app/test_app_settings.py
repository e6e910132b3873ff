"""The app's settings: the whole config file at once, the builder's args, the API token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from app import local_token
from app.settings import AppArgs, ServeConfigArgs, ServiceConfig, load_service_config, read_api_token
from autoscaler.policy_config import policies_from_config
from core.settings import TOP_LEVEL_KEYS, ConfigError
from tests.paths import REPO_ROOT

EXAMPLE = REPO_ROOT / "config.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_whole_file_has_every_packages_keys() -> None:
    assert set(ServiceConfig.model_fields) == TOP_LEVEL_KEYS
    assert set(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))) == TOP_LEVEL_KEYS


def _keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every key a config section holds, nested ones as dotted paths."""
    for name, field in model.model_fields.items():
        yield prefix + name
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            yield from _keys(nested, f"{prefix}{name}.")


def test_the_example_file_documents_every_key() -> None:
    """config.example.yaml names every key, set or commented out ("# key:"), so no setting is hidden from users."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    named = {line.strip().lstrip("#").strip().split(":")[0] for line in lines}
    missing = [key for key in _keys(ServiceConfig) if key.rsplit(".", 1)[-1] not in named]
    assert not missing


def test_defaults_and_the_example_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_service_config(environ={})
    assert config == ServiceConfig() == load_service_config(EXAMPLE, environ={})
    assert (config.model_path, config.influx_host, config.gpu_monitoring_enabled, config.ipmi_hosts) == (
        "trained_models", None, True, ())
    assert config.auto_scaling.power_based.cooldown_period == 300 and config.predictor.horizon_steps == 60


def test_every_error_of_every_package_in_one_pass(tmp_path: Path) -> None:
    path = write(tmp_path, "predictor:\n  step: 5 parsecs\nauto_scaling:\n  power_based:\n    enabeld: true\n"
                           "telemetry:\n  max_buffered_samples: 5\ninflux_hots: x\n")
    with pytest.raises(ConfigError) as caught:
        load_service_config(path, environ={})
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: influx_hots: unknown key"
    assert f"{path}: auto_scaling.power_based.enabeld: unknown key" in lines
    assert any(line.startswith(f"{path}: predictor.step: ") and "parsecs" in line for line in lines)
    assert any(line.startswith(f"{path}: telemetry.max_buffered_samples: ") for line in lines)
    assert len(lines) == 4


def test_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "model_path: in_file\ngpu_monitoring_enabled: true\nipmi_hosts: [bmc0]\n")
    environ = {"MODEL_PATH": "/srv/models", "GPU_MONITORING_ENABLED": "No", "IPMI_HOSTS": "bmc1, bmc2:623",
               "INFLUX_HOST": "influx:8086"}
    config = load_service_config(path, environ=environ)
    assert config.model_path == "/srv/models" and config.influx_host == "influx:8086"
    assert config.gpu_monitoring_enabled is False
    assert config.ipmi_hosts == ("bmc1", "bmc2:623")


def test_the_whole_config_serves_each_package(tmp_path: Path) -> None:
    path = write(tmp_path, "auto_scaling:\n  policies:\n    - {name: web, target: {kind: ray_serve, app: a, "
                           "deployment: d}}\n")
    assert [policy.name for policy in policies_from_config(load_service_config(path, environ={}))] == ["web"]


def test_config_is_frozen_and_round_trips() -> None:
    config = ServiceConfig()
    with pytest.raises(ValueError):
        config.model_path = "elsewhere"  # type: ignore[misc]
    assert ServiceConfig.model_validate(config.model_dump()) == config


# -- the builder's args ---------------------------------------------------------------------------------
def test_args_resolve_the_config_file_the_actors_will_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "model_path: from_file\n")
    monkeypatch.setenv("KCLOUD_CONFIG", str(path))
    monkeypatch.delenv("MODEL_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    args = AppArgs().with_absolute_paths()
    assert args.config_path == str(path.resolve())
    assert args.model_path == str(tmp_path / "from_file")


def test_dashboard_url_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_DASHBOARD_URL", "http://head:8265")
    assert AppArgs().autoscaler.ray_dashboard_url == "http://head:8265"
    monkeypatch.delenv("RAY_DASHBOARD_URL")
    assert AppArgs().autoscaler.ray_dashboard_url == "http://127.0.0.1:8265"


# -- the API token --------------------------------------------------------------------------------------
def test_api_token_from_file_or_environment(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(" t0ken-0123456789ab \n")
    env = "env-token-0123456789"
    assert read_api_token(str(token), environ={"API_TOKEN": env}) == "t0ken-0123456789ab"  # the args' file wins
    assert read_api_token(None, environ={"API_TOKEN_FILE": str(token), "API_TOKEN": env}) == "t0ken-0123456789ab"
    assert read_api_token(None, environ={"API_TOKEN": env}) == env
    assert read_api_token(None, environ={"API_TOKEN": ""}) is None


def test_a_short_api_token_is_refused_naming_where_it_came_from_not_itself(tmp_path: Path) -> None:
    """Regression: API_TOKEN=test went in silently, guarding retraining and the policies that scale the cluster."""
    with pytest.raises(ConfigError, match="API_TOKEN holds a token of 4 characters: use at least 16") as refused:
        read_api_token(None, environ={"API_TOKEN": "test"})
    assert "'test'" not in str(refused.value)
    token = tmp_path / "token"
    token.write_text("short-token\n")
    with pytest.raises(ConfigError, match=f"API_TOKEN_FILE {token} holds a token of 11 characters"):
        read_api_token(str(token), environ={})


def test_empty_api_token_file_is_an_error_naming_it(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("  \n")
    with pytest.raises(ConfigError, match=f"API_TOKEN_FILE {token} is empty"):
        read_api_token(str(token), environ={})
    with pytest.raises(ConfigError, match="cannot be read"):
        read_api_token(str(tmp_path / "missing"), environ={})


# -- secrets stay out of the args; the local token of `make run` ----------------------------------------
@pytest.mark.parametrize("key", ["INFLUX_TOKEN", "influx_token", "IPMI_PASSWORD", "AWS_SECRET_ACCESS_KEY"])
def test_a_secret_in_store_settings_is_refused_naming_it(key: str) -> None:
    with pytest.raises(ValueError, match=f"{key}: secrets .*do not belong in app args") as refused:
        AppArgs.model_validate({"telemetry": {"store_settings": {key: "s3cr3t", "INFLUX_HOST": "http://db:8086"}}})
    assert f"{key}_FILE" in str(refused.value) and "s3cr3t" not in str(refused.value)


def test_a_url_with_a_password_in_the_args_is_refused_without_showing_it() -> None:
    """The Serve REST API shows app args: a Prometheus or dashboard URL with user:password@ would leak there."""
    with pytest.raises(ValueError, match="PROMETHEUS_URL: secrets .*do not belong") as refused:
        AppArgs.model_validate({"telemetry": {"store_settings": {
            "PROMETHEUS_URL": "https://12345:glc_s3cr3t@prom.example/api/prom"}}})
    assert "s3cr3t" not in str(refused.value)
    with pytest.raises(ValueError, match="ray_dashboard_url") as refused:
        AppArgs.model_validate({"autoscaler": {"ray_dashboard_url": "http://admin:hunter2@head:8265"}})
    assert "hunter2" not in str(refused.value)
    plain = {"autoscaler": {"ray_dashboard_url": "http://head:8265"},
             "telemetry": {"store_settings": {"PROMETHEUS_URL": "https://prom.example/api/prom", "X": "a:b@c"}}}
    assert AppArgs.model_validate(plain).autoscaler.ray_dashboard_url == "http://head:8265"


@pytest.mark.parametrize(("telemetry", "field", "reason"), [
    ({"sources": ["gpu", "host"]}, "telemetry.sources", "unknown source(s) 'gpu'; choose from host, ipmi, npu, nvml"),
    ({"replay": {"path": "trace.csv", "speed": 0}}, "telemetry.replay.speed", "greater than 0"),
    ({"replay": {"path": "trace.csv", "speed": -2}}, "telemetry.replay.speed", "greater than 0"),
])
def test_telemetry_args_no_collector_could_start_with_are_refused_at_deploy(telemetry, field, reason) -> None:
    """Before, they were accepted, and every node's collector died in its constructor and was started again every
    round, the deploy reporting success."""
    with pytest.raises(ValidationError) as refused:
        AppArgs.model_validate({"telemetry": {"enabled": True, **telemetry}})
    [error] = refused.value.errors()
    assert ".".join(map(str, error["loc"])) == field and reason in error["msg"]
    assert AppArgs.model_validate({"telemetry": {"sources": ["nvml", "ipmi"], "replay": {"path": "t.csv",
                                                                                       "speed": 60}}})


def test_a_url_whose_user_is_an_api_key_is_a_secret_too() -> None:
    """The store and dashboard clients send a user given alone as Basic auth (an API key): in app args the Serve
    REST API would show it, and a check_config report masks it."""
    with pytest.raises(ValueError, match="PROMETHEUS_URL: secrets \\(or a URL with a login\\)") as refused:
        AppArgs.model_validate({"telemetry": {"store_settings": {"PROMETHEUS_URL": "https://glc_k3y@prom.example/"}}})
    assert "glc_k3y" not in str(refused.value)
    with pytest.raises(ValueError, match="a URL with a login does not belong in app args"):
        AppArgs.model_validate({"autoscaler": {"ray_dashboard_url": "http://k3y@head:8265"}})
    from app.check_config import masked

    assert masked({"url": "https://glc_k3y@prom.example/"}) == {"url": "https://********@prom.example/"}


def test_a_store_address_with_a_login_but_no_scheme_is_a_secret_too() -> None:
    """Regression: INFLUX_HOST=admin:s3cret@influx:8086 passed (urlsplit sees no user without a scheme) while the
    store client completes it with http:// and logs in with it; check_config printed it unmasked."""
    with pytest.raises(ValueError, match="INFLUX_HOST: secrets") as refused:
        AppArgs.model_validate({"telemetry": {"store_settings": {"INFLUX_HOST": "admin:s3cret@influx:8086"}}})
    assert "s3cret" not in str(refused.value)
    with pytest.raises(ValueError, match="a URL with a login does not belong in app args"):
        AppArgs.model_validate({"autoscaler": {"ray_dashboard_url": "admin:pw@127.0.0.1:8265"}})
    plain = {"INFLUX_HOST": "influx:8086", "INFLUX_ORG": "ops@example.com"}  # an org may be an e-mail address
    assert AppArgs.model_validate({"telemetry": {"store_settings": plain}}).telemetry.store_settings == plain
    from app.check_config import masked

    assert masked({"influx_host": "admin:s3cret@influx:8086"}) == {"influx_host": "admin:********@influx:8086"}
    assert masked({"influx_host": "influx:8086", "org": "ops@example.com"}) == {"influx_host": "influx:8086",
                                                                               "org": "ops@example.com"}


def test_secret_files_and_plain_settings_are_accepted() -> None:
    settings = {"INFLUX_HOST": "http://db:8086", "INFLUX_TOKEN_FILE": "/run/secrets/influx", "INFLUX_ORG": "o"}
    assert AppArgs.model_validate({"telemetry": {"store_settings": settings}}).telemetry.store_settings == settings


def test_the_data_directory_and_batch_settings_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = AppArgs.model_validate({"retrain": {"data_dir": "data"}, "batches": {"retention": "2h"}})
    assert args.with_absolute_paths().retrain.data_dir == str(tmp_path / "data")
    assert (args.batches.retention, args.batches.max_running, AppArgs().batches.retention) == (7200, 2, 86400)
    assert AppArgs().protect_reads is False


def test_the_local_token_is_generated_once_private_and_never_printed(tmp_path: Path, capsys) -> None:
    path = tmp_path / "state" / "api-token"
    assert local_token.main([str(path)]) == 0
    token = path.read_text().strip()
    assert len(token) >= 40 and path.stat().st_mode & 0o777 == 0o600
    first = capsys.readouterr().err
    assert str(path) in first and f"$(cat {path})" in first and token not in first
    assert local_token.main([str(path)]) == 0
    assert path.read_text().strip() == token and token not in capsys.readouterr().err
    assert read_api_token(None, environ={"API_TOKEN_FILE": str(path)}) == token


def test_a_token_path_that_cannot_hold_a_token_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").write_text("")
    (tmp_path / "file").write_text("x")
    for path, reason in ((tmp_path, "is not a file"), (tmp_path / "empty", "is empty"),
                         (tmp_path / "file" / "api-token", "a folder on its path is a file")):
        assert local_token.main([str(path)]) == 2  # was 0 (the server then refused it) or a traceback
        assert reason in capsys.readouterr().err


def test_deployment_options_are_code_level_args_never_a_serve_configs() -> None:
    options = {"ingress": {"num_replicas": 2}, "power_predictor": {"user_config": {"batching": False}}}
    assert AppArgs.model_validate(options).ingress.num_replicas == 2  # Python callers: tests, benchmarks, soak
    with pytest.raises(ValidationError) as caught:
        ServeConfigArgs.model_validate({"state_path": "state", **options})
    message = str(caught.value)
    assert "args.ingress: deployment options are not app args in a Serve config" in message
    assert "move them to application 'kcloud', deployments: [{name: ApiIngress, ...}]" in message
    assert "move them to application 'kcloud-power', deployments: [{name: PowerPredictor, ...}]" in message
    assert "cost_predictor" not in message and "False" not in message  # names keys, never values
    serve_args = ServeConfigArgs.model_validate({"state_path": "state"})
    assert serve_args.model_dump() == AppArgs(state_path="state").model_dump()

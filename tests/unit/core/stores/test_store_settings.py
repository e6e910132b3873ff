"""The store's settings: the config file's influx_host under the environment under explicit settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.store_actor import TelemetryStoreService
from core.settings import ConfigError
from core.stores import create_store
from core.stores.influx import InfluxStore
from core.stores.settings import StoreSettings
from core.stores.sqlite import SqliteStore

INFLUX = {"INFLUX_ORG": "o", "INFLUX_BUCKET": "b"}


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("influx_host: influx.from-file\n", encoding="utf-8")
    return path


def test_influx_host_from_the_config_file_configures_the_store(config: Path) -> None:
    settings = StoreSettings.load(config_path=config, environ=INFLUX)
    assert settings.influx_host == "influx.from-file"
    store = create_store(settings)
    assert isinstance(store, InfluxStore) and store.url == "http://influx.from-file:8086"
    store.close()


def test_environment_overrides_the_file_and_explicit_settings_override_both(config: Path) -> None:
    env = {**INFLUX, "INFLUX_HOST": "influx.from-env"}
    assert StoreSettings.load(config_path=config, environ=env).influx_host == "influx.from-env"
    assert StoreSettings.load(config_path=config, environ={**env, "INFLUX_HOST": " "}).influx_host == (
        "influx.from-file")  # a blank variable is unset
    explicit = {"INFLUX_HOST": "influx.explicit", "TELEMETRY_DATA_DIR": "/srv/t"}
    chosen = StoreSettings.load(explicit, config_path=config, environ=env)
    assert (chosen.influx_host, chosen.telemetry_data_dir) == ("influx.explicit", "/srv/t")


def test_without_a_host_anywhere_the_embedded_store(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    settings = StoreSettings.load({"TELEMETRY_DATA_DIR": str(tmp_path / "t")}, config_path=tmp_path / "empty.yaml",
                                  environ={})
    with create_store(settings) as store:
        assert isinstance(store, SqliteStore)


def test_the_store_actor_body_reads_the_config_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in INFLUX.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("INFLUX_HOST", raising=False)
    service = TelemetryStoreService(None, config_path=str(config))
    assert isinstance(service.store, InfluxStore) and service.store.url == "http://influx.from-file:8086"
    service.store.close()


def test_influx_token_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    settings = StoreSettings.from_env({"INFLUX_TOKEN": "from-env", "INFLUX_TOKEN_FILE": str(secret)})
    assert settings.token().get_secret_value() == "from-file"
    assert "from-env" not in repr(settings)
    assert StoreSettings.from_env({"INFLUX_TOKEN": "from-env"}).token().get_secret_value() == "from-env"
    secret.write_text("")
    with pytest.raises(ConfigError, match=f"INFLUX_TOKEN_FILE {secret} is empty"):
        create_store({**INFLUX, "INFLUX_HOST": "influx", "INFLUX_TOKEN_FILE": str(secret)})


def test_secrets_are_not_read_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("influx_token: abc\n")
    with pytest.raises(ConfigError, match="influx_token: unknown key"):
        StoreSettings.load(config_path=path, environ={})


def test_retention_defaults_to_thirty_days_and_is_bounded() -> None:
    assert StoreSettings.from_env({}).telemetry_retention == 30 * 86400
    assert StoreSettings.load({"TELEMETRY_RETENTION": "90d"}, environ={}).telemetry_retention == 90 * 86400
    for bad in ("10min", "forever", "-1d"):
        with pytest.raises(ConfigError, match="TELEMETRY_RETENTION"):
            StoreSettings.from_env({"TELEMETRY_RETENTION": bad})

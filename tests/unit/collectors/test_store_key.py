"""The store the supervisor and its collectors carry (their `store_key`) names the store the settings reach.

Regression: it was the digest of the store actor's arguments alone, None for "the environment", so every store set
in the environment or the config file shared one key; after a switch to Prometheus (PROMETHEUS_URL set in the
ConfigMap) a collector's read-only answer deleted what an earlier one spilled, pending, for the writable InfluxDB."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors import supervisor
from collectors.settings import CollectorConfig
from collectors.store_actor import UNRESOLVED, store_identity

STORE_NAMES = ("INFLUX_HOST", "INFLUX_ORG", "INFLUX_BUCKET", "INFLUX_TOKEN", "INFLUX_TOKEN_FILE", "PROMETHEUS_URL",
               "TELEMETRY_DATA_DIR", "KCLOUD_CONFIG")


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A process environment without store settings, and an empty config file (`config(tmp_path)`)."""
    for name in STORE_NAMES:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "config.yaml").write_text("")
    return monkeypatch


def config(tmp_path: Path) -> str:
    return str(tmp_path / "config.yaml")


def test_switching_the_environment_to_prometheus_changes_the_store_key(environment, tmp_path: Path) -> None:
    environment.setenv("INFLUX_HOST", "http://influx:8086")
    environment.setenv("INFLUX_ORG", "o")
    environment.setenv("INFLUX_BUCKET", "b")
    influx = supervisor.store_key(None, config(tmp_path))
    environment.delenv("INFLUX_HOST")
    environment.setenv("PROMETHEUS_URL", "http://prom:9090")
    prometheus = supervisor.store_key(None, config(tmp_path))
    assert influx != prometheus
    assert supervisor.store_key(None, config(tmp_path)) == prometheus  # stable while nothing changes


def test_the_config_file_s_influx_host_is_part_of_the_key(environment, tmp_path: Path) -> None:
    environment.setenv("TELEMETRY_DATA_DIR", str(tmp_path / "t"))
    sqlite = supervisor.store_key(None, config(tmp_path))
    Path(config(tmp_path)).write_text("influx_host: influx.from-file\n")
    assert supervisor.store_key(None, config(tmp_path)) != sqlite


def test_a_token_change_keeps_the_key(environment, tmp_path: Path) -> None:
    settings = {"INFLUX_HOST": "influx", "INFLUX_ORG": "o", "INFLUX_BUCKET": "b"}
    environment.setenv("INFLUX_TOKEN", "t1")
    first = supervisor.store_key(settings, config(tmp_path))
    environment.setenv("INFLUX_TOKEN", "t2")
    assert supervisor.store_key(settings, config(tmp_path)) == first


def test_settings_that_do_not_resolve_are_marked_unresolved(environment, tmp_path: Path) -> None:
    assert store_identity({"TELEMETRY_RETENTION": "1s"}, config(tmp_path)) == UNRESOLVED
    assert store_identity(None, config(tmp_path)) != UNRESOLVED


def test_an_environment_switch_replaces_the_supervisor(environment, tmp_path: Path) -> None:
    started = []
    environment.setattr(supervisor, "start_store_actor", lambda *args: None)
    environment.setattr(supervisor, "start_head_singleton",
                        lambda service, name, fingerprint, stop, *args: started.append((fingerprint, args[-1])))
    environment.setenv("TELEMETRY_DATA_DIR", str(tmp_path / "t"))
    supervisor.start_telemetry(CollectorConfig(), config_path=config(tmp_path))
    supervisor.start_telemetry(CollectorConfig(), config_path=config(tmp_path))
    environment.setenv("PROMETHEUS_URL", "http://prom:9090")
    supervisor.start_telemetry(CollectorConfig(), config_path=config(tmp_path))
    (sqlite, store), again, (prometheus, switched) = started
    assert again == (sqlite, store)
    assert sqlite != prometheus and store != switched
    assert switched == supervisor.store_key(None, config(tmp_path))  # what its collectors carry

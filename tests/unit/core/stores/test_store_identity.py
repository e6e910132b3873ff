"""`StoreSettings.identity`: which store the settings reach (create_store's order), never a secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from core.stores.settings import StoreSettings

INFLUX = {"INFLUX_HOST": "http://influx:8086", "INFLUX_ORG": "o", "INFLUX_BUCKET": "b"}


def identity(**names: str) -> tuple[str, ...]:
    return StoreSettings.from_env(names).identity()


def test_influx_wins_over_prometheus_which_wins_over_sqlite(tmp_path: Path) -> None:
    everything = {**INFLUX, "PROMETHEUS_URL": "http://prom:9090", "TELEMETRY_DATA_DIR": str(tmp_path)}
    assert identity(**everything) == ("influxdb", "http://influx:8086", "o", "b")
    assert identity(**{**everything, "INFLUX_HOST": ""}) == ("prometheus", "http://prom:9090")
    assert identity(TELEMETRY_DATA_DIR=str(tmp_path)) == ("sqlite", str(tmp_path.resolve()))


@pytest.mark.parametrize("change", [{"INFLUX_HOST": "http://other:8086"}, {"INFLUX_ORG": "p"},
                                    {"INFLUX_BUCKET": "c"}])
def test_another_influx_host_org_or_bucket_is_another_store(change: dict[str, str]) -> None:
    assert identity(**{**INFLUX, **change}) != identity(**INFLUX)


def test_another_prometheus_or_data_directory_is_another_store(tmp_path: Path) -> None:
    assert identity(PROMETHEUS_URL="http://prom:9090") != identity(PROMETHEUS_URL="http://prom-2:9090")
    assert identity(TELEMETRY_DATA_DIR=str(tmp_path / "a")) != identity(TELEMETRY_DATA_DIR=str(tmp_path / "b"))


def test_the_same_store_given_differently_is_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokens, logins, Prometheus' metric names, the retention and a trailing slash do not change the store."""
    assert identity(**INFLUX, INFLUX_TOKEN="t1") == identity(**INFLUX, INFLUX_TOKEN="t2") == identity(**INFLUX)
    assert identity(PROMETHEUS_URL="https://u:p@prom/api/", PROMETHEUS_KEPLER_NAMES="0.7") == (
        identity(PROMETHEUS_URL="https://prom/api"))
    monkeypatch.chdir(tmp_path)
    relative = identity(TELEMETRY_DATA_DIR="t", TELEMETRY_RETENTION="7d")
    assert relative == identity(TELEMETRY_DATA_DIR=str(tmp_path / "t"))


def test_no_secret_appears_in_it() -> None:
    settings = StoreSettings.from_env({**INFLUX, "INFLUX_HOST": "https://admin:hunter2@influx:8086",
                                       "INFLUX_TOKEN": "s3cr3t-token"})
    assert settings.identity() == ("influxdb", "https://influx:8086", "o", "b")
    prometheus = StoreSettings.from_env({"PROMETHEUS_URL": "https://admin:hunter2@prom:9090"}).identity()
    assert prometheus == ("prometheus", "https://prom:9090")
    bare = StoreSettings.from_env({**INFLUX, "INFLUX_HOST": "admin:hunter2@influx:8086"}).identity()
    assert bare[1] == "http://influx:8086"
    assert settings.influx_token == SecretStr("s3cr3t-token")  # the token was read, and left out


@pytest.mark.parametrize("host", ["influx", "influx:8086", "http://influx", "http://influx:8086", "HTTP://INFLUX:8086/",
                                  " http://influx:8086// ", "http://u:p@Influx:8086", "http://influx:8086/?q=1#f"])
def test_every_spelling_of_an_influx_host_is_the_url_its_client_connects_to(host: str) -> None:
    assert identity(**{**INFLUX, "INFLUX_HOST": host}) == ("influxdb", "http://influx:8086", "o", "b")


@pytest.mark.parametrize(("url", "reached"), [
    ("http://prom", "http://prom:80"), ("HTTP://Prom:80/", "http://prom:80"), ("https://prom", "https://prom:443"),
    ("https://u:p@PROM:443/api//", "https://prom:443/api"), ("http://prom:9090/?x=1#top", "http://prom:9090"),
    ("http://[::1]:9090/", "http://[::1]:9090"), ("http://[FE80::1]", "http://[fe80::1]:80"),
])
def test_every_spelling_of_a_prometheus_url_is_the_url_its_client_connects_to(url: str, reached: str) -> None:
    assert identity(PROMETHEUS_URL=url) == ("prometheus", reached)


@pytest.mark.parametrize(("one", "other"), [
    ("http://influx:8086", "https://influx:8086"), ("influx", "influx:8087"), ("influx", "influx-2"),
    ("http://influx:8086/a", "http://influx:8086/b"), ("http://influx:8086/A", "http://influx:8086/a"),
])
def test_another_influx_scheme_port_or_path_is_another_store(one: str, other: str) -> None:
    assert identity(**{**INFLUX, "INFLUX_HOST": one}) != identity(**{**INFLUX, "INFLUX_HOST": other})


@pytest.mark.parametrize(("one", "other"), [
    ("http://prom", "https://prom"), ("http://prom", "http://prom:9090"), ("https://prom", "https://prom:80"),
    ("http://prom:9090/a", "http://prom:9090/b"),
])
def test_another_prometheus_scheme_port_or_path_is_another_store(one: str, other: str) -> None:
    assert identity(PROMETHEUS_URL=one) != identity(PROMETHEUS_URL=other)


@pytest.mark.parametrize(("names", "shown"), [
    ({**INFLUX, "INFLUX_HOST": " u:hunter2@influx:port "}, "influx:port"),
    ({**INFLUX, "INFLUX_HOST": "http://u:hunter2@[::1"}, "[::1"),
    ({"PROMETHEUS_URL": "https://u:hunter2@prom:99999"}, "prom:99999"),
    ({"PROMETHEUS_URL": "u:hunter2@prom:9090"}, "prom:9090"),  # no scheme: urllib cannot open it
])
def test_a_malformed_url_is_its_text_without_the_login(names: dict[str, str], shown: str) -> None:
    reached = identity(**names)
    assert shown in reached and "hunter2" not in repr(reached)

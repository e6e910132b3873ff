"""IPMI_BMC_MAP_FILE: each node polls only its own BMC with its own login; the flat IPMI_HOSTS list without it;
and each node's own GPU_MONITORING_ENABLED / IPMI_HOSTS win over what the head shipped."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from collectors import collector_actor
from collectors.nvml import NvmlSource
from collectors.settings import CollectorConfig, NodeSettings, TelemetryConfig, load_bmc_map, on_this_node
from collectors.sources import UnavailableSource, build_sources
from core.settings import ConfigError
from core.telemetry import SourceKind

MAP = """\
gpu-node-1:
  host: 10.0.0.11
  username: admin1
  password_file: gpu-node-1.password
gpu-node-2:
  host: "[fe80::2]"
  port: 6230
  username: admin2
  password: "s3cret-2"
gpu-node-3:
  host: bmc-3.example:624
"""


def write_map(tmp_path: Path, text: str = MAP, name: str = "bmc-map.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    (tmp_path / "gpu-node-1.password").write_text("s3cret-1\n", encoding="utf-8")
    return path


def node(environ: dict[str, str]) -> NodeSettings:
    return NodeSettings.from_env(environ)


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_bmc_map(path)
    return str(caught.value)


def test_each_node_gets_its_own_bmc_and_login(tmp_path: Path) -> None:
    path = write_map(tmp_path)
    settings = node({"IPMI_BMC_MAP_FILE": str(path), "IPMI_USERNAME": "fallback", "IPMI_PASSWORD": "fallback-pw"})
    hosts = ("shared-bmc",)  # ignored: the map decides
    (one,) = settings.bmc_targets("gpu-node-1", hosts)
    assert (one.address, one.credentials.username, one.credentials.password.get_secret_value()) == (
        "10.0.0.11", "admin1", "s3cret-1")  # password_file, read beside the map
    (two,) = settings.bmc_targets("gpu-node-2", hosts)
    assert (two.address, two.credentials.username, two.credentials.password.get_secret_value()) == (
        "[fe80::2]:6230", "admin2", "s3cret-2")
    (three,) = settings.bmc_targets("gpu-node-3", hosts)  # no login in the entry: the node's variables
    assert (three.address, three.credentials.username, three.credentials.password.get_secret_value()) == (
        "bmc-3.example:624", "fallback", "fallback-pw")
    assert settings.bmc_targets("cpu-node-9", hosts) == []  # not in the map: no BMC here
    assert "s3cret" not in repr(one) + repr(load_bmc_map(path))


def test_without_a_map_the_flat_list_is_this_node_s(tmp_path: Path) -> None:
    settings = node({"IPMI_USERNAME": "root", "IPMI_PASSWORD": "pw"})
    targets = settings.bmc_targets("n1", ("bmc-b:6230",))
    assert [(t.address, t.credentials.username) for t in targets] == [("bmc-b:6230", "root")]
    assert settings.bmc_targets("n1", ()) == []
    with pytest.raises(ConfigError, match="lists 2 BMCs without IPMI_BMC_MAP_FILE: each would be read as node 'n1'"):
        settings.bmc_targets("n1", ("bmc-a", "bmc-b:6230"))


def test_a_json_map_works_too(tmp_path: Path) -> None:
    path = write_map(tmp_path, json.dumps({"n1": {"host": "10.0.0.5", "username": "u", "password": "p"}}),
                     name="bmc-map.json")
    (target,) = node({"IPMI_BMC_MAP_FILE": str(path)}).bmc_targets("n1", ())
    assert (target.address, target.credentials.password.get_secret_value()) == ("10.0.0.5", "p")


@pytest.mark.parametrize(("text", "expected"), [
    ("n1: {host: bmc1, port: 70000}\n", "n1.port: Input should be less than or equal to 65535"),
    ("n1: {host: 'bmc1:623', port: 624}\n", "n1: give the port once"),
    ("n1: {host: bmc1, passwd: x}\n", "n1.passwd: unknown key"),
    ("n1: {username: u}\n", "n1.host: Field required"),
    ("n1: {host: 'bmc1:ipmi'}\n", "n1.host: not 'host[:port]': its port is not a number"),
    ("- bmc1\n", "top level must be a mapping"),
])
def test_a_bad_entry_is_named(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(write_map(tmp_path, text))
    assert message.startswith(f"IPMI_BMC_MAP_FILE {tmp_path / 'bmc-map.yaml'}") and expected in message


def test_a_password_never_shows_in_an_error(tmp_path: Path) -> None:
    message = error_of(write_map(tmp_path, "n1: {host: bmc1, password: 987654321}\n"))
    assert "n1.password: must be text (quote it in YAML)" in message and "987654321" not in message
    assert "not found" in error_of(tmp_path / "missing.yaml")


def test_a_missing_login_names_the_entry_and_the_file(tmp_path: Path) -> None:
    path = write_map(tmp_path, "n1: {host: bmc1}\nn2: {host: bmc2, username: u, password_file: nope}\n")
    with pytest.raises(ConfigError, match=r"bmc-map.yaml: n1: no IPMI user: set `username` in the entry"):
        node({"IPMI_BMC_MAP_FILE": str(path)}).bmc_targets("n1", ())
    with pytest.raises(ConfigError, match=r"n1: no IPMI password: set `password` or `password_file`"):
        node({"IPMI_BMC_MAP_FILE": str(path), "IPMI_USERNAME": "u"}).bmc_targets("n1", ())
    with pytest.raises(ConfigError, match=rf"n2: password_file {tmp_path / 'nope'} cannot be read"):
        node({"IPMI_BMC_MAP_FILE": str(path)}).bmc_targets("n2", ())


def test_a_password_file_or_map_that_is_not_utf8_is_refused_without_its_bytes(tmp_path: Path) -> None:
    """Regression (review): a password file holding "pa\\xe9ss" raised UnicodeDecodeError, which killed the node's
    collector (GPU and host telemetry too) and was logged naming the byte and its position."""
    path = write_map(tmp_path, "n1: {host: bmc1, username: u, password_file: pw}\n")
    (tmp_path / "pw").write_bytes(b"pa\xe9ss")
    with pytest.raises(ConfigError, match="password_file .* is not UTF-8 text") as refused:
        node({"IPMI_BMC_MAP_FILE": str(path)}).bmc_targets("n1", ())
    assert "xe9" not in str(refused.value)
    path.write_bytes(b"n1: {host: bmc1, username: u, password: pa\xe9ss}\n")
    message = error_of(path)
    assert "BMC map is not UTF-8 text (at byte 42)" in message and "xe9" not in message


def test_build_sources_polls_only_this_node_s_bmc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, dict[str, str]]] = []

    class FakeIpmi(UnavailableSource):
        def __init__(self, host: str, **kwargs: str) -> None:
            calls.append((host, kwargs))
            super().__init__(SourceKind.IPMI, "fake")

    module = types.ModuleType("collectors.ipmi")
    module.IpmiSource = FakeIpmi  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "collectors.ipmi", module)
    settings = node({"IPMI_BMC_MAP_FILE": str(write_map(tmp_path))})
    config = CollectorConfig(ipmi_hosts=("shared-bmc",))
    assert len(build_sources(config, "gpu-node-2", selected={"ipmi"}, node=settings)) == 1
    assert calls == [("[fe80::2]:6230", {"username": "admin2", "password": "s3cret-2", "node_id": "gpu-node-2",
                                         "timeout_s": 5.0})]
    quick = CollectorConfig(ipmi_hosts=("shared-bmc",), telemetry={"read_timeout": 2})
    build_sources(quick, "gpu-node-2", selected={"ipmi"}, node=settings)  # regression: 5 s in a 2-s round, every
    assert calls[-1][1]["timeout_s"] == 1.6  # read left behind as hung and its late answer thrown away
    (missing,) = build_sources(config, "cpu-node-9", selected={"ipmi"}, node=settings)
    assert missing.available() == (False, f"no BMC configured for node 'cpu-node-9' in IPMI_BMC_MAP_FILE "
                                          f"{tmp_path / 'bmc-map.yaml'}")
    assert not any(s.kind is SourceKind.IPMI for s in build_sources(config, "cpu-node-9", node=settings))
    (broken,) = build_sources(config, "gpu-node-3", selected={"ipmi"}, node=settings)  # no login anywhere
    assert isinstance(broken, UnavailableSource) and "gpu-node-3: no IPMI user" in broken.available()[1]


def test_the_node_s_own_switches_win_over_the_shipped_config() -> None:
    shipped = CollectorConfig(gpu_monitoring_enabled=True, ipmi_hosts=("head-bmc",))
    assert on_this_node(shipped, {}) == shipped
    here = on_this_node(shipped, {"GPU_MONITORING_ENABLED": "false", "IPMI_HOSTS": "own-bmc:6230"})
    assert (here.gpu_monitoring_enabled, here.ipmi_hosts) == (False, ("own-bmc:6230",))
    assert here.telemetry == shipped.telemetry
    with pytest.raises(ConfigError, match="GPU_MONITORING_ENABLED"):
        on_this_node(shipped, {"GPU_MONITORING_ENABLED": "perhaps"})


def test_the_collector_actor_honours_its_node_s_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(collector_actor, "RemoteStore", lambda: SimpleNamespace(is_read_only=lambda: True))
    monkeypatch.setenv("NODE_NAME", "gpu-7")
    monkeypatch.setenv("GPU_MONITORING_ENABLED", "false")  # set on this worker; the head shipped true
    shipped = CollectorConfig(gpu_monitoring_enabled=True, telemetry=TelemetryConfig(spill_dir=str(tmp_path)))
    actor = collector_actor.CollectorActor(shipped.model_dump(mode="json"), ["nvml"], None)
    try:
        (nvml,) = actor.collector.sources
        assert actor.node_id() == "gpu-7" and isinstance(nvml, NvmlSource) and nvml.enabled is False
    finally:
        actor.stop()


def test_an_entry_written_as_a_string_is_refused_without_echoing_it(tmp_path: Path) -> None:
    """Regression: an entry written `admin:password@host` was quoted back in the error (`got '...'`), which every
    node's IPMI status then showed."""
    error = error_of(write_map(tmp_path, "node-a: 'admin:S3cretPass@10.0.0.5'\n"))
    assert "node-a" in error and "valid dictionary" in error
    assert "S3cretPass" not in error and "admin" not in error
    for host in ("'admin:S3cretPass@10.0.0.5'", "'admin:S3cretPass@10.0.0.5:623'", "'admin:S3cretPass@[::1]:623'",
                 "{user: admin, password: S3cretPass}"):  # in the host field too
        error = error_of(write_map(tmp_path, f"node-a: {{host: {host}}}\n"))
        assert "node-a.host: not 'host[:port]'" in error and "S3cretPass" not in error and "admin" not in error

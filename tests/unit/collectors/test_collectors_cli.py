"""`python -m collectors --once` in-process and as a subprocess, and build_sources from config + environment."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

import collectors.__main__ as cli
from collectors.host import HostSource
from collectors.npu import AscendSource, KunlunSource
from collectors.nvml import NvmlSource
from collectors.settings import CollectorConfig, NodeSettings
from collectors.sources import UnavailableSource, build_sources
from core.settings import ConfigError
from core.telemetry import SourceKind, TelemetrySample
from tests.paths import REPO_ROOT

REPO = REPO_ROOT
DATA = REPO / "tests" / "data" / "npu"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KCLOUD_CONFIG", "IPMI_HOSTS", "IPMI_USERNAME", "IPMI_PASSWORD", "IPMI_PASSWORD_FILE",
                 "GPU_MONITORING_ENABLED", "NPU_MONITORING_ENABLED", "NPU_SMI_PATH", "XPU_SMI_PATH", "NODE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli.time, "sleep", lambda _s: None)  # the host warm-up wait


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_host_once_as_json_lines() -> None:
    code, out, err = run(["--once", "--sources", "host", "--json", "--node-id", "n9"])
    assert code == 0, err
    (line,) = out.splitlines()
    sample = TelemetrySample.model_validate_json(line)
    assert (sample.node_id, sample.source, sample.device_id) == ("n9", SourceKind.HOST, "node")


def test_the_node_name_is_the_collector_actors_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: the command took the host name where the actor takes NODE_NAME: inside a pod it labelled samples
    with the pod's name and looked that up in the BMC map."""
    monkeypatch.setenv("NODE_NAME", "gpu-node-07")
    code, out, err = run(["--once", "--sources", "host", "--json"])
    assert code == 0, err
    assert TelemetrySample.model_validate_json(out.splitlines()[0]).node_id == "gpu-node-07"
    code, out, _ = run(["--once", "--sources", "host", "--json", "--node-id", "n9"])
    assert TelemetrySample.model_validate_json(out.splitlines()[0]).node_id == "n9"  # the flag wins


def test_table_by_default_with_npu_from_a_fake_tool(fake_tool: Callable[..., Path]) -> None:
    fake_tool("npu-smi", DATA / "npu_smi_info_910b3_24.1.0.3.txt")
    code, out, err = run(["--once", "--sources", "npu,host", "--node-id", "n9"])
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["node", "source", "device", "power_W"]
    assert any(row.split()[:4] == ["n9", "npu", "npu0-chip0", "94.7"] for row in rows)
    assert "source xpu (xpu_smi) unavailable: xpu_smi not found on PATH" in err


def test_no_source_answering_exits_1_with_reasons(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GPU_MONITORING_ENABLED", "false")
    monkeypatch.setenv("NPU_MONITORING_ENABLED", "no")
    code, out, err = run(["--once", "--sources", "nvml,npu,ipmi"])
    assert code == 1
    assert "source nvml unavailable: GPU monitoring is disabled" in err
    assert "source npu (npu-smi) unavailable: NPU monitoring is disabled" in err
    assert "source ipmi unavailable: no BMC configured" in err


@pytest.mark.parametrize("argv, message", [
    (["--once", "--sources", "host,gpu"], "unknown source 'gpu'"),
    (["--sources", "host"], "--once is required"),
    # regression: a node id a sample cannot carry ended in a pydantic traceback; an empty one fell back silently
    (["--once", "--sources", "host", "--node-id", "a\\b"], "argument --node-id: holds a control character"),
    (["--once", "--sources", "host", "--node-id", "x" * 254], "argument --node-id: 254 characters, more than 253"),
    (["--once", "--sources", "host", "--node-id", ""], "argument --node-id: empty"),
    (["--once", "--sources", "ipmi", "--wait", "-1"], "argument --wait: -1 s is outside 0 to 3600 s"),
    (["--once", "--sources", "ipmi", "--wait", "soon"], "argument --wait: 'soon' is not a number of seconds"),
])
def test_usage_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_help_says_once_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "--once is required for now" in " ".join(capsys.readouterr().out.split())


def test_bad_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("no_such_key: 1\n")
    code, _, err = run(["--once", "--sources", "host", "--config", str(config)])
    assert code == 2 and "no_such_key" in err


def test_subprocess_once_host_json() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KCLOUD_CONFIG"}
    done = subprocess.run([sys.executable, "-m", "collectors", "--once", "--sources", "host", "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert json.loads(line)["source"] == "host"


# -- build_sources ------------------------------------------------------------------------------------------
def on_node(environ: dict[str, str]) -> NodeSettings:
    """A node's settings read from `environ` alone."""
    return NodeSettings.from_env(environ)


def test_build_sources_kinds_and_switches() -> None:
    config = CollectorConfig(gpu_monitoring_enabled=False)
    sources = build_sources(config, "n1", node=on_node({"NPU_SMI_PATH": "/opt/npu-smi", "NPU_MONITORING_ENABLED": "0"}))
    assert [type(s) for s in sources] == [HostSource, NvmlSource, AscendSource, KunlunSource]  # no BMC: no IPMI
    nvml, ascend = sources[1], sources[2]
    assert isinstance(nvml, NvmlSource) and not nvml.enabled
    assert isinstance(ascend, AscendSource) and ascend.executable == "/opt/npu-smi" and not ascend.enabled


def test_build_sources_refuses_unknown_names_and_bad_flags() -> None:
    with pytest.raises(ValueError, match="unknown source.*bmc"):
        build_sources(CollectorConfig(), "n1", selected={"host", "bmc"})
    with pytest.raises(ConfigError, match="NPU_MONITORING_ENABLED"):
        build_sources(CollectorConfig(), "n1", selected={"npu"}, node=on_node({"NPU_MONITORING_ENABLED": "maybe"}))


def test_ipmi_without_credentials_says_why_without_secrets(tmp_path: Path) -> None:
    config = CollectorConfig(ipmi_hosts=("10.0.0.5",))
    (source,) = build_sources(config, "n1", selected={"ipmi"}, node=on_node({"IPMI_PASSWORD": "s3cret"}))
    assert source.available() == (False, "no IPMI user: set IPMI_USERNAME")
    missing = tmp_path / "nope"
    (source,) = build_sources(config, "n1", selected={"ipmi"},
                              node=on_node({"IPMI_USERNAME": "admin", "IPMI_PASSWORD_FILE": str(missing)}))
    ok, reason = source.available()
    assert not ok and str(missing) in reason and "No such file" in reason


def test_ipmi_module_missing_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "collectors.ipmi", None)  # import fails as if the module were absent
    config = CollectorConfig(ipmi_hosts=("10.0.0.5:623",))
    (source,) = build_sources(config, "n1", selected={"ipmi"},
                              node=on_node({"IPMI_USERNAME": "admin", "IPMI_PASSWORD": "s3cret"}))
    ok, reason = source.available()
    assert isinstance(source, UnavailableSource) and not ok and "collectors.ipmi" in reason
    assert "s3cret" not in reason and source.label == "ipmi (10.0.0.5:623)"


def test_ipmi_sources_get_host_and_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, dict[str, str]]] = []

    class FakeIpmi(UnavailableSource):
        def __init__(self, host: str, **kwargs: str) -> None:
            calls.append((host, kwargs))
            super().__init__(SourceKind.IPMI, "fake")

    module = types.ModuleType("collectors.ipmi")
    module.IpmiSource = FakeIpmi  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "collectors.ipmi", module)
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    node = on_node({"IPMI_USERNAME": "admin", "IPMI_PASSWORD_FILE": str(secret), "IPMI_PASSWORD": "from-env"})
    sources = build_sources(CollectorConfig(ipmi_hosts=("bmc-b:6230",)), "n1", selected={"ipmi"}, node=node)
    assert len(sources) == 1  # the file wins over the variable
    assert calls == [("bmc-b:6230", {"username": "admin", "password": "from-file", "node_id": "n1", "timeout_s": 5.0})]
    # Regression (review): two BMCs in the flat list were both read as this node's wall power (their mean)
    (refused,) = build_sources(CollectorConfig(ipmi_hosts=("bmc-a", "bmc-b:6230")), "n1", selected={"ipmi"}, node=node)
    ok, why = refused.available()
    assert not ok and "lists 2 BMCs without IPMI_BMC_MAP_FILE" in why and len(calls) == 1


def test_real_ipmi_module_is_wired_in() -> None:
    from collectors import ipmi  # pyghmi is a dependency: an import error fails here, never skips
    config = CollectorConfig(ipmi_hosts=("127.0.0.1:9623",))
    (source,) = build_sources(config, "n1", selected={"ipmi"},
                              node=on_node({"IPMI_USERNAME": "admin", "IPMI_PASSWORD": "password"}))
    assert isinstance(source, ipmi.IpmiSource) and (source.host, source.port, source.node_id) == ("127.0.0.1", 9623,
                                                                                                   "n1")

"""Unit-test fixtures for the telemetry sources: the fake NVML library and fake vendor tools on PATH."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.nvml import build_fake_nvml
from tests.paths import TEST_DATA

NPU_DATA = TEST_DATA / "npu"
UNIT_TESTS = Path(__file__).parent
# An exception a unit test's own thread or finalizer raised fails that test (pytest only warns of it). Not for the
# tests with Ray, gRPC and Serve handles, whose finalizers may run in any later test or at the session's end.
RAISED_ELSEWHERE = ("error::pytest.PytestUnhandledThreadExceptionWarning",
                    "error::pytest.PytestUnraisableExceptionWarning")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(UNIT_TESTS):
            for rule in RAISED_ELSEWHERE:
                item.add_marker(pytest.mark.filterwarnings(rule))


@pytest.fixture(scope="session")
def fake_nvml_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake libnvidia-ml.so.1 (tests/fakes/nvml), compiled once per session with gcc: a machine without gcc (or
    a fake that no longer compiles) fails the NVML tests, never skips them."""
    return build_fake_nvml(tmp_path_factory.mktemp("fake-nvml"))


@pytest.fixture
def fake_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Install a fake executable on PATH: `fake_tool("npu-smi", output_file, exit_code=0, sleep_s=0)`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    def install(name: str, output: Path | None = None, *, exit_code: int = 0, stderr: str = "",
                sleep_s: float = 0.0) -> Path:
        lines = ["#!/bin/sh"]
        if sleep_s:
            lines.append(f"sleep {sleep_s}")
        if output is not None:
            lines.append(f"cat '{output}'")
        if stderr:
            lines.append(f"echo '{stderr}' >&2")
        lines.append(f"exit {exit_code}")
        script = bin_dir / name
        script.write_text("\n".join(lines) + "\n", encoding="utf-8")
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return script

    return install

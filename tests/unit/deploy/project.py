"""pyproject.toml as the deploy tests read it."""

from __future__ import annotations

import functools
import tomllib
from typing import Any

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.paths import REPO_ROOT


@functools.cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def requirements(extra: str | None = None) -> dict[str, Requirement]:
    """{name: requirement} of the runtime dependencies, or of one extra."""
    project = pyproject()["project"]
    listed = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {requirement.name: requirement for requirement in map(Requirement, listed)}


def ray_specifier() -> SpecifierSet:
    """The Ray versions the project admits (and is tested on)."""
    return requirements()["ray"].specifier

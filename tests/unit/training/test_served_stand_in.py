"""load_served: the version a retraining scores in place of an active one that cannot be loaded is the one replicas
serve instead; never one scored for a passing storage error (training/served_stand_in.py)."""

from __future__ import annotations

import pytest

from training.served_stand_in import load_served


class Damaged(ValueError):
    """A version that cannot be loaded for good."""


class Passing(ValueError):
    """A storage error that may pass."""


class History:
    """A registry's fallback history (the versions ACTIVE pointed at before, the most recent first)."""

    def __init__(self, former: list[int] | Exception):
        self.former = former

    def fallback_versions(self, model_id: str) -> list[int]:
        if isinstance(self.former, Exception):
            raise self.former
        return self.former


def loader(broken: dict[int, Exception]):
    def load(version: int) -> str:
        if version in broken:
            raise broken[version]
        return f"model {version}"
    return load


def load(history: History, broken: dict[int, Exception]) -> tuple[int, str]:
    return load_served(history, "m", 5, loader(broken), (Damaged, Passing),
                       lambda exc: isinstance(exc, Passing))


def test_the_active_version_loads_the_first_former_version_that_loads_stands_in():
    assert load(History([4, 3]), {}) == (5, "model 5")
    assert load(History([4, 3]), {5: Damaged("5"), 4: Damaged("4")}) == (3, "model 3")


def test_a_passing_error_never_has_another_version_scored():
    with pytest.raises(Passing):
        load(History([4]), {5: Passing("5")})
    with pytest.raises(Passing):
        load(History([4, 3]), {5: Damaged("5"), 4: Passing("4")})


def test_with_no_former_version_loading_or_readable_the_active_version_s_own_error_is_raised():
    with pytest.raises(Damaged, match="5"):
        load(History([4]), {5: Damaged("5"), 4: Damaged("4")})
    with pytest.raises(Damaged, match="5"):  # an unreadable history: nothing to fall back on, as for replicas
        load(History(OSError(5, "I/O error")), {5: Damaged("5")})

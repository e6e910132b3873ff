"""RegistryFollower: a replica moves to the registry's active version off its event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import SimpleNamespace

from deployments.registry_follower import RegistryFollower
from tests.factories import unreadable


class Follower(RegistryFollower):
    def __init__(self) -> None:
        self.model_id = "power_lstm"
        self.registry = SimpleNamespace(served_version=lambda model_id: 2)
        self.loaded_on: list[threading.Thread] = []

    def _load(self, version: int | None) -> None:
        self.loaded_on.append(threading.current_thread())
        self.version = version


def test_a_new_version_loads_off_the_event_loop_and_the_loop_keeps_answering():
    follower = Follower()

    async def run() -> None:
        follower._start_following(lambda: 0.01)
        while not follower.loaded_on:  # the loop keeps running while the version loads
            await asyncio.sleep(0.005)
        follower._follower.cancel()

    asyncio.run(run())
    assert follower.version == 2
    assert follower.loaded_on[0] is not threading.main_thread()


def test_an_unreadable_active_pointer_serves_nothing_rather_than_an_older_version(tmp_path):
    """It was taken for an active version that cannot load: the replica served the version rolled back from,
    healthy, for as long as the pointer could not be read. Now it serves nothing and says why (its health check
    fails; the API holding a copy still starts), and loads the active version once the pointer reads again."""
    import pytest

    from core.registry import ModelRegistry

    source = tmp_path / "artifact"
    source.mkdir()
    (source / "w.bin").write_text("w")
    registry = ModelRegistry(tmp_path / "models")
    for _ in range(2):
        registry.publish("power_lstm", source, model_type="lstm")  # 2 active, 1 served before it
    loaded: list[int] = []

    class Starting(RegistryFollower):
        model_id = "power_lstm"

        def __init__(self) -> None:
            self.registry = registry

        def _load(self, version: int | None) -> None:
            loaded.append(self.registry.get(self.model_id, version)[1].version)

    pointer = tmp_path / "models" / "power_lstm" / "ACTIVE"
    with pytest.MonkeyPatch.context() as patch:
        unreadable(patch, pointer)
        why = Starting()._load_default()
    assert "cannot be read: Input/output error; nothing is served until it can be read" in why and loaded == []
    assert Starting()._load_default() == "" and loaded == [2]


def test_a_version_that_failed_to_load_is_tried_again_only_after_a_while(monkeypatch):
    from deployments import registry_follower

    follower = Follower()
    tries: list[int] = []

    def broken(version: int | None) -> None:
        tries.append(version)
        raise OSError("weights.pt: truncated")

    follower._load = broken
    for _ in range(2):
        with contextlib.suppress(OSError):
            follower._refresh()
    assert tries == [2]  # the second poll skipped it
    now = registry_follower.time.monotonic()
    monkeypatch.setattr(registry_follower.time, "monotonic", lambda: now + registry_follower.RETRY_FAILED_LOAD_S)
    with contextlib.suppress(OSError):
        follower._refresh()
    assert tries == [2, 2]


def test_an_active_version_that_failed_at_start_is_not_loaded_again_at_the_first_poll():
    """Regression: the start fell back to a version served before without noting the failure, so the first poll
    (the power replica's own, before it answers) loaded the broken version again, with a second traceback."""
    follower, tries = Follower(), []
    follower.registry = SimpleNamespace(served_version=lambda model_id: 2, former_versions=lambda model_id: [1])

    def load(version: int | None) -> None:
        tries.append(version)
        if version in (None, 2):
            raise OSError("weights.pt: truncated")
        follower.version = version

    follower._load = load
    assert follower._load_default() == "" and follower.version == 1
    follower._refresh()
    assert tries == [None, 1]  # the active version (None: the served one) once, then the former; not again

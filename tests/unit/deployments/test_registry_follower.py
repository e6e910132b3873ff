"""RegistryFollower: a replica moves to the registry's active version off its event loop."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

from deployments.registry_follower import RegistryFollower


class Follower(RegistryFollower):
    def __init__(self) -> None:
        self.model_id = "power_lstm"
        self.registry = SimpleNamespace(active_version=lambda model_id: 2)
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

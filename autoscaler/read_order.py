"""The order a tick reads the store in: what the store failed to give last time goes last, so that one node (or
policy) the store always fails never keeps the others unread once a failure stops the tick's reads."""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable
from typing import TypeVar

Item = TypeVar("Item")


class FailedLast:
    """Keys whose reads failed, read after every other key, the least recently failed first among them (a key
    that fails at every tick then never keeps one that failed once behind it)."""

    def __init__(self) -> None:
        self._failed: dict[Hashable, int] = {}  # key -> the number of its latest failure
        self._failures = 0

    def rank(self, key: Hashable) -> int:
        """-1 for a key read well (or never read), else the number of its latest failure: lower reads first."""
        return self._failed.get(key, -1)

    def ordered(self, items: Iterable[Item], keys: Callable[[Item], Iterable[Hashable]]) -> list[Item]:
        """`items` in reading order, each ranked by its latest-failed key (a stable sort: the given order else)."""
        return sorted(items, key=lambda item: max((self.rank(key) for key in keys(item)), default=-1))

    def failed(self, key: Hashable) -> None:
        self._failures += 1
        self._failed[key] = self._failures

    def read(self, key: Hashable) -> None:
        self._failed.pop(key, None)

    def retain(self, keys: Collection[Hashable]) -> None:
        """Forget the keys not in `keys` (no longer read)."""
        self._failed = {key: number for key, number in self._failed.items() if key in keys}

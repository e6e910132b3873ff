"""The order a tick reads the store in (autoscaler/read_order.py)."""

from __future__ import annotations

from autoscaler.read_order import FailedLast


def test_failed_keys_go_last_the_least_recently_failed_first():
    """A key that fails at every tick must not keep one that failed once behind it for good (review)."""
    order = FailedLast()
    keys = ["a", "b", "c"]
    assert order.ordered(keys, lambda key: (key,)) == ["a", "b", "c"]
    order.failed("b")  # a store blip
    order.failed("a")  # a key the store always fails
    assert order.ordered(keys, lambda key: (key,)) == ["c", "b", "a"]
    order.failed("a")
    assert order.ordered(keys, lambda key: (key,)) == ["c", "b", "a"]  # "b" still before "a"
    order.read("b")
    assert order.ordered(keys, lambda key: (key,)) == ["b", "c", "a"]
    order.retain({"b", "c"})
    assert order.rank("a") == -1


def test_an_item_ranks_by_its_latest_failed_key():
    order = FailedLast()
    order.failed("n1")
    items = [("p1", ["n1", "n2"]), ("p2", ["n3"])]
    assert [name for name, _ in order.ordered(items, lambda item: item[1])] == ["p2", "p1"]

"""The relay of scaled mode on the machine's Redis: one process's commits wake the
others' hooks, cancels reach every worker, and a process skips its own news."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowy.db.migrate import upgrade
from flowy.db.session import Database
from flowy.services.relay import RedisRelay
from tests.backing import REDIS, scratch_queue


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[RedisRelay, RedisRelay]]:
    """Two processes' relays (two databases, the one file) on one channel prefix."""
    url = f"sqlite:///{tmp_path / 'flowy.db'}"
    upgrade(url)
    with scratch_queue() as prefix:
        relays = [RedisRelay(REDIS, prefix, Database(url)) for _ in range(2)]
        for r in relays:
            r.attach()
            r.start()
        try:
            yield relays[0], relays[1]
        finally:
            for r in relays:
                r.stop()
                r.db.dispose()


def test_a_commit_wakes_the_other_process_hooks(pair: tuple[RedisRelay, RedisRelay]) -> None:
    one, two = pair
    assert one.db.relay == one.committed  # attached: each commit is told to the relay
    heard: dict[str, list[object]] = {"one": [], "two": []}
    woke = threading.Event()
    one.db.commit_hooks.append(heard["one"].append)
    two.db.commit_hooks.append(heard["two"].append)
    two.db.flag_hooks["test_flag"] = [woke.set]
    # What Database calls after a commit that changed run r1 and wrote test_flag.
    one.committed({"r1"}, {"test_flag"})
    assert woke.wait(10), "the other process never heard of the commit"
    assert heard["two"] == [{"r1"}]
    assert heard["one"] == [{"r1"}]  # its own hooks, at once, and only once


def test_a_cancel_reaches_every_other_process(pair: tuple[RedisRelay, RedisRelay]) -> None:
    one, two = pair
    got: list[tuple[str, str]] = []
    woke = threading.Event()
    one.on_cancel = lambda run_id, reason: got.append((run_id, reason))
    two.on_cancel = lambda run_id, reason: (got.append((run_id, reason)), woke.set())
    one.cancel("r2", "canceled by the caller")
    assert woke.wait(10), "the cancel never reached the other process"
    assert got == [("r2", "canceled by the caller")] * 2

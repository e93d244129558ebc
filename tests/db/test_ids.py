"""Object ids: the documented shape, unique across threads and forked processes."""

from __future__ import annotations

import os
import threading
import time

from flowy.ids import ID_PATTERN, is_id, new_id


def test_ids_have_the_documented_shape_and_sort_by_second() -> None:
    before = int(time.time())
    ids = [new_id() for _ in range(2000)]  # past one 4 KiB chunk of random bytes
    assert all(ID_PATTERN.match(i) and is_id(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert before <= int(ids[0][:8], 16) <= int(time.time())
    # The random parts are spread: no two share their first random byte pair by rule.
    assert len({i[8:12] for i in ids}) > 1000


def test_ids_made_on_many_threads_never_repeat() -> None:
    out: list[list[str]] = [[] for _ in range(8)]

    def make(k: int) -> None:
        out[k] = [new_id() for _ in range(3000)]

    threads = [threading.Thread(target=make, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for part in out for i in part]
    assert len(set(every)) == len(every) == 24000


def test_a_forked_child_does_not_reuse_its_parents_random_bytes() -> None:
    new_id()  # the parent now holds a chunk it has not used up
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its ids and leave at once
        try:
            os.write(write, "".join(new_id() for _ in range(20)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    os.waitpid(pid, 0)
    child = {text[k : k + 24] for k in range(0, len(text), 24)}
    parent = {new_id() for _ in range(20)}
    assert len(child) == 20 and not child & parent
    assert not {c[8:] for c in child} & {p[8:] for p in parent}

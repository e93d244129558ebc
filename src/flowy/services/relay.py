"""Scaled mode's news between processes, over Redis pub/sub.

Every commit's news (the runs it changed, the flags it wrote) goes to every process of
one Flowy: an API server's event streams and waiting requests wake on a worker's commit,
its webhook dispatcher on deliveries another process queued, its key cache on a key
another server revoked.  Cancels go to every worker.  The database stays the truth:
news only wakes readers sooner (a stream that missed one reads the database at its next
poll), so a message lost while Redis is away delays, never loses.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import orjson

from flowy.db.session import Database
from flowy.ids import new_id

logger = logging.getLogger(__name__)

#: How long to wait before subscribing again after Redis went away.
RETRY_SECONDS = 1.0


class RedisRelay:
    """Publishes this process's commits and cancels; announces the others' here.

    ``prefix`` names the channels (``{prefix}:commits``, ``{prefix}:cancels``): the
    processes of one Flowy share it.  ``on_cancel(run_id, reason)`` hears every cancel
    (workers stop the run if it is theirs)."""

    def __init__(
        self,
        url: str,
        prefix: str,
        db: Database,
        on_cancel: Callable[[str, str], None] | None = None,
    ) -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url, socket_connect_timeout=5)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.db = db
        self.on_cancel = on_cancel
        self.commits = f"{prefix}:commits"
        self.cancels = f"{prefix}:cancels"
        self.origin = new_id()  # this process, so that it skips its own news
        self._outbox: queue.SimpleQueue[tuple[str, bytes] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._subscribed = threading.Event()

    def attach(self) -> None:
        """Relay this process's commits: its own hooks run at once, the others' after
        the publish."""
        self.db.relay = self.committed

    def committed(self, runs: set[str], flags: set[str]) -> None:
        self.db.announce(runs, flags)
        body = {"o": self.origin, "r": sorted(runs), "f": sorted(flags)}
        self._outbox.put((self.commits, orjson.dumps(body)))

    def cancel(self, run_id: str, reason: str) -> None:
        """Tell every worker to stop ``run_id`` (the one running it does)."""
        if self.on_cancel is not None:
            self.on_cancel(run_id, reason)
        body = {"o": self.origin, "run": run_id, "reason": reason}
        self._outbox.put((self.cancels, orjson.dumps(body)))

    # -- life cycle

    def start(self, timeout: float = 10.0) -> None:
        """Start publishing and listening; returns once subscribed (or after
        ``timeout``, still trying, if Redis does not answer)."""
        for target, name in ((self._publish, "flowy-relay-out"), (self._listen, "flowy-relay-in")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if not self._subscribed.wait(timeout):
            logger.warning("no answer from Redis yet; live events wait for it")

    def stop(self) -> None:
        self._stop.set()
        self._outbox.put(None)
        for t in self._threads:
            t.join(timeout=5)
        self._redis.close()

    # -- threads

    def _publish(self) -> None:
        """Send the outbox in order; a message that cannot be sent is dropped (the
        readers it would have woken read the database at their next poll)."""
        while True:
            item = self._outbox.get()
            if item is None:
                return
            channel, body = item
            try:
                self._redis.publish(channel, body)
            except self._errors as exc:
                logger.warning("could not publish to Redis: %s", exc)

    def _listen(self) -> None:
        while not self._stop.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.commits, self.cancels)
                # Redis answers a connection's commands in order: once the PING's pong
                # is back, the subscription holds and nothing published after is missed.
                pubsub.ping()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is None:
                        continue
                    if message["type"] == "pong":
                        self._subscribed.set()
                    elif message["type"] == "message":
                        self._receive(message)
            except self._errors as exc:
                logger.warning("lost Redis (%s); subscribing again", exc)
                self._stop.wait(RETRY_SECONDS)
            except Exception:
                logger.exception("relay listener failed; subscribing again")
                self._stop.wait(RETRY_SECONDS)
            finally:
                pubsub.close()

    def _receive(self, message: dict[str, Any]) -> None:
        body = orjson.loads(message["data"])
        if body.get("o") == self.origin:
            return
        channel = message["channel"].decode()
        if channel == self.commits:
            self.db.announce(set(body["r"]), set(body["f"]))
        elif channel == self.cancels and self.on_cancel is not None:
            self.on_cancel(body["run"], body["reason"])

"""The poll and the run POST skip the framework's routing (``flowy.api.fast``): their
answers are the ones the routed endpoints give, errors included, and every other path
still goes through the application."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowy.api.app import create_app
from flowy.api.fast import FastRoutes
from flowy.services.keys import create_key, create_workspace
from flowy.services.platform import Platform
from flowy.settings import Settings
from tests.workflows import ECHO

#: Headers whose values differ from one answer to the next whichever path answers.
VOLATILE = {"date", "content-length", "ratelimit-remaining", "ratelimit-reset", "ratelimit"}


class Client:
    """An HTTP client of an ASGI application, in this thread (httpx's ASGI transport)."""

    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.http.request(method, path, **kw))

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)


class Pair:
    """The same platform behind two applications: one with the fast routes (as served),
    one without (every request routed by FastAPI)."""

    def __init__(self, fast: Client, routed: Client, key: str) -> None:
        self.fast = fast
        self.routed = routed
        self.auth = {"Authorization": f"Bearer {key}"}

    def both(self, method: str, path: str, **kw: Any) -> tuple[httpx.Response, httpx.Response]:
        kw.setdefault("headers", self.auth)
        return self.fast.request(method, path, **kw), self.routed.request(method, path, **kw)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    plat = Platform.build(settings)
    fast = create_app(settings, platform=plat)
    routed = create_app(settings, platform=plat)
    routed.user_middleware = [m for m in routed.user_middleware if m.cls is not FastRoutes]
    assert len(routed.user_middleware) == len(fast.user_middleware) - 1
    plat.start()  # what the lifespan does; both apps share the platform
    loop = asyncio.new_event_loop()
    try:
        ws = create_workspace(plat.db, "w")
        _info, key = create_key(plat.db, ws)
        yield Pair(Client(fast, loop), Client(routed, loop), key)
    finally:
        loop.close()
        plat.stop()


def _same(a: httpx.Response, b: httpx.Response, *, ignore: tuple[str, ...] = ()) -> None:
    assert a.status_code == b.status_code, (a.text, b.text)
    ha = {k: v for k, v in a.headers.items() if k not in VOLATILE}
    hb = {k: v for k, v in b.headers.items() if k not in VOLATILE}
    assert ha == hb
    ja, jb = a.json(), b.json()
    for k in ignore:  # a new run's id and time differ; their shape does not
        assert (k in ja["data"]) == (k in jb["data"])
        if k in ja["data"]:
            ja["data"][k] = type(ja["data"][k]).__name__
            jb["data"][k] = type(jb["data"][k]).__name__
    assert ja == jb


def _app(pair: Pair) -> str:
    res = pair.fast.post(
        "/v1/apps", json={"title": "Echo", "workflow": ECHO, "published": True}, headers=pair.auth
    )
    assert res.status_code == 201, res.text
    return str(res.json()["data"]["id"])


def test_the_poll_answers_as_the_routed_endpoint(pair: Pair) -> None:
    app_id = _app(pair)
    made = pair.fast.post(
        f"/v1/apps/{app_id}/runs",
        json={"inputs": {"node_1": "hi"}},
        headers={**pair.auth, "Prefer": "wait=30"},
    )
    assert made.status_code == 201 and made.json()["data"]["status"] == "completed"
    run_id = made.json()["data"]["runId"]
    _same(*pair.both("GET", f"/v1/runs/{run_id}"))
    _same(*pair.both("GET", "/v1/runs/" + "0" * 24))  # 404
    _same(*pair.both("GET", f"/v1/runs/{run_id}", headers={}))  # 401
    _same(*pair.both("GET", f"/v1/runs/{run_id}", headers={"Authorization": "Bearer flowy_sk_x"}))


def test_the_run_post_answers_as_the_routed_endpoint(pair: Pair) -> None:
    app_id = _app(pair)
    body = {"inputs": {"node_1": "hi"}}
    _same(*pair.both("POST", f"/v1/apps/{app_id}/runs", json=body), ignore=("runId", "createdAt"))
    a, b = pair.both(
        "POST", f"/v1/apps/{app_id}/runs", json=body, headers={**pair.auth, "Prefer": "wait=30"}
    )
    _same(a, b, ignore=("runId", "createdAt", "startedAt", "completedAt", "nodes", "outputs"))
    for bad in (
        {"inputs": {}},  # 422 naming inputs.node_1
        {"inputs": {"node_1": 5}, "extra": True},
        [1, 2],
    ):
        _same(*pair.both("POST", f"/v1/apps/{app_id}/runs", json=bad))
    _same(
        *pair.both(
            "POST",
            f"/v1/apps/{app_id}/runs",
            content=b"{not json",
            headers={**pair.auth, "Content-Type": "application/json"},
        )
    )
    _same(*pair.both("POST", "/v1/apps/" + "0" * 24 + "/runs", json=body))  # 404
    _same(*pair.both("POST", f"/v1/apps/{app_id}/runs", json=body, headers={}))  # 401
    # The body limit still applies: the fast routes sit inside it.
    big = {"inputs": {"node_1": "x" * (2 << 20)}}
    a, b = pair.both("POST", f"/v1/apps/{app_id}/runs", json=big)
    assert a.status_code == b.status_code == 413


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/runs/"),
        ("GET", "/v1/runs/{run}/events?after=0&follow=false"),
        ("POST", "/v1/runs/{run}/cancel"),
        ("GET", "/v1/apps/{app}/runs"),
        ("POST", "/v1/apps//runs"),
        ("PUT", "/v1/apps/{app}/runs"),
        ("DELETE", "/v1/runs/{run}"),
    ],
)
def test_other_paths_go_through_the_application(pair: Pair, method: str, path: str) -> None:
    app_id = _app(pair)
    made = pair.fast.post(
        f"/v1/apps/{app_id}/runs",
        json={"inputs": {"node_1": "hi"}},
        headers={**pair.auth, "Prefer": "wait=30"},
    )
    path = path.format(run=made.json()["data"]["runId"], app=app_id)
    a, b = pair.both(method, path)
    assert a.status_code == b.status_code
    for h in ("allow", "location", "content-type"):
        assert a.headers.get(h) == b.headers.get(h)
    if a.headers.get("content-type", "").startswith("application/json"):
        assert a.json().keys() == b.json().keys()

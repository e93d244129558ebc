"""The web console: served by the API under a strict CSP, and, in a real headless
Chromium, the path a person takes: paste a key, pick an app, upload a photo, run it,
watch it, see the output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.browser import Browser
from tests.flowy_process import FlowyProcess
from tests.workflows import delay


def test_the_console_is_served_with_a_strict_policy(flowy: FlowyProcess) -> None:
    home = requests.get(flowy.base + "/", allow_redirects=False, timeout=10)
    assert home.status_code == 307 and home.headers["location"] == "/console/"
    page = requests.get(flowy.base + "/console/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert '<script src="console.js" defer></script>' in page.text
    script = requests.get(flowy.base + "/console/console.js", timeout=10)
    assert script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text  # API data goes in as text, never as markup
    missing = requests.get(flowy.base + "/console/../v1/apps", timeout=10)
    assert missing.status_code in (401, 404)  # no way out of the console's three files
    other = requests.get(flowy.base + "/console/secret.key", timeout=10)
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser()
    try:
        yield b
    finally:
        b.close()


def _connect(browser: Browser, flowy: FlowyProcess, key: str | None = None) -> None:
    """Open the console and paste a key, as a person would."""
    browser.goto(flowy.base + "/console/")
    browser.js(f"document.getElementById('key').value = {key or flowy.key!r}")
    browser.js("document.querySelector('#key-form button[type=submit]').click()")


def _open(browser: Browser, title: str) -> None:
    """Pick an app in the list; wait for its form."""
    found = f"[...document.querySelectorAll('#apps button')].find(b => b.textContent === {title!r})"
    browser.wait(f"Boolean({found})")
    browser.js(f"{found}.click()")
    browser.wait(f"document.getElementById('app-title').textContent === {title!r}")


def _run_status(browser: Browser, *statuses: str, timeout: float = 30) -> str:
    """Wait until the run shown is in one of ``statuses``; which one."""
    shown = "document.getElementById('run-status').textContent"
    return str(browser.wait(f"{list(statuses)!r}.includes({shown}) && {shown}", timeout))


def _error(browser: Browser) -> str:
    """The error the console shows, once it shows one."""
    status = "document.getElementById('status')"
    return str(browser.wait(f"{status}.className === 'error' && {status}.textContent"))


def test_a_person_runs_an_app_from_the_console(
    flowy: FlowyProcess, browser: Browser, portrait_png: bytes, tmp_path: Path
) -> None:
    photo = tmp_path / "me.png"
    photo.write_bytes(portrait_png)
    browser.goto(flowy.base + "/console/")
    assert "Paste an API key" in browser.js("document.getElementById('status').textContent")
    _connect(browser, flowy)
    _open(browser, "Headshot generator")
    browser.set_files("#in-node_1", photo)
    browser.js("document.getElementById('in-node_2').value = 'black and white'")
    browser.js("document.querySelector('#run-form button[type=submit]').click()")
    status = _run_status(browser, "completed", "failed", "canceled", timeout=60)
    assert status == "completed", browser.js("document.body.innerText")
    # Every node's progress came through the live stream.
    nodes = browser.js("[...document.querySelectorAll('#nodes li')].map(li => li.textContent)")
    assert any(n.startswith("Headshot: finished") for n in nodes), nodes
    # The output image loaded (the page's policy lets the signed link through).
    img = "document.querySelector('#outputs img')"
    assert browser.wait(f"{img} && {img}.complete && {img}.naturalWidth") == 768
    assert browser.js("document.querySelector('#outputs h4').textContent") == "Headshot"
    assert browser.js("document.querySelectorAll('#runs li').length") >= 1
    assert browser.js("document.getElementById('cancel').hidden") is True
    browser.screenshot(tmp_path / "console.png")


def test_the_console_shows_the_apis_error(flowy: FlowyProcess, browser: Browser) -> None:
    _connect(browser, flowy, key="flowy_sk_not-a-key")
    assert "key" in _error(browser).lower()
    # A missing required input is named, and no run is made.
    _connect(browser, flowy)
    _open(browser, "Headshot generator")
    before = browser.js("document.querySelectorAll('#runs li').length")
    browser.js("document.querySelector('#run-form button[type=submit]').click()")
    assert "node_1" in _error(browser)
    assert browser.js("document.getElementById('run').hidden") is True
    assert browser.js("document.querySelectorAll('#runs li').length") == before


def test_a_run_can_be_canceled_from_the_console(flowy: FlowyProcess, browser: Browser) -> None:
    r = flowy.post(
        "/apps", json={"title": "Slow (console)", "workflow": delay(30.0), "published": True}
    )
    app_id = r.json()["data"]["id"]
    _connect(browser, flowy)
    _open(browser, "Slow (console)")
    browser.js("document.getElementById('in-node_1').value = 'wait'")
    browser.js("document.querySelector('#run-form button[type=submit]').click()")
    _run_status(browser, "running")
    assert browser.js("document.getElementById('cancel').hidden") is False
    browser.js("document.getElementById('cancel').click()")
    assert _run_status(browser, "canceled", "completed", timeout=20) == "canceled"
    assert browser.js("document.getElementById('cancel').hidden") is True
    runs = flowy.get(f"/apps/{app_id}/runs").json()["data"]
    assert [run["status"] for run in runs] == ["canceled"]

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


def test_a_person_runs_an_app_from_the_console(
    flowy: FlowyProcess, browser: Browser, portrait_png: bytes, tmp_path: Path
) -> None:
    photo = tmp_path / "me.png"
    photo.write_bytes(portrait_png)
    browser.goto(flowy.base + "/console/")
    assert "Paste an API key" in browser.js("document.getElementById('status').textContent")
    browser.js(f"document.getElementById('key').value = {flowy.key!r}")
    browser.js("document.querySelector('#key-form button[type=submit]').click()")
    browser.wait("[...document.querySelectorAll('#apps button')].length > 0")
    browser.js(
        "[...document.querySelectorAll('#apps button')]"
        ".find(b => b.textContent === 'Headshot generator').click()"
    )
    browser.wait("document.getElementById('app-title').textContent === 'Headshot generator'")
    browser.set_files("#in-node_1", photo)
    browser.js("document.getElementById('in-node_2').value = 'black and white'")
    browser.js("document.querySelector('#run-form button[type=submit]').click()")
    status = browser.wait(
        "['completed', 'failed', 'canceled'].includes("
        "document.getElementById('run-status').textContent)"
        " && document.getElementById('run-status').textContent",
        timeout=60,
    )
    assert status == "completed", browser.js("document.body.innerText")
    # Every node's progress came through the live stream.
    nodes = browser.js("[...document.querySelectorAll('#nodes li')].map(li => li.textContent)")
    assert any(n.startswith("Headshot: finished") for n in nodes), nodes
    # The output image loaded (the page's policy lets the signed link through).
    width = browser.wait(
        "document.querySelector('#outputs img') && document.querySelector('#outputs img').complete"
        " && document.querySelector('#outputs img').naturalWidth"
    )
    assert width == 768
    assert browser.js("document.querySelector('#outputs h4').textContent") == "Headshot"
    assert browser.js("document.querySelectorAll('#runs li').length") >= 1
    browser.screenshot(tmp_path / "console.png")


def test_the_console_shows_the_apis_error(flowy: FlowyProcess, browser: Browser) -> None:
    browser.goto(flowy.base + "/console/")
    browser.js("document.getElementById('key').value = 'flowy_sk_not-a-key'")
    browser.js("document.querySelector('#key-form button[type=submit]').click()")
    message = browser.wait(
        "document.getElementById('status').className === 'error'"
        " && document.getElementById('status').textContent"
    )
    assert "key" in message.lower()
    # A missing required input is named, and no run is made.
    browser.js(f"sessionStorage.setItem('flowy.key', {flowy.key!r})")
    browser.goto(flowy.base + "/console/")
    browser.wait("[...document.querySelectorAll('#apps button')].length > 0")
    browser.js(
        "[...document.querySelectorAll('#apps button')]"
        ".find(b => b.textContent === 'Headshot generator').click()"
    )
    browser.wait("document.getElementById('app-title').textContent === 'Headshot generator'")
    before = browser.js("document.querySelectorAll('#runs li').length")
    browser.js("document.querySelector('#run-form button[type=submit]').click()")
    message = browser.wait(
        "document.getElementById('status').className === 'error'"
        " && document.getElementById('status').textContent"
    )
    assert "node_1" in message
    assert browser.js("document.getElementById('run').hidden") is True
    assert browser.js("document.querySelectorAll('#runs li').length") == before

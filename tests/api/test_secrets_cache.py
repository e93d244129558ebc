"""Workspace secrets over HTTP, and the result cache seen from a run."""

from __future__ import annotations

import base64
import sqlite3
import uuid
from typing import Any

import requests

from tests.api.test_errors import assert_error
from tests.flowy_process import FlowyProcess


def test_secrets_are_write_only_and_encrypted(flowy: FlowyProcess) -> None:
    value = "sk-test-1234567890-secret"
    res = requests.put(
        f"{flowy.api}/secrets/OPENAI_API_KEY",
        json={"value": value},
        headers=flowy.headers(),
        timeout=10,
    )
    assert res.status_code == 200, res.text
    assert value not in res.text and res.json()["data"]["name"] == "OPENAI_API_KEY"
    listed = flowy.get("/secrets")
    assert [s["name"] for s in listed.json()["data"]] == ["OPENAI_API_KEY"]
    assert value not in listed.text
    with sqlite3.connect(flowy.data_dir / "flowy.db") as db:
        (sealed,) = db.execute("SELECT ciphertext FROM secrets").fetchone()
    assert value not in sealed and value.encode() not in base64.urlsafe_b64decode(sealed)
    bad = requests.put(
        f"{flowy.api}/secrets/1bad-name", json={"value": ""}, headers=flowy.headers(), timeout=10
    )
    err = assert_error(bad, 422, "validation_error")
    assert {d["field"] for d in err["details"]} == {"name", "value"}
    trailing = requests.put(
        f"{flowy.api}/secrets/NAME%0A", json={"value": "v"}, headers=flowy.headers(), timeout=10
    )
    assert_error(trailing, 422, "validation_error", "name")
    assert flowy.delete("/secrets/OPENAI_API_KEY").status_code == 204
    assert_error(flowy.delete("/secrets/OPENAI_API_KEY"), 404, "not_found")
    assert value not in "".join(flowy.output)


def _run(flowy: FlowyProcess, app_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
    res = flowy.post(f"/apps/{app_id}/runs", json={"inputs": inputs})
    assert res.status_code == 201, res.text
    return flowy.wait_run(res.json()["data"]["runId"])


def test_repeat_run_reuses_deterministic_work(
    flowy: FlowyProcess, headshot_app: str, portrait_png: bytes
) -> None:
    uri = "data:image/png;base64," + base64.b64encode(portrait_png).decode()
    style = f"cool, soft light ({uuid.uuid4().hex})"  # unknown words are ignored, but keyed
    first = _run(flowy, headshot_app, {"node_1": uri, "node_2": style})
    second = _run(flowy, headshot_app, {"node_1": uri, "node_2": style})
    assert first["status"] == second["status"] == "completed"
    cached = {n["nodeId"] for n in second["nodes"] if n.get("cached")}
    assert cached == {"node_3", "node_4", "node_5", "node_9"}
    # The crop may come from earlier runs of this photo; what the style feeds may not.
    assert not {n["nodeId"] for n in first["nodes"] if n.get("cached")} - {"node_3"}
    a = requests.get(first["outputs"][0]["url"], timeout=10).content
    b = requests.get(second["outputs"][0]["url"], timeout=10).content
    assert a == b
    # Another style: the face crop is reused, what the style feeds is computed again.
    third = _run(flowy, headshot_app, {"node_1": uri, "node_2": "warm"})
    assert {n["nodeId"] for n in third["nodes"] if n.get("cached")} == {"node_3"}
    assert requests.get(third["outputs"][0]["url"], timeout=10).content != a

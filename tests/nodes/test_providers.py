"""Provider nodes against local fake servers that speak each protocol for real.

OpenAI chat/images, Replicate predictions and ComfyUI prompts are served by
http.server threads on 127.0.0.1; the fetch policy allows private addresses, as an
operator's FLOWY_ALLOW_PRIVATE_URLS=1 would.  The servers check what arrives (paths,
Authorization, JSON bodies, multipart parts) and the tests check the nodes' outputs,
retries and errors.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image
from pydantic import BaseModel

from flowy.engine.executor import CancelToken, NullSink
from flowy.engine.executor import _Context as Context
from flowy.engine.spec import SKIP, NodeType
from flowy.errors import MediaError, NodeError, RunCanceled
from flowy.media.fetch import FetchPolicy, Response
from flowy.nodes.providers import _http, comfyui, openai, replicate

KEY = "sk-test-abcdefghijklmnopqrstuvwxyz0123456789"
TOKEN = "r8_testtokenvalue0123456789"
LOCAL = FetchPolicy(allow_private=True, timeout=10.0)


def png(size: tuple[int, int] = (8, 6), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- fakes


@dataclass
class Req:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


Reply = tuple[int, dict[str, str], bytes]


def reply(status: int, doc: object = None, **headers: str) -> Reply:
    body = json.dumps(doc).encode() if doc is not None else b""
    return status, {"Content-Type": "application/json", **headers}, body


class Fake(ThreadingHTTPServer):
    """Answers every request with ``self.handle(req)``, recording the requests."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[Req] = []
        self.handle: Callable[[Req], Reply] = lambda req: reply(404, {"error": "no route"})

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def on(self, path: str) -> list[Req]:
        return [r for r in self.requests if r.path == path]


class _Handler(BaseHTTPRequestHandler):
    server: Fake

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        parts = urlsplit(self.path)
        req = Req(
            self.command,
            parts.path,
            parse_qs(parts.query, keep_blank_values=True),
            {k.lower(): v for k, v in self.headers.items()},
            self.rfile.read(length) if length else b"",
            time.monotonic(),
        )
        self.server.requests.append(req)
        status, headers, body = self.server.handle(req)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _any  # noqa: N815


def _serve() -> Iterator[Fake]:
    fake = Fake()
    threading.Thread(target=fake.serve_forever, args=(0.05,), daemon=True).start()
    yield fake
    fake.shutdown()
    fake.server_close()


@pytest.fixture
def api() -> Iterator[Fake]:
    yield from _serve()


@pytest.fixture
def files() -> Iterator[Fake]:
    """Another origin, as a CDN serving output files is."""
    yield from _serve()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_http, "BACKOFF_BASE", 0.05)


class Secrets:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get(self, name: str) -> str | None:
        return self.values.get(name)


class NoMedia:
    def read(self, value: str) -> bytes:
        raise MediaError("no media here")


def ctx(
    secrets: dict[str, str] | None = None,
    policy: FetchPolicy = LOCAL,
    token: CancelToken | None = None,
) -> Context:
    values = {"OPENAI_API_KEY": KEY, "REPLICATE_API_TOKEN": TOKEN} if secrets is None else secrets
    return Context(
        "run_1",
        "node_2",
        None,
        NoMedia(),
        10_000_000,
        policy,
        Secrets(values),
        token or CancelToken(),
        NullSink(),
    )


def run(nt: NodeType, params: dict[str, Any], c: Context | None = None, **inputs: object) -> Any:
    p: BaseModel = nt.params.model_validate(params)
    return nt.run(c or ctx(), p, **inputs)


def _chat_answer(text: str = "A red square.") -> Reply:
    return reply(
        200,
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
        },
    )


# --------------------------------------------------------------------------- OpenAI chat


def test_chat_sends_an_openai_request_with_the_image(api: Fake) -> None:
    api.handle = lambda req: _chat_answer()
    out = run(
        openai.chat,
        {
            "base_url": f"{api.base}/v1/",
            "model": "gpt-4o-mini",
            "system_prompt": "Be brief.",
            "prompt": "Caption this:",
            "temperature": 0.2,
            "max_tokens": 50,
        },
        text="a test image",
        image=Image.new("RGB", (4, 4), (0, 0, 255)),
    )
    assert out == {
        "text": "A red square.",
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
    }
    (req,) = api.requests
    assert req.method == "POST" and req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["content-type"] == "application/json"
    body = req.json()
    assert body["model"] == "gpt-4o-mini"
    assert body["temperature"] == 0.2 and body["max_tokens"] == 50
    system, user = body["messages"]
    assert system == {"role": "system", "content": "Be brief."}
    assert user["role"] == "user"
    text_part, image_part = user["content"]
    assert text_part == {"type": "text", "text": "Caption this:\n\na test image"}
    assert image_part["type"] == "image_url"
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (4, 4)


def test_chat_text_only_and_without_a_key(api: Fake) -> None:
    api.handle = lambda req: _chat_answer("hi")
    out = run(
        openai.chat, {"base_url": api.base, "api_key_secret": ""}, ctx(secrets={}), text="hello"
    )
    assert out["text"] == "hi"
    (req,) = api.requests
    assert "authorization" not in req.headers  # a local Ollama takes no key
    assert req.json()["messages"] == [{"role": "user", "content": "hello"}]


def test_429_with_retry_after_is_retried_after_the_asked_wait(api: Fake) -> None:
    answers = iter(
        [reply(429, {"error": {"message": "Rate limit reached"}}, **{"Retry-After": "1"})]
    )
    api.handle = lambda req: next(answers, None) or _chat_answer()
    start = time.monotonic()
    out = run(openai.chat, {"base_url": api.base}, text="hello")
    assert out["text"] == "A red square."
    first, second = api.requests
    assert second.at - first.at >= 0.9  # waited about the second it asked for
    assert time.monotonic() - start < 10


def test_5xx_twice_then_success(api: Fake) -> None:
    answers = iter([reply(500, {"error": {"message": "boom"}}), reply(502, None)])
    api.handle = lambda req: next(answers, None) or _chat_answer()
    out = run(openai.chat, {"base_url": api.base, "max_attempts": 3}, text="hello")
    assert out["text"] == "A red square."
    assert len(api.requests) == 3
    assert all(r.json() == api.requests[0].json() for r in api.requests)


def test_gives_up_after_max_attempts_quoting_the_provider(api: Fake) -> None:
    api.handle = lambda req: reply(503, {"error": {"message": "The engine is overloaded"}})
    with pytest.raises(NodeError) as info:
        run(openai.chat, {"base_url": api.base, "max_attempts": 2}, text="hello")
    assert info.value.message == ("OpenAI: HTTP 503: The engine is overloaded (after 2 attempts)")
    assert len(api.requests) == 2


def test_401_quotes_the_message_and_never_the_key(
    api: Fake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    message = f"Incorrect API key provided: {KEY}. You can find your API key at https://x."
    api.handle = lambda req: reply(
        401, {"error": {"message": message, "type": "invalid_request_error"}}
    )
    with pytest.raises(NodeError) as info:
        run(openai.chat, {"base_url": api.base}, text="hello")
    err = info.value.message
    assert err.startswith("OpenAI: HTTP 401: Incorrect API key provided: [redacted]")
    assert KEY not in err and KEY not in caplog.text
    assert len(api.requests) == 1  # 4xx other than 429 are not retried


def test_missing_key_says_how_to_set_it(api: Fake) -> None:
    with pytest.raises(NodeError) as info:
        run(openai.chat, {"base_url": api.base}, ctx(secrets={}), text="hello")
    assert info.value.message == (
        "OpenAI: configure the API key first: the secret 'OPENAI_API_KEY' is not set in "
        "this workspace; add it with PUT /v1/secrets/OPENAI_API_KEY"
    )
    assert api.requests == []


def test_private_base_url_needs_the_operator_setting(api: Fake) -> None:
    with pytest.raises(NodeError, match=r"OpenAI: refused .*loopback.*FLOWY_ALLOW_PRIVATE_URLS=1"):
        run(openai.chat, {"base_url": api.base}, ctx(policy=FetchPolicy()), text="hello")
    assert api.requests == []


def test_connection_errors_are_retried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(NodeError, match=r"connection refused \(after 2 attempts\)"):
            run(openai.chat, {"base_url": base, "max_attempts": 2}, text="hello")


def test_retry_after_forms() -> None:
    def resp(**headers: str) -> Response:
        return Response(429, tuple(headers.items()), b"", "http://x")

    assert _http.retry_after(resp(**{"Retry-After": "7"})) == 7
    assert _http.retry_after(resp(**{"retry-after-ms": "250"})) == 0.25
    assert _http.retry_after(resp(**{"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
                             now=1445412470.0) == 10  # fmt: skip
    assert _http.retry_after(resp(**{"Retry-After": "soon"})) is None
    assert _http.retry_after(resp()) is None


def test_retry_after_is_capped(api: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_http, "MAX_RETRY_WAIT", 0.2)
    answers = iter([reply(429, {}, **{"Retry-After": "3600"})])
    api.handle = lambda req: next(answers, None) or _chat_answer()
    start = time.monotonic()
    run(openai.chat, {"base_url": api.base}, text="hello")
    assert time.monotonic() - start < 3


def test_waiting_ends_when_the_run_is_canceled(api: Fake) -> None:
    api.handle = lambda req: reply(429, {}, **{"Retry-After": "30"})
    token = CancelToken()
    threading.Timer(0.3, token.cancel).start()
    start = time.monotonic()
    with pytest.raises(RunCanceled):
        run(openai.chat, {"base_url": api.base}, ctx(token=token), text="hello")
    assert time.monotonic() - start < 5


# --------------------------------------------------------------------------- OpenAI images


def test_image_generate_b64_json(api: Fake) -> None:
    data = base64.b64encode(png((16, 8))).decode()
    api.handle = lambda req: reply(200, {"data": [{"b64_json": data, "revised_prompt": "r"}]})
    out = run(
        openai.image_generate,
        {"base_url": api.base, "prompt": "a cat", "size": "1024x1024", "quality": "low"},
        prompt="on a mat",
    )
    assert out["image"].size == (16, 8) and out["revised_prompt"] == "r"
    (req,) = api.requests
    assert req.path == "/images/generations"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.json() == {
        "model": "gpt-image-1",
        "prompt": "a cat\n\non a mat",
        "n": 1,
        "size": "1024x1024",
        "quality": "low",
    }


def test_image_generate_url_is_fetched_without_the_key(api: Fake, files: Fake) -> None:
    files.handle = lambda req: (200, {"Content-Type": "image/png"}, png((5, 7)))
    api.handle = lambda req: reply(200, {"data": [{"url": f"{files.base}/img/out.png?sig=1"}]})
    out = run(
        openai.image_generate,
        {"base_url": api.base, "model": "dall-e-3", "prompt": "x", "response_format": "url"},
    )
    assert out["image"].size == (5, 7) and out["revised_prompt"] == ""
    assert api.requests[0].json()["response_format"] == "url"
    (got,) = files.requests
    assert got.path == "/img/out.png" and "authorization" not in got.headers


def _multipart(req: Req) -> dict[str, tuple[str | None, bytes]]:
    head = f"Content-Type: {req.headers['content-type']}\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + req.body)
    out = {}
    for part in msg.iter_parts():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        out[str(part.get_param("name", header="content-disposition"))] = (
            part.get_filename(),
            payload,
        )
    return out


def test_image_edit_sends_multipart(api: Fake) -> None:
    data = base64.b64encode(png((3, 3))).decode()
    api.handle = lambda req: reply(200, {"data": [{"b64_json": data}]})
    out = run(
        openai.image_edit,
        {"base_url": api.base, "prompt": "make it blue", "size": "512x512"},
        image=Image.new("RGB", (6, 6), "red"),
        mask=Image.new("RGBA", (6, 6), (0, 0, 0, 0)),
    )
    assert out["image"].size == (3, 3)
    (req,) = api.requests
    assert req.path == "/images/edits"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["content-type"].startswith("multipart/form-data; boundary=")
    parts = _multipart(req)
    assert parts["model"] == (None, b"gpt-image-1")
    assert parts["prompt"] == (None, b"make it blue")
    assert parts["size"] == (None, b"512x512")
    assert parts["image"][0] == "image.png"
    assert Image.open(io.BytesIO(parts["image"][1])).size == (6, 6)
    assert parts["mask"][0] == "mask.png"
    assert Image.open(io.BytesIO(parts["mask"][1])).mode == "RGBA"


def test_image_generate_needs_a_prompt(api: Fake) -> None:
    with pytest.raises(NodeError, match="OpenAI: no prompt"):
        run(openai.image_generate, {"base_url": api.base})


# --------------------------------------------------------------------------- Replicate


def _prediction(base: str, status: str, **extra: object) -> dict[str, Any]:
    return {
        "id": "p123",
        "status": status,
        "urls": {
            "get": f"{base}/v1/predictions/p123",
            "cancel": f"{base}/v1/predictions/p123/cancel",
        },
        **extra,
    }


def test_replicate_polls_until_succeeded(api: Fake, files: Fake) -> None:
    files.handle = lambda req: (200, {"Content-Type": "image/png"}, png((9, 4)))
    output = [f"{files.base}/o/out-0.webp.json", f"{files.base}/o/out-0.png"]
    states = iter(
        [
            _prediction(api.base, "processing"),
            _prediction(api.base, "processing"),
            _prediction(api.base, "succeeded", output=output),
        ]
    )

    def handle(req: Req) -> Reply:
        if req.method == "POST":
            return reply(201, _prediction(api.base, "starting"))
        return reply(200, next(states))

    api.handle = handle
    out = run(
        replicate.predict,
        {
            "base_url": f"{api.base}/v1",
            "model": "owner/model-name",
            "input": {"steps": 4, "prompt": "param prompt"},
            "poll_interval": 0.05,
        },
        prompt="a fox",
        input={"seed": 7},
    )
    assert out["output"] == output
    assert out["image"].size == (9, 4)
    create, *polls = api.requests
    assert create.path == "/v1/models/owner/model-name/predictions"
    assert create.headers["authorization"] == f"Bearer {TOKEN}"
    assert create.headers["prefer"] == "wait=60"
    assert create.json() == {"input": {"steps": 4, "prompt": "a fox", "seed": 7}}
    assert [p.path for p in polls] == ["/v1/predictions/p123"] * 3
    assert all(p.headers["authorization"] == f"Bearer {TOKEN}" for p in polls)
    (got,) = files.requests
    assert got.path == "/o/out-0.png" and "authorization" not in got.headers


def test_replicate_version_and_immediate_answer(api: Fake) -> None:
    api.handle = lambda req: reply(201, _prediction(api.base, "succeeded", output="just text"))
    out = run(
        replicate.predict,
        {"base_url": f"{api.base}/v1", "version": "abc123", "wait_seconds": 5},
        image=Image.new("RGB", (2, 2)),
    )
    assert out == {"output": "just text", "image": SKIP}
    (req,) = api.requests
    assert req.path == "/v1/predictions" and req.headers["prefer"] == "wait=5"
    body = req.json()
    assert body["version"] == "abc123"
    assert body["input"]["image"].startswith("data:image/jpeg;base64,")


def test_replicate_failed_prediction(api: Fake) -> None:
    states = iter([_prediction(api.base, "failed", error="CUDA out of memory")])

    def handle(req: Req) -> Reply:
        if req.method == "POST":
            return reply(201, _prediction(api.base, "processing"))
        return reply(200, next(states))

    api.handle = handle
    with pytest.raises(NodeError) as info:
        run(replicate.predict, {"base_url": f"{api.base}/v1", "model": "o/m",
                                "poll_interval": 0.05})  # fmt: skip
    assert info.value.message == "Replicate: prediction p123 failed: CUDA out of memory"


def test_replicate_api_errors_quote_detail(api: Fake) -> None:
    api.handle = lambda req: reply(422, {"title": "Invalid input", "detail": "prompt is required"})
    with pytest.raises(NodeError, match="Replicate: HTTP 422: prompt is required"):
        run(replicate.predict, {"base_url": f"{api.base}/v1", "model": "o/m"})


def test_replicate_cancels_the_prediction_when_the_run_is_canceled(api: Fake) -> None:
    def handle(req: Req) -> Reply:
        if req.path.endswith("/cancel"):
            return reply(200, _prediction(api.base, "canceled"))
        return reply(201 if req.method == "POST" else 200, _prediction(api.base, "processing"))

    api.handle = handle
    token = CancelToken()
    threading.Timer(0.3, token.cancel).start()
    with pytest.raises(RunCanceled):
        run(replicate.predict, {"base_url": f"{api.base}/v1", "model": "o/m",
                                "poll_interval": 0.05}, ctx(token=token))  # fmt: skip
    assert api.on("/v1/predictions/p123/cancel")


def test_replicate_missing_token(api: Fake) -> None:
    with pytest.raises(NodeError, match=r"'REPLICATE_API_TOKEN' is not set.*PUT /v1/secrets/REPL"):
        run(replicate.predict, {"base_url": api.base, "model": "o/m"}, ctx(secrets={}))


def test_replicate_params_need_model_or_version() -> None:
    with pytest.raises(ValueError, match="either model"):
        replicate.PredictParams.model_validate({})
    with pytest.raises(ValueError, match="either model"):
        replicate.PredictParams.model_validate({"model": "a/b", "version": "v"})


# --------------------------------------------------------------------------- ComfyUI

WORKFLOW = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "placeholder"}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "Flowy"}},
}


def test_comfyui_queue_history_view(api: Fake) -> None:
    image = png((12, 10))
    history = iter(
        [
            {},
            {
                "pid-1": {
                    "outputs": {
                        "8": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]},
                        "9": {
                            "images": [
                                {"filename": "Flowy_0001.png", "subfolder": "s", "type": "output"}
                            ]
                        },
                    },
                    "status": {"status_str": "success", "completed": True, "messages": []},
                }
            },
        ]
    )

    def handle(req: Req) -> Reply:
        if req.path == "/prompt":
            return reply(200, {"prompt_id": "pid-1", "number": 1, "node_errors": {}})
        if req.path == "/history/pid-1":
            return reply(200, next(history))
        if req.path == "/view":
            return 200, {"Content-Type": "image/png"}, image
        return reply(404, {})

    api.handle = handle
    out = run(
        comfyui.prompt,
        {
            "base_url": api.base,
            "workflow": WORKFLOW,
            "substitutions": {"5.width": 512},
            "text_target": "6.text",
            "number_target": "3.seed",
            "poll_interval": 0.05,
        },
        text="a lighthouse",
        number=42,
    )
    assert out["image"].size == (12, 10)
    assert set(out["outputs"]) == {"8", "9"}
    (queued,) = api.on("/prompt")
    body = queued.json()
    assert body["client_id"]
    sent = body["prompt"]
    assert sent["6"]["inputs"]["text"] == "a lighthouse"
    assert sent["3"]["inputs"]["seed"] == 42
    assert sent["5"]["inputs"]["width"] == 512
    assert WORKFLOW["6"]["inputs"]["text"] == "placeholder"  # the param is not modified
    assert len(api.on("/history/pid-1")) == 2
    (view,) = api.on("/view")
    assert view.query == {"filename": ["Flowy_0001.png"], "subfolder": ["s"], "type": ["output"]}


def test_comfyui_validation_error_is_quoted(api: Fake) -> None:
    api.handle = lambda req: reply(
        400,
        {
            "error": {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "CheckpointLoaderSimple 4: ckpt_name not in list",
            },
            "node_errors": {"4": {}},
        },
    )
    with pytest.raises(NodeError) as info:
        run(comfyui.prompt, {"base_url": api.base, "workflow": WORKFLOW})
    assert info.value.message == (
        "ComfyUI: HTTP 400: Prompt outputs failed validation: "
        "CheckpointLoaderSimple 4: ckpt_name not in list"
    )


def test_comfyui_execution_error(api: Fake) -> None:
    entry = {
        "outputs": {},
        "status": {
            "status_str": "error",
            "completed": False,
            "messages": [
                ["execution_start", {"prompt_id": "pid-2"}],
                [
                    "execution_error",
                    {"node_id": "3", "node_type": "KSampler", "exception_message": "OOM"},
                ],
            ],
        },
    }

    def handle(req: Req) -> Reply:
        if req.path == "/prompt":
            return reply(200, {"prompt_id": "pid-2", "number": 1, "node_errors": {}})
        return reply(200, {"pid-2": entry})

    api.handle = handle
    with pytest.raises(NodeError) as info:
        run(comfyui.prompt, {"base_url": api.base, "poll_interval": 0.05}, workflow=WORKFLOW)
    assert info.value.message == "ComfyUI: node 3 (KSampler) failed: OOM"


def test_comfyui_bad_workflows(api: Fake) -> None:
    with pytest.raises(NodeError, match="no workflow"):
        run(comfyui.prompt, {"base_url": api.base})
    with pytest.raises(NodeError, match="UI format"):
        run(comfyui.prompt, {"base_url": api.base}, workflow={"nodes": [], "links": []})
    with pytest.raises(NodeError, match="no node '77'"):
        run(comfyui.prompt, {"base_url": api.base, "workflow": WORKFLOW, "text_target": "77.text"},
            text="x")  # fmt: skip
    assert api.requests == []


def test_all_provider_nodes_are_registered_and_not_deterministic() -> None:
    from flowy.engine.registry import default_registry

    registry = default_registry(load_entry_points=False)
    for name in (
        "openai.chat",
        "openai.image_generate",
        "openai.image_edit",
        "replicate.predict",
        "comfyui.prompt",
    ):
        nt = registry.get(name)
        assert nt is not None and nt.deterministic is False

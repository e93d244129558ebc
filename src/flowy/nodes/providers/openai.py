"""OpenAI-compatible nodes: chat completions (with vision), image generation and edits.

The base URL defaults to OpenAI's API and serves any compatible server as well (Ollama,
vLLM, LM Studio, OpenRouter...).  A server on this machine or the LAN is a loopback or
private address, which the outbound guard refuses unless the operator allows it: a local
Ollama (``http://127.0.0.1:11434/v1``) needs ``FLOWY_ALLOW_PRIVATE_URLS=1``, and an
empty ``api_key_secret`` when it takes no key.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from PIL import Image
from pydantic import Field

from flowy.engine.spec import NodeContext, Port, node
from flowy.media.decode import encode_png
from flowy.nodes.providers._http import Provider, ProviderOptions, data_url, multipart

OPENAI = "OpenAI"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Provider nodes may wait on slow models longer than the default node time limit.
TIMEOUT_SECONDS = 600.0


class _OpenAIOptions(ProviderOptions):
    base_url: str = Field(
        DEFAULT_BASE_URL,
        description="OpenAI-compatible API root, e.g. http://127.0.0.1:11434/v1 for Ollama "
        "(private addresses need FLOWY_ALLOW_PRIVATE_URLS=1).",
    )
    api_key_secret: str = Field(
        "OPENAI_API_KEY",
        description="Workspace secret holding the API key; empty for servers without keys.",
    )


def _provider(ctx: NodeContext, params: _OpenAIOptions) -> Provider:
    p = Provider.of(OPENAI, ctx, params.base_url, params)
    p.use_key(params.api_key_secret)
    return p


class ChatParams(_OpenAIOptions):
    model: str = Field("gpt-4o-mini", min_length=1, max_length=200)
    system_prompt: str = Field("", max_length=100_000)
    prompt: str = Field(
        "", max_length=100_000, description="User message; the text input is added after it."
    )
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    json_mode: bool = Field(False, description='Ask for a JSON object ("response_format").')
    image_detail: Literal["auto", "low", "high"] = "auto"


def _content_text(message: dict[str, Any]) -> str | None:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with content parts
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return None


@node(
    "openai.chat",
    title="Chat (OpenAI-compatible)",
    category="ai",
    params=ChatParams,
    inputs={
        "text": Port("text", "The user's text (after the prompt param).", optional=True),
        "image": Port("image", "An image for vision models.", optional=True),
    },
    outputs={
        "text": Port("text", "The model's answer."),
        "usage": Port("json", "Token counts as the server reported them."),
    },
    deterministic=False,
    timeout_seconds=TIMEOUT_SECONDS,
)
def chat(
    ctx: NodeContext,
    params: ChatParams,
    text: str | None = None,
    image: Image.Image | None = None,
) -> dict[str, object]:
    """Ask a chat model (POST {base_url}/chat/completions) and output its answer.

    The user message is the prompt param followed by the text input, with the image
    input attached as a data: URL for vision models.  The API key comes from the
    workspace secret named by ``api_key_secret`` (OPENAI_API_KEY: set it with
    PUT /v1/secrets/OPENAI_API_KEY).  A local server such as Ollama needs
    FLOWY_ALLOW_PRIVATE_URLS=1 on the Flowy server.
    """
    p = _provider(ctx, params)
    user_text = "\n\n".join(t for t in (params.prompt.strip(), (text or "").strip()) if t)
    if not user_text and image is None:
        raise p.error("nothing to send: set the prompt param or connect the text input")
    content: str | list[dict[str, Any]] = user_text
    if image is not None:
        content = [{"type": "text", "text": user_text}] if user_text else []
        content.append(
            {
                "type": "image_url",
                "image_url": {"url": data_url(image), "detail": params.image_detail},
            }
        )
    messages: list[dict[str, Any]] = []
    if params.system_prompt.strip():
        messages.append({"role": "system", "content": params.system_prompt})
    messages.append({"role": "user", "content": content})
    body: dict[str, Any] = {"model": params.model, "messages": messages}
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    if params.json_mode:
        body["response_format"] = {"type": "json_object"}

    data = p.json(p.call("POST", p.url("chat/completions"), json_body=body))
    try:
        message = data["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise p.error("the answer has no choices[0].message") from None
    answer = _content_text(message) if isinstance(message, dict) else None
    if answer is None:
        refusal = message.get("refusal") if isinstance(message, dict) else None
        raise p.error(f"the model refused: {refusal}" if refusal else "the answer has no text")
    usage = data.get("usage") if isinstance(data, dict) else None
    return {"text": answer, "usage": usage if isinstance(usage, dict) else {}}


class _ImageOptions(_OpenAIOptions):
    model: str = Field("gpt-image-1", min_length=1, max_length=200)
    prompt: str = Field("", max_length=32_000, description="The prompt input is added after it.")
    size: str = Field("1024x1024", pattern=r"^(auto|\d{2,5}x\d{2,5})$")
    quality: str | None = Field(
        None, max_length=20, description="e.g. low/medium/high (gpt-image-1), hd (dall-e-3)."
    )
    response_format: Literal["default", "b64_json", "url"] = Field(
        "default", description="dall-e models accept b64_json or url; gpt-image-1 neither."
    )


def _prompt(p: Provider, params: _ImageOptions, prompt: str | None) -> str:
    text = "\n\n".join(t for t in (params.prompt.strip(), (prompt or "").strip()) if t)
    if not text:
        raise p.error("no prompt: set the prompt param or connect the prompt input")
    return text


def _options(params: _ImageOptions) -> dict[str, str]:
    out = {"model": params.model, "n": "1", "size": params.size}
    if params.quality:
        out["quality"] = params.quality
    if params.response_format != "default":
        out["response_format"] = params.response_format
    return out


def _image_result(p: Provider, data: Any) -> dict[str, object]:
    try:
        item = data["data"][0]
    except (KeyError, IndexError, TypeError):
        raise p.error("the answer has no data[0]") from None
    if not isinstance(item, dict):
        raise p.error("the answer has no image")
    revised = str(item.get("revised_prompt") or "")
    if item.get("b64_json"):
        try:
            raw = base64.b64decode(str(item["b64_json"]), validate=True)
        except (binascii.Error, ValueError):
            raise p.error("the answer's b64_json is not base64") from None
        return {"image": p.decode(raw), "revised_prompt": revised}
    if item.get("url"):
        return {"image": p.image(str(item["url"])), "revised_prompt": revised}
    raise p.error("the answer has neither b64_json nor url")


_IMAGE_OUTPUTS = {
    "image": Port("image"),
    "revised_prompt": Port("text", "The prompt as the model rewrote it (dall-e-3), or empty."),
}


@node(
    "openai.image_generate",
    title="Generate image (OpenAI)",
    category="ai",
    params=_ImageOptions,
    inputs={"prompt": Port("text", "Added after the prompt param.", optional=True)},
    outputs=_IMAGE_OUTPUTS,
    deterministic=False,
    timeout_seconds=TIMEOUT_SECONDS,
)
def image_generate(
    ctx: NodeContext, params: _ImageOptions, prompt: str | None = None
) -> dict[str, object]:
    """Generate an image from a prompt (POST {base_url}/images/generations).

    Answers in b64_json or as a URL are both handled; a URL is fetched behind the guard.
    """
    p = _provider(ctx, params)
    body: dict[str, Any] = {**_options(params), "prompt": _prompt(p, params, prompt), "n": 1}
    return _image_result(p, p.json(p.call("POST", p.url("images/generations"), json_body=body)))


@node(
    "openai.image_edit",
    title="Edit image (OpenAI)",
    category="ai",
    params=_ImageOptions,
    inputs={
        "image": Port("image", "The image to edit (sent as PNG)."),
        "mask": Port("image", "Transparent where the image should change.", optional=True),
        "prompt": Port("text", "Added after the prompt param.", optional=True),
    },
    outputs=_IMAGE_OUTPUTS,
    deterministic=False,
    timeout_seconds=TIMEOUT_SECONDS,
)
def image_edit(
    ctx: NodeContext,
    params: _ImageOptions,
    image: Image.Image,
    mask: Image.Image | None = None,
    prompt: str | None = None,
) -> dict[str, object]:
    """Edit an image from a prompt (multipart POST {base_url}/images/edits), optionally
    only where the mask is transparent."""
    p = _provider(ctx, params)
    fields = {**_options(params), "prompt": _prompt(p, params, prompt)}
    files = [("image", "image.png", encode_png(image), "image/png")]
    if mask is not None:
        files.append(("mask", "mask.png", encode_png(mask), "image/png"))
    body, content_type = multipart(fields, files)
    response = p.call("POST", p.url("images/edits"), body=body, content_type=content_type)
    return _image_result(p, p.json(response))


NODES = [chat, image_generate, image_edit]

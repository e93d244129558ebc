"""Run inputs: the params of input nodes and the check of a caller's ``inputs`` map.

Input kinds are the vocabulary of the public API (``text``, ``image_url``, ``number``,
``boolean``, ``choice``, ``audio_url``, ``video_url``, ``file_url``).  Every problem is
reported together, each naming its field (``inputs.node_1``), and nothing is queued
unless all of them pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from flowy.engine.graph import AppInput, Workflow
from flowy.errors import Issue, ValidationFailed

MEDIA_KINDS = frozenset({"image_url", "audio_url", "video_url", "file_url"})
MAX_URL_LENGTH = 8192


class InputParams(BaseModel):
    """Params every input node has."""

    model_config = ConfigDict(extra="forbid")
    label: str | None = Field(None, description="What callers see as the input's name.")
    description: str | None = Field(None, description="Help text for callers.")
    required: bool = Field(False, description="Whether a run must give this input.")


class TextInputParams(InputParams):
    default: str | None = None
    max_length: int = Field(10_000, ge=1, le=1_000_000, description="Longest text accepted.")


class MediaInputParams(InputParams):
    required: bool = True
    default: str | None = Field(None, description="URL used when the caller gives none.")


class NumberInputParams(InputParams):
    default: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = Field(False, description="Accept whole numbers only.")


class BooleanInputParams(InputParams):
    default: bool | None = None


class ChoiceInputParams(InputParams):
    options: list[str] = Field(min_length=1, description="The values a caller may pick.")
    default: str | None = None

    @model_validator(mode="after")
    def _default_is_an_option(self) -> ChoiceInputParams:
        if self.default is not None and self.default not in self.options:
            raise ValueError(f"default {self.default!r} is not one of the options")
        return self


MediaCheck = Callable[[str], str | None]


def _check_text(p: TextInputParams, v: object, _m: MediaCheck) -> str | None:
    if not isinstance(v, str):
        return "must be a string"
    if len(v) > p.max_length:
        return f"must be at most {p.max_length} characters"
    return None


def _check_media(p: MediaInputParams, v: object, check: MediaCheck) -> str | None:
    if not isinstance(v, str):
        return "must be a URL string"
    if len(v) > MAX_URL_LENGTH and not v.startswith("data:"):
        return f"URL is longer than {MAX_URL_LENGTH} characters"
    if v.startswith("data:"):
        return check(v)
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL, a data: URI or an upload URL"
    return check(v)


def _check_number(p: NumberInputParams, v: object, _m: MediaCheck) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return "must be a number"
    if not math.isfinite(v):
        return "must be a finite number"
    if p.integer and v != int(v):
        return "must be a whole number"
    if p.minimum is not None and v < p.minimum:
        return f"must be at least {p.minimum:g}"
    if p.maximum is not None and v > p.maximum:
        return f"must be at most {p.maximum:g}"
    return None


def _check_boolean(p: BooleanInputParams, v: object, _m: MediaCheck) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _check_choice(p: ChoiceInputParams, v: object, _m: MediaCheck) -> str | None:
    if not isinstance(v, str) or v not in p.options:
        return "must be one of " + ", ".join(repr(o) for o in p.options)
    return None


_CHECKS: dict[str, Callable[..., str | None]] = {
    "text": _check_text,
    "number": _check_number,
    "boolean": _check_boolean,
    "choice": _check_choice,
    **{k: _check_media for k in MEDIA_KINDS},
}


def _no_media_check(_value: str) -> None:
    return None


def check_run_inputs(
    workflow: Workflow, inputs: object, media_check: MediaCheck = _no_media_check
) -> dict[str, object]:
    """Check a caller's ``inputs`` map; return it with defaults filled in.

    ``media_check`` gets each media URL and returns a problem or None (used to verify
    links to Flowy's own uploads).  Raises :class:`ValidationFailed` listing every issue.
    """
    if not isinstance(inputs, Mapping):
        raise ValidationFailed(
            [Issue("invalid_type", "must be an object of nodeId -> value", field="inputs")]
        )
    by_id: dict[str, AppInput] = {i.node_id: i for i in workflow.inputs}
    issues: list[Issue] = []
    for key in inputs:
        if key not in by_id:
            known = ", ".join(by_id) or "none"
            issues.append(
                Issue(
                    "unknown_input",
                    f"no input with nodeId {key!r} (inputs: {known})",
                    field=f"inputs.{key}",
                    node=str(key),
                )
            )
    resolved: dict[str, object] = {}
    for node_id, spec in by_id.items():
        value = inputs.get(node_id)
        if value is None:
            default = getattr(spec.params, "default", None)
            if default is None and spec.required:
                issues.append(
                    Issue(
                        "required",
                        f"{spec.label!r} ({spec.kind}) is required",
                        field=f"inputs.{node_id}",
                        node=node_id,
                    )
                )
            resolved[node_id] = default
            continue
        problem = _CHECKS[spec.kind](spec.params, value, media_check)
        if problem:
            issues.append(
                Issue(
                    "invalid_value",
                    f"{spec.label!r} ({spec.kind}) {problem}",
                    field=f"inputs.{node_id}",
                    node=node_id,
                )
            )
        resolved[node_id] = value
    if issues:
        raise ValidationFailed(issues)
    return resolved

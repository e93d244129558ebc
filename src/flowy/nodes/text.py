"""Text and data nodes: templates, regular expressions, JSONPath, split/join, numbers.

All are deterministic: the same inputs and params give the same outputs, so the engine
caches them.  Regular expressions are matched in a short-lived isolated interpreter with
a time limit, because Python's ``re`` cannot be interrupted and holds the GIL while it
backtracks: a catastrophic pattern would otherwise freeze the whole server.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal

from jinja2 import StrictUndefined, Template, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment
from jsonpath_ng import JSONPath
from jsonpath_ng.ext.parser import parse as parse_jsonpath
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flowy.engine.spec import SKIP, NodeContext, Port, node
from flowy.errors import NodeError

#: Longest text a text node accepts or produces (characters).
MAX_TEXT = 1_000_000
#: Longest regular expression accepted.
MAX_PATTERN = 1000
#: Most matches ``text.regex_extract`` returns.
MAX_MATCHES = 10_000

# --------------------------------------------------------------------------- template


@functools.lru_cache(maxsize=1)
def _jinja() -> SandboxedEnvironment:
    # Autoescape off: the output is plain text, not HTML.  None prints as "" so an
    # optional input that is not connected (or was skipped) leaves no "None" behind.
    return SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=lambda v: "" if v is None else v,
    )


@functools.lru_cache(maxsize=256)
def _template(source: str) -> Template:
    return _jinja().from_string(source)


class TemplateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template: str = Field(
        max_length=20_000,
        description="Jinja2 template; variables text_1..text_4 and data (the JSON input).",
    )

    @field_validator("template")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            _template(v)
        except TemplateError as exc:
            raise ValueError(f"invalid template: {exc}") from None
        return v


_TEXTS = {
    f"text_{i}": Port("text", f"Text variable text_{i}.", optional=True) for i in (1, 2, 3, 4)
}


@node(
    "text.template",
    title="Template",
    category="text",
    params=TemplateParams,
    inputs={**_TEXTS, "data": Port("json", "JSON variable data.", optional=True)},
    outputs={"text": Port("text")},
)
def template(
    ctx: NodeContext,
    params: TemplateParams,
    text_1: str | None = None,
    text_2: str | None = None,
    text_3: str | None = None,
    text_4: str | None = None,
    data: object = None,
) -> dict[str, object]:
    """Render a Jinja2 template (sandboxed) with the inputs as variables.

    ``{{ text_1 }}``..``{{ text_4 }}`` are the text inputs and ``{{ data }}`` the JSON
    input (``{{ data.name }}``, ``{% for row in data.rows %}``; keys named like dict
    methods need brackets: ``data["items"]``).  Inputs not connected, or skipped
    upstream, are empty.  Using a variable or key that does not exist fails the node,
    naming it.
    """
    variables = {"text_1": text_1, "text_2": text_2, "text_3": text_3, "text_4": text_4}
    try:
        out = _template(params.template).render(**variables, data=data)
    except UndefinedError as exc:
        raise NodeError(f"template uses an undefined variable: {exc.message}") from None
    except TemplateError as exc:
        raise NodeError(f"template failed: {exc}") from None
    except (ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise NodeError(f"template failed: {type(exc).__name__}: {exc}") from None
    return {"text": _capped(out)}


def _capped(text: str) -> str:
    if len(text) > MAX_TEXT:
        raise NodeError(f"text of {len(text)} characters is longer than the {MAX_TEXT} limit")
    return text


# --------------------------------------------------------------------------- regex

# Runs in ``python -I -S``: stdlib only, reads one JSON request, writes one JSON answer.
_REGEX_WORKER = r"""
import json, re, sys
q = json.load(sys.stdin)
try:
    rx = re.compile(q["pattern"], q["flags"])
    if q["op"] == "extract":
        out = []
        for m in rx.finditer(q["text"]):
            out.append(m.group(q["group"]))
            if len(out) >= q["limit"]:
                break
        res = {"matches": out}
    else:
        res = {"text": rx.sub(q["repl"], q["text"], count=q["count"])}
        if len(res["text"]) > q["limit"]:
            res = {"error": "the result is longer than %d characters" % q["limit"]}
except (re.error, IndexError) as exc:
    res = {"error": str(exc)}
json.dump(res, sys.stdout)
"""


def _run_regex(ctx: NodeContext, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one regex job in a fresh interpreter, killed after ``timeout`` seconds or
    when the run is canceled."""
    payload = json.dumps(request).encode("ascii")
    if not sys.executable:
        raise NodeError("cannot match regular expressions: no Python interpreter to start")
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _REGEX_WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    end = time.monotonic() + timeout
    data: bytes | None = payload
    try:
        while True:
            try:
                out, err = proc.communicate(data, timeout=min(0.1, max(end - time.monotonic(), 0)))
                break
            except subprocess.TimeoutExpired:
                data = None  # already sent
                ctx.check_canceled()
                if time.monotonic() >= end:
                    raise NodeError(
                        f"the regular expression took longer than {timeout:g} s; it may "
                        "backtrack catastrophically (nested quantifiers like (a+)+): "
                        "simplify it or raise timeout_seconds"
                    ) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if proc.returncode != 0:
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise NodeError(f"the regular expression worker failed: {last[0]}")
    result: dict[str, Any] = json.loads(out)
    if "error" in result:
        raise NodeError(f"regular expression failed: {result['error']}")
    return result


class RegexParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pattern: str = Field(min_length=1, max_length=MAX_PATTERN, description="Python regex.")
    ignore_case: bool = False
    multiline: bool = Field(False, description="^ and $ match at every line.")
    dotall: bool = Field(False, description=". matches newlines too.")
    timeout_seconds: float = Field(2.0, gt=0, le=30, description="Time limit of the match.")

    def flags(self) -> int:
        return (
            (re.IGNORECASE if self.ignore_case else 0)
            | (re.MULTILINE if self.multiline else 0)
            | (re.DOTALL if self.dotall else 0)
        )

    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.pattern, self.flags())

    @model_validator(mode="after")
    def _compiles(self) -> RegexParams:
        try:
            self.compiled()
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return self


class ExtractParams(RegexParams):
    group: int | str = Field(0, description="Group number or name to extract (0: all).")
    if_none: Literal["empty", "fail", "skip"] = Field(
        "empty", description="When nothing matches: empty text, fail the node, or skip."
    )

    @model_validator(mode="after")
    def _group_exists(self) -> ExtractParams:
        rx = self.compiled()
        if isinstance(self.group, int) and not 0 <= self.group <= rx.groups:
            raise ValueError(f"group {self.group} does not exist (the pattern has {rx.groups})")
        if isinstance(self.group, str) and self.group not in rx.groupindex:
            raise ValueError(f"the pattern has no group named {self.group!r}")
        return self


@node(
    "text.regex_extract",
    title="Regex extract",
    category="text",
    params=ExtractParams,
    inputs={"text": Port("text")},
    outputs={
        "text": Port("text", "The first match (its group)."),
        "matches": Port("json", "Every match, as a list."),
        "found": Port("boolean"),
    },
)
def regex_extract(ctx: NodeContext, params: ExtractParams, text: str) -> dict[str, object]:
    """Find a regular expression in a text: the first match, every match, and whether
    there was one.  A group that did not take part in a match gives null."""
    result = _run_regex(
        ctx,
        {
            "op": "extract",
            "pattern": params.pattern,
            "flags": params.flags(),
            "text": _capped(str(text)),
            "group": params.group,
            "limit": MAX_MATCHES,
        },
        params.timeout_seconds,
    )
    matches: list[str | None] = result["matches"]
    first: object
    if matches:
        first = matches[0] or ""
    elif params.if_none == "fail":
        raise NodeError(f"the pattern {params.pattern!r} does not match the text")
    else:
        first = SKIP if params.if_none == "skip" else ""
    return {"text": first, "matches": matches, "found": bool(matches)}


class ReplaceParams(RegexParams):
    replacement: str = Field(
        "", max_length=10_000, description=r"Replacement; \1 or \g<name> for groups."
    )
    count: int = Field(0, ge=0, description="Most replacements; 0 replaces all.")

    @model_validator(mode="after")
    def _replacement_valid(self) -> ReplaceParams:
        # "pattern|" always matches the empty string, which expands every group
        # reference of the replacement once, so a bad one is caught now.
        try:
            re.compile(self.pattern + "|", self.flags()).sub(self.replacement, "", count=1)
        except (re.error, IndexError) as exc:
            raise ValueError(f"invalid replacement: {exc}") from None
        return self


@node(
    "text.regex_replace",
    title="Regex replace",
    category="text",
    params=ReplaceParams,
    inputs={"text": Port("text")},
    outputs={"text": Port("text")},
)
def regex_replace(ctx: NodeContext, params: ReplaceParams, text: str) -> dict[str, object]:
    """Replace the matches of a regular expression in a text."""
    result = _run_regex(
        ctx,
        {
            "op": "replace",
            "pattern": params.pattern,
            "flags": params.flags(),
            "text": _capped(str(text)),
            "repl": params.replacement,
            "count": params.count,
            "limit": MAX_TEXT,
        },
        params.timeout_seconds,
    )
    return {"text": result["text"]}


# --------------------------------------------------------------------------- JSON


@functools.lru_cache(maxsize=256)
def _jsonpath(expression: str) -> JSONPath:
    return parse_jsonpath(expression)


class JsonPathParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expression: str = Field(
        min_length=1, max_length=2000, description="JSONPath, e.g. $.items[0].name"
    )
    all: bool = Field(False, description="Output the list of every match, not the first.")
    default: Any = Field(None, description="The value when nothing matches.")

    @field_validator("expression")
    @classmethod
    def _parses(cls, v: str) -> str:
        try:
            _jsonpath(v)
        except Exception as exc:  # JSONPathError, and plain Exceptions from the lexer
            raise ValueError(f"invalid JSONPath: {exc}") from None
        return v


@node(
    "data.json_path",
    title="JSONPath",
    category="data",
    params=JsonPathParams,
    inputs={"data": Port("json")},
    outputs={"value": Port("json"), "found": Port("boolean")},
)
def json_path(ctx: NodeContext, params: JsonPathParams, data: object) -> dict[str, object]:
    """Pick values out of JSON with a JSONPath expression (filters like
    ``$.items[?(@.price > 10)].name`` work).  ``value`` is the first match, or the list
    of all with ``all``; the default when nothing matches."""
    try:
        found = [m.value for m in _jsonpath(params.expression).find(data)]
    except Exception as exc:  # jsonpath-ng raises whatever its operators raise
        raise NodeError(f"JSONPath {params.expression!r} failed: {exc}") from None
    if params.all:
        return {"value": found if found else params.default, "found": bool(found)}
    return {"value": found[0] if found else params.default, "found": bool(found)}


# --------------------------------------------------------------------------- split/join


class SplitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    separator: str = Field("\n", max_length=100, description="Empty: split on whitespace.")
    max_splits: int = Field(-1, ge=-1, description="-1: no limit.")
    trim: bool = Field(True, description="Strip whitespace around each item.")
    drop_empty: bool = Field(True, description="Leave out empty items.")


@node(
    "text.split",
    title="Split text",
    category="text",
    params=SplitParams,
    inputs={"text": Port("text")},
    outputs={"items": Port("json", "The parts, as a list of texts.")},
)
def split(ctx: NodeContext, params: SplitParams, text: str) -> dict[str, object]:
    """Split a text into a list at a separator (lines by default)."""
    parts = str(text).split(params.separator or None, params.max_splits)
    if params.trim:
        parts = [p.strip() for p in parts]
    if params.drop_empty:
        parts = [p for p in parts if p]
    return {"items": parts}


class JoinParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    separator: str = Field("\n", max_length=100)


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


@node(
    "text.join",
    title="Join texts",
    category="text",
    params=JoinParams,
    inputs={"items": Port("json", "A list.")},
    outputs={"text": Port("text")},
)
def join(ctx: NodeContext, params: JoinParams, items: object) -> dict[str, object]:
    """Join a list into one text; items that are not texts are written as JSON, nulls
    as empty."""
    if not isinstance(items, list):
        raise NodeError(f"items must be a list, got {type(items).__name__}")
    return {"text": _capped(params.separator.join(_as_text(i) for i in items))}


class ConcatParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    separator: str = Field("", max_length=100)


@node(
    "text.concat",
    title="Concatenate",
    category="text",
    params=ConcatParams,
    inputs=_TEXTS,
    outputs={"text": Port("text")},
)
def concat(
    ctx: NodeContext,
    params: ConcatParams,
    text_1: str | None = None,
    text_2: str | None = None,
    text_3: str | None = None,
    text_4: str | None = None,
) -> dict[str, object]:
    """Concatenate the connected texts in order; missing or skipped ones are left out."""
    parts = [t for t in (text_1, text_2, text_3, text_4) if t is not None]
    return {"text": _capped(params.separator.join(parts))}


# --------------------------------------------------------------------------- numbers


class FormatNumberParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decimals: int = Field(2, ge=0, le=20)
    thousands_separator: str = Field(",", max_length=3, description="Empty for none.")
    decimal_separator: str = Field(".", min_length=1, max_length=3)
    prefix: str = Field("", max_length=20, description="e.g. '$'.")
    suffix: str = Field("", max_length=20, description="e.g. ' kg'.")
    percent: bool = Field(False, description="Multiply by 100 and append %.")


@node(
    "text.format_number",
    title="Format number",
    category="text",
    params=FormatNumberParams,
    inputs={"number": Port("number")},
    outputs={"text": Port("text")},
)
def format_number(ctx: NodeContext, params: FormatNumberParams, number: float) -> dict[str, object]:
    """Write a number as text: fixed decimals (rounded half up), a thousands separator,
    prefix and suffix; ``percent`` shows 0.256 as 25.6%."""
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise NodeError(f"number must be a number, got {type(number).__name__}")
    try:
        value = Decimal(str(number))
    except InvalidOperation:  # pragma: no cover - str() of a number always parses
        raise NodeError(f"not a number: {number!r}") from None
    if not value.is_finite():
        raise NodeError(f"cannot format {number!r}")
    if params.percent:
        value *= 100
    rounded = value.quantize(Decimal(1).scaleb(-params.decimals), rounding=ROUND_HALF_UP)
    sign = "-" if rounded < 0 else ""
    whole, _, frac = f"{abs(rounded):f}".partition(".")
    groups: list[str] = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    out = params.thousands_separator.join(groups)
    if frac:
        out += params.decimal_separator + frac
    pct = "%" if params.percent else ""
    return {"text": f"{sign}{params.prefix}{out}{pct}{params.suffix}"}


# --------------------------------------------------------------------------- coalesce


class CoalesceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default: Any = Field(None, description="The value when every input is empty.")
    empty_strings: bool = Field(True, description='Count "" (and blank text) as empty.')


def _empty(value: object, strings: bool) -> bool:
    if value is None or value is SKIP:
        return True
    if isinstance(value, str):
        return strings and not value.strip()
    return isinstance(value, list | dict) and not value


@node(
    "data.coalesce",
    title="First non-empty",
    category="data",
    params=CoalesceParams,
    inputs={f"value_{i}": Port("any", f"Candidate {i}.", optional=True) for i in (1, 2, 3, 4)},
    outputs={"value": Port("any")},
)
def coalesce(
    ctx: NodeContext,
    params: CoalesceParams,
    value_1: object = None,
    value_2: object = None,
    value_3: object = None,
    value_4: object = None,
) -> dict[str, object]:
    """The first input that is not empty (missing, skipped, null, blank text, empty list
    or object), else the default.  Its inputs are optional, so it runs after an if or a
    switch to merge the branches back."""
    for value in (value_1, value_2, value_3, value_4):
        if not _empty(value, params.empty_strings):
            return {"value": value}
    return {"value": params.default}


NODES = [
    template,
    regex_extract,
    regex_replace,
    json_path,
    split,
    join,
    concat,
    format_number,
    coalesce,
]

"""Logic nodes: branch a workflow on a condition or a value, and compare values.

A branch that is not taken carries :data:`~flowy.engine.spec.SKIP`.  The engine skips
every node whose required input is SKIP (reported ``skipped``, not failed) and leaves
its output nodes out of the run's results; an optional input that receives SKIP gets
None, which is how ``data.coalesce`` merges branches back together.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flowy.engine.spec import SKIP, NodeContext, NoParams, Port, node
from flowy.errors import NodeError

#: Texts that count as false (compared trimmed and case-insensitively).
FALSE_TEXTS = frozenset({"", "false", "0", "no", "off", "null", "none"})


def truthy(value: object) -> bool:
    """The truthiness rule of ``logic.if``.

    Booleans are themselves; numbers are true unless zero (or NaN); texts are false when,
    trimmed and lower-cased, they are empty, ``false``, ``0``, ``no``, ``off``, ``null``
    or ``none``; null is false; lists and objects are true unless empty.
    """
    if value is None or value is SKIP:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0 and not (isinstance(value, float) and math.isnan(value))
    if isinstance(value, str):
        return value.strip().lower() not in FALSE_TEXTS
    if isinstance(value, list | dict | tuple):
        return len(value) > 0
    return bool(value)


@node(
    "logic.if",
    title="If",
    category="logic",
    inputs={
        "condition": Port("any", "Boolean, or any value judged by its truthiness."),
        "value": Port("any", "What the taken branch carries."),
    },
    outputs={
        "then": Port("any", "The value when the condition holds, else skipped."),
        "else": Port("any", "The value when it does not, else skipped."),
    },
)
def if_(ctx: NodeContext, params: NoParams, condition: object, value: object) -> dict[str, object]:
    """Send the value down ``then`` or ``else``; the other branch is skipped.

    A condition is true when it is: the boolean true; a number other than 0; a text other
    than empty, "false", "0", "no", "off", "null" or "none" (ignoring case and spaces); a
    non-empty list or object.  Null is false.
    """
    if truthy(condition):
        return {"then": value, "else": SKIP}
    return {"then": SKIP, "else": value}


MAX_CASES = 8


class SwitchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cases: list[str] = Field(
        min_length=1,
        max_length=MAX_CASES,
        description="The values to match, in order: case_1 is the first.",
    )
    ignore_case: bool = False
    trim: bool = Field(True, description="Ignore spaces around the value.")

    @field_validator("cases")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("cases must be distinct")
        return v


@node(
    "logic.switch",
    title="Switch",
    category="logic",
    params=SwitchParams,
    inputs={
        "value": Port("text", "The value matched against the cases."),
        "data": Port("any", "What the taken output carries (the value if absent).", True),
    },
    outputs={
        **{f"case_{i}": Port("any") for i in range(1, MAX_CASES + 1)},
        "default": Port("any", "Taken when no case matches."),
    },
)
def switch(
    ctx: NodeContext, params: SwitchParams, value: str, data: object = None
) -> dict[str, object]:
    """Send ``data`` (or the value) to the output of the first case equal to the value,
    or to ``default``; every other output is skipped."""

    def norm(s: str) -> str:
        s = s.strip() if params.trim else s
        return s.casefold() if params.ignore_case else s

    carried = value if data is None else data
    out: dict[str, object] = {f"case_{i}": SKIP for i in range(1, MAX_CASES + 1)}
    out["default"] = SKIP
    key = norm(str(value))
    for i, case in enumerate(params.cases, start=1):
        if norm(case) == key:
            out[f"case_{i}"] = carried
            return out
    out["default"] = carried
    return out


Op = Literal["==", "!=", "<", "<=", ">", ">=", "contains", "starts_with", "ends_with", "is_empty"]


class CompareParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    op: Op = "=="
    value: str | float | int | bool | None = Field(
        None, description="What a is compared with when b is not connected."
    )
    ignore_case: bool = False


def _number(v: object) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _text(v: object, ignore_case: bool) -> str:
    if v is None:
        s = ""
    elif isinstance(v, bool):
        s = "true" if v else "false"
    else:
        s = str(v)
    return s.casefold() if ignore_case else s


def compare_values(a: object, op: str, b: object, *, ignore_case: bool = False) -> bool:
    """Compare as numbers when both sides are numbers (or texts that read as numbers),
    else as texts (``contains``, ``starts_with``, ``ends_with`` always as texts)."""
    if op == "is_empty":
        return a is None or (isinstance(a, str | list | dict) and not a)
    if isinstance(a, bool) and isinstance(b, bool) and op in ("==", "!="):
        return (a == b) == (op == "==")
    if op in ("contains", "starts_with", "ends_with"):
        if op == "contains" and isinstance(a, list):
            return b in a
        ta, tb = _text(a, ignore_case), _text(b, ignore_case)
        if op == "contains":
            return tb in ta
        return ta.startswith(tb) if op == "starts_with" else ta.endswith(tb)
    na, nb = _number(a), _number(b)
    x: object
    y: object
    if na is not None and nb is not None:
        x, y = na, nb
    else:
        x, y = _text(a, ignore_case), _text(b, ignore_case)
    match op:
        case "==":
            return x == y
        case "!=":
            return x != y
        case "<":
            return x < y  # type: ignore[operator]
        case "<=":
            return x <= y  # type: ignore[operator]
        case ">":
            return x > y  # type: ignore[operator]
        case ">=":
            return x >= y  # type: ignore[operator]
    raise NodeError(f"unknown comparison {op!r}")


@node(
    "logic.compare",
    title="Compare",
    category="logic",
    params=CompareParams,
    inputs={
        "a": Port("any"),
        "b": Port("any", "The other side; the value param when not connected.", True),
    },
    outputs={"result": Port("boolean")},
)
def compare(
    ctx: NodeContext, params: CompareParams, a: object, b: object = None
) -> dict[str, object]:
    """Compare a with b (or with the value param): ==, !=, <, <=, >, >= as numbers when
    both read as numbers, else as texts; contains (text, or item of a list), starts_with,
    ends_with; is_empty (null, empty text, list or object)."""
    other = params.value if b is None else b
    return {"result": compare_values(a, params.op, other, ignore_case=params.ignore_case)}


NODES = [if_, switch, compare]

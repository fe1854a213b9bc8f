"""Segments: a list's contacts filtered by their attributes.

A condition is `{"attribute": name, "op": op, "value": v}`; a segment matches contacts meeting all (or any)
of its conditions. Evaluated in Python over the stored attributes, so the same rules hold on every database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from estafeta.store import audience as store
from estafeta.store.db import Database

OPS: tuple[str, ...] = ("eq", "ne", "contains", "gt", "gte", "lt", "lte", "in", "exists", "missing")


class SegmentError(ValueError):
    """A condition that cannot be evaluated; `field` names it (e.g. `conditions[1].value`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Condition:
    attribute: str
    op: str
    value: Any = None


def _comparable(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Numbers compare as numbers (numeric strings included), everything else as case-folded text."""
    try:
        return float(a), float(b)
    except (TypeError, ValueError):
        if a is None or b is None:
            return None
        return str(a).casefold(), str(b).casefold()


def _ordered(test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def check(actual: Any, wanted: Any) -> bool:
        pair = _comparable(actual, wanted)
        return pair is not None and test(*pair)

    return check


_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": _ordered(lambda a, b: a == b),
    "ne": lambda a, b: not _TESTS["eq"](a, b),
    "gt": _ordered(lambda a, b: a > b),
    "gte": _ordered(lambda a, b: a >= b),
    "lt": _ordered(lambda a, b: a < b),
    "lte": _ordered(lambda a, b: a <= b),
    "contains": lambda a, b: a is not None and str(b).casefold() in str(a).casefold(),
    "in": lambda a, b: any(_TESTS["eq"](a, v) for v in b),
}


def parse_conditions(raw: list[dict[str, Any]]) -> list[Condition]:
    """Validate conditions as given through the API; raises `SegmentError` naming the bad one."""
    out = []
    for index, item in enumerate(raw):
        where = f"conditions[{index}]"
        attribute, op = item.get("attribute"), item.get("op")
        if not isinstance(attribute, str) or not attribute:
            raise SegmentError(f"{where}.attribute", "must name an attribute")
        if op not in OPS:
            raise SegmentError(f"{where}.op", f"must be one of {', '.join(OPS)}")
        value = item.get("value")
        if op == "in" and not isinstance(value, list):
            raise SegmentError(f"{where}.value", "must be a list for `in`")
        if op not in ("exists", "missing", "in") and value is None:
            raise SegmentError(f"{where}.value", f"is required for `{op}`")
        out.append(Condition(attribute, op, value))
    return out


def matches(conditions: list[Condition], match: str, attributes: dict[str, Any]) -> bool:
    """Whether a contact with these attributes is in the segment (`email` is an attribute too)."""
    results = (_holds(c, attributes) for c in conditions)
    return all(results) if match == "all" else any(results)


def _holds(condition: Condition, attributes: dict[str, Any]) -> bool:
    present = condition.attribute in attributes and attributes[condition.attribute] not in (None, "")
    if condition.op == "exists":
        return present
    if condition.op == "missing":
        return not present
    return _TESTS[condition.op](attributes.get(condition.attribute), condition.value)


async def subscribers(db: Database, segment: store.SegmentRow) -> int:
    """Subscribed contacts of the segment's list that are in the segment now."""
    conditions = parse_conditions(segment.conditions)
    count, after = 0, 0
    while page := await db.run(store.members, segment.list_id, after_id=after, limit=1000):
        count += sum(
            1 for m in page if matches(conditions, segment.match, {"email": m.email, **m.attributes})
        )
        after = page[-1].contact_id
    return count


# `attribute OP value` as typed on the command line; the longest operators first.
_EXPRESSION = re.compile(
    r"\s*(?P<attribute>[^\s=!<>~]+)\s*"
    r"(?:(?P<op>>=|<=|!=|=|>|<|~|\bin\b)\s*(?P<value>.*?)|(?P<unary>\bexists|\bmissing))\s*$",
    re.IGNORECASE,
)
_SYMBOLS = {
    "=": "eq",
    "!=": "ne",
    "~": "contains",
    ">": "gt",
    ">=": "gte",
    "<": "lt",
    "<=": "lte",
    "in": "in",
}


def parse_expression(text: str, index: int = 0) -> dict[str, Any]:
    """A condition from `plan = pro`, `age >= 30`, `city ~ york`, `country in ES,PT`, `phone exists`.

    Values are JSON when they parse as JSON (numbers, true/false), else text; `in` takes a comma list."""
    found = _EXPRESSION.fullmatch(text)
    if found is None:
        raise SegmentError(
            f"conditions[{index}]",
            f"{text!r} is not `attribute OP value` (OP: = != ~ > >= < <= in) or `attribute exists|missing`",
        )
    if found["unary"]:
        return {"attribute": found["attribute"], "op": found["unary"].lower()}
    op = _SYMBOLS[found["op"].lower()]
    raw = found["value"]
    value: Any = [_value(v.strip()) for v in raw.split(",") if v.strip()] if op == "in" else _value(raw)
    if value in ("", []):
        raise SegmentError(f"conditions[{index}].value", f"{text!r} has no value after {found['op']!r}")
    return {"attribute": found["attribute"], "op": op, "value": value}


def _value(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | bool) else text


def describe(condition: dict[str, Any]) -> str:
    """A stored condition as the command line writes it."""
    symbol = {op: sym for sym, op in _SYMBOLS.items()}.get(condition["op"])
    if symbol is None:
        return f"{condition['attribute']} {condition['op']}"
    value = condition.get("value")
    values = value if isinstance(value, list) else [value]
    shown = ",".join(v if isinstance(v, str) else json.dumps(v) for v in values)
    return f"{condition['attribute']} {symbol} {shown}"

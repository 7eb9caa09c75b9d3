"""Declarative checks of numeric config fields, run in every runner config's ``__post_init__``.

A rule is a short string: ``"int>=1"``, ``"int>=0"``, ``">0"``, ``">=0"``, ``"[0,1]"``, ``"[0,1)"``,
``"(0,1]"`` — a real number (never bool, NaN or inf) in that range; ints must be integers; a
trailing ``"?"`` also allows None. :func:`check_fields` collects EVERY problem of a config and
raises one ``ValueError`` listing them all, so a user fixes a command line in one go.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable
from typing import Any

_RANGE = re.compile(r"^([\[(])(-?[\d.e+-]+|-inf),(-?[\d.e+-]+|inf)([\])])$")


def _describe(rule: str) -> str:
    body = rule[3:] if rule.startswith("int") else rule
    found = re.match(r"[<>]=?", body)
    assert found is not None, f"bad rule {rule!r}"
    op = found[0]
    return ("an integer " if rule.startswith("int") else "") + f"{op} {body[len(op):]}"


def field_problem(name: str, value: Any, rule: str) -> str | None:
    """None if ``value`` satisfies ``rule``, else a one-line message."""
    optional = rule.endswith("?")
    rule = rule.rstrip("?")
    if value is None:
        return None if optional else f"{name} must be set (got None)"
    want_int = rule.startswith("int")
    body = rule[3:] if want_int else rule
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"{name} must be {'an integer' if want_int else 'a number'}, got {value!r}"
    if want_int and not isinstance(value, numbers.Integral):
        return f"{name} must be an integer, got {value!r}"
    x = float(value)  # comparisons below; messages show the value as given
    if not math.isfinite(x):
        return f"{name} must be finite, got {value!r}"
    m = _RANGE.match(body)
    if m:
        lo, hi = float(m[2]), float(m[3])
        ok = (x >= lo if m[1] == "[" else x > lo) and (x <= hi if m[4] == "]" else x < hi)
        return None if ok else f"{name} must be in {body}, got {value!r}"
    for op, test in ((">=", lambda v, b: v >= b), (">", lambda v, b: v > b), ("<=", lambda v, b: v <= b)):
        if body.startswith(op):
            bound = float(body[len(op):])
            return None if test(value, bound) else f"{name} must be {_describe(rule)}, got {value!r}"
    if body:
        raise ValueError(f"bad rule {rule!r} for {name}")
    return None


def group_size_fits(num_envs: int, group_size: int) -> bool:
    """The grouping rule of RLOO/GRPO: ``group_size >= 1`` rows per group, dividing the ``num_envs`` rows."""
    return group_size >= 1 and num_envs % group_size == 0


def problems(obj: Any, rules: dict[str, str]) -> list[str]:
    return [p for name, rule in rules.items() if (p := field_problem(name, getattr(obj, name), rule))]


def check_fields(obj: Any, rules: dict[str, str], extra: dict[str, Callable[[], bool]] | None = None) -> None:
    """Raise one ValueError listing every rule ``obj`` breaks, plus each message of ``extra`` whose
    condition returns False (a condition that raises is skipped: its fields are already reported)."""
    bad = problems(obj, rules)
    for msg, cond in (extra or {}).items():
        try:
            ok = cond()
        except Exception:  # noqa: BLE001
            continue
        if not ok:
            bad.append(msg)
    if bad:
        raise ValueError(f"invalid {type(obj).__name__}: " + "; ".join(bad))

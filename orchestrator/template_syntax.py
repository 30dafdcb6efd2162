"""Whether a value holds template syntax, answered without importing jinja2.

``orch validate`` of a file whose templates are all plain (``{{ a.b }}``) never
needs Jinja itself (spec/templates.py reads those without it), so these two
questions live apart from ``expr`` (the jinja2 module), which re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["has_template", "is_template"]


_PLAIN_SCALARS = frozenset({int, float, bool, type(None)})


def has_template(value: Any) -> bool:
    """Whether any string inside ``value`` (dicts and lists are walked) holds template syntax."""
    kind = type(value)
    if kind is str:
        return "{{" in value or "{%" in value or "{#" in value
    if kind is dict:
        return any(has_template(v) for v in value.values()) if value else False
    if kind in _PLAIN_SCALARS:
        return False
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, Mapping):
        return any(has_template(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_template(v) for v in value)
    return False


def is_template(text: str) -> bool:
    """Whether a string holds template syntax (``{{``, ``{%`` or ``{#``)."""
    return "{{" in text or "{%" in text or "{#" in text

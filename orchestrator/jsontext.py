"""JSON text that other programs wrote (an HTTP body, a model's answer, a command's stdout).

``loads`` is ``json.loads`` without Python's extensions: ``NaN``, ``Infinity``
and ``-Infinity`` are not JSON (RFC 8259) and would make every output orch
writes afterwards non-JSON, so they are refused as invalid JSON. Stdlib only.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads"]


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(text: str | bytes) -> Any:
    """Parse strict JSON; raises ValueError (``json.JSONDecodeError`` or a NaN/Infinity)."""
    return json.loads(text, parse_constant=_refuse)

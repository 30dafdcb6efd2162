"""The only jsonschema import (stub until the spec module lands)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema


def check_agent_schema(schema: Mapping[str, Any]) -> str | None:
    """The reason ``schema`` is not a valid JSON Schema (2020-12), or None."""
    try:
        jsonschema.Draft202012Validator.check_schema(dict(schema))
    except jsonschema.SchemaError as exc:
        return str(exc.message)
    return None

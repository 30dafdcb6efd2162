"""docs/reference.md is generated from the workflow schema and kept in sync with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _keys(node: dict, defs: dict) -> set[str]:
    """Every property name anywhere in the schema (what the page must mention)."""
    found: set[str] = set()
    stack = [node, *defs.values()]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            props = item.get("properties")
            if isinstance(props, dict):
                found.update(props)
            stack.extend(v for k, v in item.items() if k != "$defs")
        elif isinstance(item, list):
            stack.extend(item)
    return found


def test_the_reference_is_in_sync_with_the_schema():
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "make_reference.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, (
        "docs/reference.md is out of date with schemas/workflow.schema.json: "
        "run `make reference` and commit the result"
    )


def test_the_reference_names_every_key_and_its_values():
    schema = json.loads((ROOT / "schemas" / "workflow.schema.json").read_text())
    page = (ROOT / "docs" / "reference.md").read_text()
    for key in _keys(schema, schema.get("$defs", {})):
        assert f"| `{key}` |" in page, key
    # what users had to read the schema for
    assert "`critical` \\| `high` \\| `medium` \\| `low` \\| `background`" in page
    assert "| `on_failure` | list of [phase](#phase) |" in page

"""Write the generated files: docs/reference.md (from the schema) and orchestrator/cli/help.txt.

    python docs/make_reference.py          # rewrite both (`make reference`)
    python docs/make_reference.py --check  # exit 1 when either is out of date

docs/reference.md lists every workflow and phase key: each key's description, type,
allowed values, bounds and default come from schemas/workflow.schema.json.
orchestrator/cli/help.txt is `orch --help` as typer renders it at 80 columns, with a
checksum of the cli modules (orchestrator/__main__.py prints it without importing
typer). tests/test_reference.py fails when either is out of date.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "workflow.schema.json"
PAGE = ROOT / "docs" / "reference.md"
HELP = ROOT / "orchestrator" / "cli" / "help.txt"

HEADER = """\
# Workflow reference

Every key of a workflow file, generated from `schemas/workflow.schema.json` by
`make reference` (do not edit by hand; `tests/test_reference.py` checks it is in
sync). `orch validate` checks all of this and more (references, cycles,
templates); `orch schema --agents` adds each agent type's `with:` keys for
editors, and `orch agents NAME` lists them.
"""


def render(schema: dict[str, Any]) -> str:
    """The whole page for ``schema``."""
    defs: dict[str, Any] = schema.get("$defs", {})
    sections: list[tuple[str, str, dict[str, Any]]] = [("workflow", "The workflow file", schema)]
    seen = {"workflow"}
    out = [HEADER]
    i = 0
    while i < len(sections):
        anchor, title, node = sections[i]
        i += 1
        out.append(f"\n## {title}\n")
        description = node.get("description")
        if description and anchor != "workflow":
            out.append(f"\n{description}\n")
        out.append("\n| key | value | meaning |\n|---|---|---|\n")
        required = set(node.get("required", []))
        for key, sub in node.get("properties", {}).items():
            value, nested = _value(sub, defs, f"{anchor}.{key}")
            for child_anchor, child_title, child in nested:
                if child_anchor not in seen:
                    seen.add(child_anchor)
                    sections.append((child_anchor, child_title, child))
            meaning = _text(_description(sub, defs))
            if key in required:
                meaning = "**required.** " + meaning
            out.append(f"| `{key}` | {value} | {meaning} |\n")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            value, nested = _value(extra, defs, f"{anchor}.item")
            for child_anchor, child_title, child in nested:
                if child_anchor not in seen:
                    seen.add(child_anchor)
                    sections.append((child_anchor, child_title, child))
            names = node.get("propertyNames", {}).get("pattern")
            label = f"any name matching `{names}`" if names else "any name"
            out.append(f"| {label} | {value} | {_text(_description(extra, defs))} |\n")
    return "".join(out)


def _description(node: dict[str, Any], defs: dict[str, Any]) -> str:
    if "description" in node:
        return str(node["description"])
    ref = node.get("$ref")
    if isinstance(ref, str):
        return str(defs.get(ref.rsplit("/", 1)[-1], {}).get("description", ""))
    return ""


def _text(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _value(
    node: dict[str, Any], defs: dict[str, Any], path: str
) -> tuple[str, list[tuple[str, str, dict[str, Any]]]]:
    """How a value is written (markdown), and the object schemas that get their own section."""
    nested: list[tuple[str, str, dict[str, Any]]] = []
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        target = defs.get(name, {})
        if target.get("title") in _TITLED:
            text = _TITLED[target["title"]]
            return (text + " (> 0)" if target["title"] == "positive duration" else text), nested
        if "properties" in target:
            nested.append((name, _title(name), target))
            text = f"[{_title(name).lower()}](#{_slug(_title(name))})"
        else:
            text, more = _value({k: v for k, v in target.items() if k != "description"}, defs, path)
            nested += more
        own = {k: v for k, v in node.items() if k not in ("$ref", "description", "allOf")}
        if own:
            extra, more = _value(own, defs, path)
            nested += more
            text = f"{text}; {extra}"
        return text, nested
    parts: list[str] = []
    if "const" in node:
        parts.append(f"`{json.dumps(node['const'])}`")
    if "enum" in node:
        parts.append(" \\| ".join(f"`{v}`" for v in node["enum"]))
    for key in ("anyOf", "oneOf"):
        if key in node:
            texts = []
            for alt in node[key]:
                t, more = _value(alt, defs, path)
                texts.append(t)
                nested += more
            parts.append(" or ".join(texts))
    kinds = node.get("type")
    if kinds and "enum" not in node and "const" not in node:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        words = []
        for k in names:
            if k == "object" and "properties" in node:
                anchor = path.replace(".", "-")
                title = f"`{path.split('.', 1)[-1] if path.startswith('workflow.') else path}`"
                nested.append((anchor, title, node))
                words.append(f"[mapping]({'#' + _slug(title)})")
            elif k == "object" and isinstance(node.get("additionalProperties"), dict):
                t, more = _value(node["additionalProperties"], defs, path + ".item")
                nested += more
                words.append(f"mapping of names to {t}")
            elif k == "array":
                items = node.get("items")
                if isinstance(items, dict) and items:
                    t, more = _value(items, defs, path + ".item")
                    nested += more
                    words.append(f"list of {t}")
                else:
                    words.append("list")
            else:
                words.append(_TYPE_WORDS.get(k, k))
        parts.append(" or ".join(words))
    bounds = []
    if "minimum" in node:
        bounds.append(f">= {node['minimum']}")
    if "exclusiveMinimum" in node:
        bounds.append(f"> {node['exclusiveMinimum']}")
    if "minLength" in node and node["minLength"] == 1:
        bounds.append("not empty")
    if "minItems" in node and node["minItems"] == 1:
        bounds.append("not empty")
    if node.get("uniqueItems"):
        bounds.append("no repeats")
    if node.get("title") in _TITLED:
        parts = [_TITLED[node["title"]]]
        bounds = []
    for rule in node.get("allOf", []):
        if rule.get("exclusiveMinimum") == 0:
            bounds.append("> 0")
        if rule.get("pattern") == "[1-9]" and "exclusiveMinimum" not in rule:
            bounds.append("at least 1")
    text = " or ".join(p for p in parts if p) or "any value"
    if "default" in node:
        bounds.append(f"default `{json.dumps(node['default'])}`")
    if bounds:
        text += " (" + ", ".join(bounds) + ")"
    return text, nested


_TYPE_WORDS = {
    "string": "text",
    "integer": "integer",
    "number": "number",
    "boolean": "`true` \\| `false`",
    "object": "mapping",
    "null": "`null`",
}
_TITLED = {
    "duration": "duration (`500ms`, `30s`, `5m`, `1h`, `1h30m` or seconds)",
    "positive duration": "duration (`500ms`, `30s`, `5m`, `1h`, `1h30m` or seconds)",
    "rate limit": "rate (`10/s`, `600/m`, `1000/h`)",
}


def _title(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _slug(title: str) -> str:
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def render_help() -> str:
    """help.txt: a checksum line, then `orch --help` as typer prints it at 80 columns."""
    sys.path.insert(0, str(ROOT))
    from orchestrator.__main__ import cli_checksum

    env = {**os.environ, "ORCH_NO_FAST_HELP": "1", "COLUMNS": "80", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--help"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return f"checksum {cli_checksum()}\n{done.stdout}"


def main(argv: list[str]) -> int:
    """Write the files, or with ``--check`` compare them; return the exit code."""
    wanted = {
        PAGE: render(json.loads(SCHEMA.read_text(encoding="utf-8"))),
        HELP: render_help(),
    }
    if "--check" in argv:
        stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run `make reference`")
        return 1 if stale else 0
    for path, text in wanted.items():
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

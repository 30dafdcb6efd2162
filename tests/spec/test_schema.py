"""The workflow JSON Schema: complete, described, shipped; its errors told in plain words."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from orchestrator.spec.schema import _compile, check_workflow, workflow_schema
from orchestrator.spec.source import parse_source

ROOT = Path(__file__).parents[2]
SCHEMA_FILE = ROOT / "schemas" / "workflow.schema.json"


def _walk(node, path=()):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, path + (i,))


def test_the_schema_is_valid_2020_12_and_is_the_one_loaded():
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert workflow_schema() == schema


def test_every_property_has_a_description_and_objects_are_closed():
    schema = json.loads(SCHEMA_FILE.read_text())
    for path, node in _walk(schema):
        for name, sub in node.get("properties", {}).items() if path[-1:] != ("properties",) else ():
            has = "description" in sub or "$ref" in sub and "description" in _ref(schema, sub)
            assert has, f"{'/'.join(map(str, path))}/{name} has no description"
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, path


def _ref(schema, node):
    return schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]


def test_every_contract_key_is_in_the_schema():
    schema = json.loads(SCHEMA_FILE.read_text())
    top = {
        "version",
        "name",
        "description",
        "inputs",
        "agents",
        "defaults",
        "max_parallel",
        "mode",
        "timeout",
        "error_handling",
        "phases",
        "outputs",
        "on_failure",
        "on_success",
        "finally",
        "schedule",
    }
    assert top <= set(schema["properties"])
    phase = {
        "id",
        "name",
        "description",
        "agent",
        "with",
        "depends_on",
        "when",
        "trigger",
        "timeout",
        "retries",
        "continue_on_error",
        "fallback",
        "compensate",
        "cache",
        "foreach",
        "max_parallel",
        "handoff",
        "priority",
        "estimated_duration",
        "budget",
        "capability",
        "approval",
        "repeat",
        "resources",
    }
    assert set(schema["$defs"]["phase"]["properties"]) == phase
    assert set(schema["$defs"]["retries"]["properties"]) == {
        "attempts",
        "backoff",
        "delay",
        "max_delay",
        "jitter",
        "on",
    }


def test_the_wheel_config_ships_the_schema():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"schemas/workflow.schema.json" = "orchestrator/schemas/workflow.schema.json"' in text


@pytest.mark.parametrize(
    "doc",
    [
        {"name": "x", "phases": [{"id": "a", "agent": "echo"}]},
        {"name": "x", "phases": [{"id": "a", "agent": "echo", "timeout": 1.5, "retries": 2}]},
        {"name": "x", "phases": [{"id": "a", "retries": {"attempts": 1, "on": ["error"]}}]},
        {"name": 1, "phases": []},
        {"name": "x", "phases": [{"id": "a", "retries": True}]},
        {"name": "x", "phases": [{"id": "a", "timeout": "5 minutes"}]},
        {"name": "x", "version": 1.0, "phases": [{"id": "a"}]},
        {"name": "x", "phases": [{"id": "a", "retries": {"on": ["error", "error"]}}]},
        {"name": "x", "phases": [{"id": "a", "priority": True}]},
        {"name": "x", "inputs": {"bad name": {}}, "phases": [{"id": "a"}]},
        {"name": "x", "phases": [{"id": "a", "cache": {"ttl": 5, "key": "k"}}]},
    ],
)
def test_the_fast_path_never_passes_what_jsonschema_refuses(doc):
    fast = _compile(workflow_schema(), workflow_schema()["$defs"])
    assert fast is not None
    slow = jsonschema.Draft202012Validator(dict(workflow_schema())).is_valid(doc)
    if fast(doc):
        assert slow


def test_messages_are_plain_sentences_located_at_the_offending_value():
    text = b"name: x\nphases:\n  - id: a\n    agent: echo\n    timeout: forever\n"
    src = parse_source(text, "w.yaml")
    report = check_workflow(src.data, src.source_map)
    [p] = report.problems
    assert str(p) == (
        "w.yaml:5:14: phases[0].timeout: 'forever' is not a duration;"
        " use 500ms, 30s, 5m, 1h or a number of seconds"
    )
    assert report.is_bad(("phases", 0, "timeout")) and not report.is_bad(("phases", 0, "id"))


def test_unknown_key_is_located_at_the_key_with_did_you_mean():
    src = parse_source(b"name: x\nphases:\n  - id: a\n    agnet: echo\n", "w.yaml")
    [p] = check_workflow(src.data, src.source_map).problems
    assert (p.location.line, p.location.col) == (4, 5)
    assert p.message == "unknown key 'agnet' in phase 'a'; did you mean 'agent'?"


def test_every_shipped_workflow_names_the_schema_for_editors():
    files = sorted((ROOT / "workflows").glob("*.yaml")) + sorted(
        (ROOT / "examples").rglob("*.yaml")
    )
    assert files
    for path in files:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = (path.parent / first.split("$schema=", 1)[1].strip()).resolve()
        assert target == SCHEMA_FILE.resolve(), path


def test_the_schema_check_stops_after_a_bounded_number_of_problems():
    from orchestrator.spec.schema import MAX_SCHEMA_PROBLEMS

    text = "name: x\nphases:\n" + "".join(f"  - {{id: p{i}, timeout: never}}\n" for i in range(500))
    src = parse_source(text.encode(), "w.yaml")
    problems = check_workflow(src.data, src.source_map).problems
    assert len(problems) == MAX_SCHEMA_PROBLEMS + 1
    assert "schema check stopped here" in problems[-1].message

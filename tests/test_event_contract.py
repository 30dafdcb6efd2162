"""The published event contract: docs/events.md and schemas/event.schema.json.

tests/conftest.py validates every event that any test's runs store; the tests
here prove that check can fail, that the schema and the docs name every kind
the engine knows, and that a run touching every kind of event (retries,
foreach, a skip, a failure, compensations, handlers, streamed text) writes
`--events jsonl` lines that all validate.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.events import EVENT_TYPES
from tests.conftest import EVENT_SCHEMA, check_events, event_validator

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "events.md"

EVERYTHING = """
name: every-event
phases:
  - id: greet
    agent: echo
    with: {text: hello}
    compensate: {agent: echo, with: {text: "undo {{ phases.greet.output }}"}}
  - id: talk
    agent: shell
    with: {command: [printf, "one\\ntwo\\n"], stream: true}
  - id: flaky
    agent: fail
    retries: {attempts: 1, backoff: fixed, delay: 1ms}
    with: {times: 1, output: ok}
  - id: items
    foreach: [a, b]
    agent: echo
    with: {text: "{{ item }}"}
  - id: never
    agent: echo
    when: "false"
    with: {text: no}
  - id: boom
    agent: fail
    depends_on: [greet, talk, flaky, items]
    with: {message: "card declined"}
on_failure:
  - id: notify
    agent: echo
    with: {text: "failed"}
finally:
  - id: cleanup
    agent: noop
"""


def test_the_schema_is_valid_and_names_every_kind_the_engine_emits():
    schema = json.loads(EVENT_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    kinds = schema["properties"]["event"]["enum"]
    assert set(EVENT_TYPES) <= set(kinds)
    assert {"phase_waiting", "phase_iteration"} <= set(kinds)  # contract section 5
    assert set(schema["$defs"]) == set(kinds)


def test_the_docs_describe_every_kind_and_their_example_lines_validate():
    text = DOCS.read_text(encoding="utf-8")
    kinds = json.loads(EVENT_SCHEMA.read_text(encoding="utf-8"))["properties"]["event"]["enum"]
    for kind in kinds:
        assert re.search(rf"^### .*`{kind}`", text, re.M), f"docs/events.md lacks {kind}"
    examples = [line for line in text.splitlines() if line.startswith('{"v":1')]
    assert len(examples) >= 4
    for line in examples:
        event_validator().validate(json.loads(line))


@pytest.mark.parametrize(
    ("event", "where"),
    [
        ({"event": "workflow_completed", "run_id": "r", "ts": 1.0, "data": {}}, "v"),
        ({"v": 2, "event": "phase_skipped", "run_id": "r", "ts": 1.0}, "v"),
        ({"v": 1, "event": "phase_done", "run_id": "r", "ts": 1.0, "data": {}}, "event"),
        (
            {"v": 1, "event": "phase_skipped", "run_id": "r", "ts": 1.0, "data": {"reason": "x"}},
            "phase",
        ),
        (
            {
                "v": 1,
                "event": "phase_completed",
                "run_id": "r",
                "ts": 1.0,
                "phase": "a",
                "attempt": 0,
                "data": {"status": "failed", "duration": 1, "attempts": 1},
            },
            "data",
        ),
    ],
)
def test_an_event_off_the_contract_is_rejected(event, where):
    errors = list(event_validator().iter_errors(event))
    assert errors, f"{event} should not validate"


def test_a_run_touching_every_kind_of_event_writes_only_valid_events(tmp_path, monkeypatch):
    path = tmp_path / "every.yaml"
    path.write_text(EVERYTHING, encoding="utf-8")
    state = tmp_path / "state"
    result = CliRunner().invoke(
        app, ["run", str(path), "--events", "jsonl", "--state-dir", str(state)]
    )
    assert result.exit_code == 1, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = {e["event"] for e in events}
    assert kinds >= {
        "workflow_started",
        "phase_started",
        "phase_stream",
        "phase_retry",
        "phase_completed",
        "phase_failed",
        "phase_skipped",
        "phase_compensated",
        "workflow_failed",
    }, kinds
    for event in events:
        event_validator().validate(event)
    # the stored copies are what the suite-wide check reads: the same events, all valid
    assert check_events(state) == []
    from tests.conftest import stored_events

    assert [e for _, e in stored_events(state)] == events


def test_the_suite_wide_check_reports_a_stored_event_off_the_contract(tmp_path):
    """The conftest check is not vacuous: a bad event in a store is reported, with where."""
    from orchestrator.events import Event
    from orchestrator.state.sqlite import open_store

    store = open_store(tmp_path / "bad")
    try:
        store.append([Event("phase_retry", "r1", 1.0, "a", 1, {"error": "x", "delay": 1})])
    finally:
        store.close()
    problems = check_events(tmp_path / "bad")
    assert len(problems) == 1
    assert "'next_attempt' is a required property" in problems[0]
    # this test's own store would fail the suite-wide check: remove it
    (tmp_path / "bad" / "state.db").unlink()


def test_the_readme_names_only_data_fields_the_contract_has():
    # "event `phase_iteration` with `iteration`, `output` and `done`": each one a field of
    # that kind in the schema (the README said `n`, the field is `iteration`)
    schema = json.loads(EVENT_SCHEMA.read_text(encoding="utf-8"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = re.findall(r"event `(\w+)` with ((?:`\w+`(?:,? and |, )?)+)", " ".join(readme.split()))
    assert named  # the check below reads something
    for kind, fields in named:
        for field in re.findall(r"`(\w+)`", fields):
            assert field in schema["$defs"][kind]["properties"], (kind, field)

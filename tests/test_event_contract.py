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


SPENDING = """\
name: spending
agents:
  model: {type: llm, with: {model: my-model, stream: false}}
  triage: {type: llm, with: {model: my-model, stream: false}}
  billing: {type: llm, with: {model: my-model, stream: false}}
phases:
  - id: ask
    agent: model
    retries: {attempts: 1, delay: 1ms}
    with: {prompt: question, response_format: json}
  - id: items
    depends_on: [ask]
    foreach: [a, b]
    max_parallel: 1
    agent: model
    with: {prompt: "{{ item }}"}
  - id: loop
    depends_on: [items]
    agent: model
    repeat: {max: 2}
    with: {prompt: again}
  - id: desk
    depends_on: [loop]
    handoff: {agents: [triage, billing], start: triage}
    with: {prompt: ticket, response_format: json}
"""


def test_every_field_of_a_paid_run_s_events_is_one_the_schema_and_docs_name(tmp_path):
    """The steps of phases that make calls (a retry, foreach progress, an iteration, a
    handoff turn) carry ``spent``: the schema lists it for their kind, as every other
    field of every event the run wrote, and docs/events.md names it."""
    from tests.servers import FakeOpenAI

    answers = ["not json", '{"a": 1}', "one", "two", "three", "four"]
    answers += ['{"handoff": "billing"}', '{"done": true}']
    path = tmp_path / "spending.yaml"
    path.write_text(SPENDING, encoding="utf-8")
    with FakeOpenAI(answers) as srv:
        result = CliRunner().invoke(
            app,
            ["run", str(path), "--events", "jsonl", "--state-dir", str(tmp_path / "state")],
            env={"OPENAI_BASE_URL": srv.base_url},
        )
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    schema = json.loads(EVENT_SCHEMA.read_text(encoding="utf-8"))["$defs"]
    for event in events:
        event_validator().validate(event)
        listed = schema[event["event"]]["properties"]
        assert set(event["data"]) <= set(listed), (event, sorted(listed))
    steps = [
        e
        for e in events
        if e["event"] in ("phase_retry", "phase_iteration")
        or e["event"] == "phase_stream"
        and ({"progress", "turn"} & set(e["data"]))
    ]
    assert {(e["event"], e["phase"]) for e in steps} == {
        ("phase_retry", "ask"),
        ("phase_stream", "items"),
        ("phase_iteration", "loop"),
        ("phase_stream", "desk"),
    }
    for e in steps:
        assert e["data"]["spent"]["tokens"]["total"] > 0, e
    text = DOCS.read_text(encoding="utf-8")
    for kind in ("phase_retry", "phase_iteration"):
        section = text.split(f"### `{kind}`", 1)[1].split("\n###", 1)[0]
        assert "`spent`" in section, kind
    stream = text.split("### `phase_stream`", 1)[1].split("\n### ", 1)[0]
    assert "`spent`" in stream and "`progress` and `turn`" in stream

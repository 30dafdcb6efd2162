"""Tried as a new user would (issue 9, items 16-18): each test writes the workflow a
newcomer writes, runs the real `orch` command (or the Python API next to it) and
asserts what they see."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import orchestrator
from orchestrator.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / ".orch"))


def orch(*args: str):
    return runner.invoke(app, list(args))


def write(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- 17. an optional input without a default is null, in the CLI and in the API -------------

OPTIONAL = """\
version: 1
name: optional
inputs:
  region: {type: string}
  size: {type: integer, default: 3}
phases:
  - id: a
    agent: echo
    with:
      text: {region: "{{ inputs.region }}", size: "{{ inputs.size }}"}
outputs:
  got: "{{ phases.a.output }}"
"""


def test_an_optional_input_without_default_is_null_in_the_cli_and_the_api(tmp_path):
    wf = write(tmp_path, OPTIONAL)
    result = orch("run", str(wf))
    assert result.exit_code == 0, result.output
    cli = json.loads(result.output[result.output.index("{") :])
    api = orchestrator.run_sync(
        orchestrator.compile_plan(orchestrator.load_workflow(str(wf)))
    ).outputs
    assert cli == api == {"got": {"region": None, "size": 3}}


def test_a_null_for_an_optional_input_counts_as_not_given(tmp_path):
    wf = write(tmp_path, OPTIONAL)
    plan = orchestrator.compile_plan(orchestrator.load_workflow(str(wf)))
    got = orchestrator.run_sync(plan, inputs={"region": None, "size": None}).outputs
    assert got == {"got": {"region": None, "size": 3}}
    (tmp_path / "in.json").write_text('{"region": null}', encoding="utf-8")
    result = orch("run", str(wf), "--inputs-file", "in.json")
    assert result.exit_code == 0, result.output


def test_a_required_input_given_as_null_is_still_missing(tmp_path):
    wf = write(tmp_path, OPTIONAL.replace("{type: string}", "{type: string, required: true}"))
    (tmp_path / "in.json").write_text('{"region": null}', encoding="utf-8")
    result = orch("run", str(wf), "--inputs-file", "in.json")
    assert result.exit_code == 2
    assert "missing required input 'region'" in result.output


# -- 16. a typo in `with:` is caught although a value in it is a template --------------------


@pytest.mark.parametrize(
    ("with_", "expected"),
    [
        (
            '      api_key: "{{ secrets.OPENAI_API_KEY }}"\n      model: m\n      promt: hi\n',
            [
                "unknown key 'promt' in the with of phase 'a' (agent type 'llm'); did you mean"
                " 'prompt'?",
                "missing the required key 'prompt'",
            ],
        ),
        (
            '      comand: "echo {{ inputs.who }}"\n',
            [
                "unknown key 'comand' in the with of phase 'a' (agent type 'shell'); did you mean"
                " 'command'?",
                "missing the required key 'command'",
            ],
        ),
    ],
)
def test_unknown_and_missing_keys_do_not_depend_on_template_values(tmp_path, with_, expected):
    agent = "llm" if "promt" in with_ else "shell"
    wf = write(
        tmp_path,
        "version: 1\nname: typo\ninputs:\n  who: {type: string, default: x}\nphases:\n"
        f"  - id: a\n    agent: {agent}\n    with:\n{with_}",
    )
    result = orch("validate", str(wf))
    assert result.exit_code == 2, result.output
    for message in expected:
        assert message in result.output
    run = orch("run", str(wf))
    assert run.exit_code == 2  # refused before anything runs
    assert "KeyError" not in run.output


def test_a_rendered_value_of_the_wrong_type_fails_the_phase_before_the_agent_runs(tmp_path):
    (tmp_path / "calls.py").write_text(
        "from pathlib import Path\n"
        "def count(n):\n"
        "    Path('called').write_text(str(n))\n"
        "    return n\n",
        encoding="utf-8",
    )
    wf = write(
        tmp_path,
        "version: 1\nname: typed\ninputs:\n  n: {type: string, default: abc}\nphases:\n"
        '  - id: wait\n    agent: sleep\n    with:\n      seconds: "{{ inputs.n }}"\n'
        "  - id: call\n    agent: python\n    depends_on: []\n    with:\n"
        '      function: calls:count\n      kwargs: "{{ inputs.n }}"\n',
    )
    assert orch("validate", str(wf)).exit_code == 0  # the values are known only at run time
    result = orch("run", str(wf), "--events", "jsonl")
    assert result.exit_code == 1
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    errors = {e["phase"]: e["data"]["error"] for e in events if e["event"] == "phase_failed"}
    assert errors["wait"] == (
        f"{wf}:9:16: the rendered input does not fit agent type 'sleep':"
        " with.seconds: 'abc' is not of type 'number'"
    )
    assert "with.kwargs" in errors["call"] and "KeyError" not in errors["call"]
    assert not (tmp_path / "called").exists()


# -- 21. a completed phase whose output is null is not run again on resume -------------------


def test_a_completed_null_output_is_not_run_again_on_resume(tmp_path):
    ledger = tmp_path / "ledger"
    (tmp_path / "gate.py").write_text(
        "from pathlib import Path\n"
        "def check():\n"
        "    if not Path('open').exists():\n"
        "        raise RuntimeError('shut')\n",
        encoding="utf-8",
    )
    wf = write(
        tmp_path,
        "version: 1\nname: nulls\nphases:\n"
        "  - {id: nothing, agent: noop}\n"
        f"  - {{id: empty, agent: echo, with: {{text: null, ledger: '{ledger}'}}}}\n"
        "  - {id: gate, agent: python, depends_on: [nothing, empty],"
        " with: {function: 'gate:check'}}\n"
        "outputs:\n  seen: '{{ [phases.nothing.output, phases.empty.output] }}'\n",
    )
    first = orch("run", str(wf), "--events", "jsonl")
    assert first.exit_code == 1
    run_id = json.loads(first.output.splitlines()[0])["run_id"]
    (tmp_path / "open").touch()
    resumed = orch("resume", run_id)
    assert resumed.exit_code == 0, resumed.output
    assert "2 of 3 phases completed, 1 to run" in resumed.output
    assert len(ledger.read_text().splitlines()) == 1  # echo ran once, before the resume
    logs = orch("logs", run_id, "--json")
    started = [json.loads(line) for line in logs.output.splitlines()]
    started = [e["phase"] for e in started if e["event"] == "phase_started"]
    assert sorted(started) == ["empty", "gate", "gate", "nothing"]
    assert json.loads(resumed.stdout) == {"seen": [None, None]}


# -- 18. what the run reports ---------------------------------------------------------------


def test_a_fully_cached_foreach_reports_cached_and_no_attempt(tmp_path):
    wf = write(
        tmp_path,
        "version: 1\nname: fc\nphases:\n"
        "  - id: each\n    agent: echo\n    cache: true\n    foreach: '{{ [1, 2, 3] }}'\n"
        "    with: {text: '{{ item * 10 }}'}\n",
    )
    seen = []
    for _ in range(2):
        result = orch("run", str(wf), "--events", "jsonl")
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        done = next(e for e in events if e["event"] == "phase_completed")
        seen.append((done["data"]["cached"], done["data"]["attempts"], done["data"]["output"]))
    assert seen == [(False, 1, [10, 20, 30]), (True, 0, [10, 20, 30])]


@pytest.mark.parametrize(
    ("command", "warned"),
    [
        ('echo "text {{ inputs.x }}"', True),
        ("echo 'text {{ inputs.x }}'", True),
        ("echo text {{ inputs.x }}", False),
        ('echo "it\'s" {{ inputs.x }} "done"', False),
    ],
)
def test_validate_warns_about_a_template_inside_quotes_in_a_command(tmp_path, command, warned):
    wf = write(
        tmp_path,
        "version: 1\nname: q\ninputs:\n  x: {type: string, default: hi}\nphases:\n"
        f"  - id: a\n    agent: shell\n    with:\n      command: {json.dumps(command)}\n",
    )
    result = orch("validate", str(wf))
    assert result.exit_code == 0, result.output
    assert ("is inside quotes in a command string" in result.output) is warned
    if warned:
        assert "wf.yaml:9:16: warning:" in result.output or "wf.yaml:9:16:" in result.output


def test_resume_after_a_failure_asks_again_with_new_idempotency_keys(tmp_path):
    # (a module name of its own: the python agent's imports live as long as the process)
    (tmp_path / "keygate.py").write_text(
        "from pathlib import Path\n"
        "def check(ctx):\n"
        "    with open('keys', 'a') as fh:\n"
        "        fh.write(ctx.idempotency_key + '\\n')\n"
        "    if not Path('open').exists():\n"
        "        raise RuntimeError('shut')\n"
        "    return 'open'\n",
        encoding="utf-8",
    )
    wf = write(
        tmp_path,
        "version: 1\nname: keys\nphases:\n"
        "  - id: gate\n    agent: python\n    retries: {attempts: 1, delay: 0}\n"
        "    with: {function: 'keygate:check'}\n",
    )
    first = orch("run", str(wf), "--events", "jsonl")
    assert first.exit_code == 1
    run_id = json.loads(first.output.splitlines()[0])["run_id"]
    (tmp_path / "open").touch()
    assert orch("resume", run_id).exit_code == 0
    keys = (tmp_path / "keys").read_text().splitlines()
    # a deduplicating server would have replayed the stored failure for a repeated key
    assert keys == [f"{run_id}/gate/1", f"{run_id}/gate/2", f"{run_id}/gate/1~1"]
    assert len(set(keys)) == 3


def test_plain_lines_of_parallel_streams_never_repeat_text_and_their_times_only_go_forward():
    import io
    import re

    from orchestrator.events import Event
    from orchestrator.render.progress import PlainLines

    t0 = 1_700_000_000.0
    pieces = [  # two shell phases printing a partial line, then finishing it, interleaved
        ("a", 0.00, "a-part-"),
        ("b", 0.01, "b-part-"),
        ("a", 0.20, "a1\n"),
        ("b", 0.25, "b1\n"),
        ("a", 0.50, "a-part-"),
        ("b", 0.52, "b-part-"),
        ("b", 0.70, "b2\n"),
        ("a", 0.72, "a2\n"),
    ]
    buf = io.StringIO()
    sink = PlainLines(buf)
    for pid, dt, text in pieces:
        sink(Event("phase_stream", "r", t0 + dt, pid, 1, {"text": text}))
    lines = buf.getvalue().splitlines()
    texts = [line.split(" | ", 1)[1] for line in lines]
    joined = {
        p: "".join(t for line, t in zip(lines, texts, strict=True) if f" phase {p} |" in line)
        for p in "ab"
    }
    assert joined == {"a": "a-part-a1a-part-a2", "b": "b-part-b1b-part-b2"}  # nothing twice
    stamps = [re.match(r"(\S+) ", line).group(1) for line in lines]
    assert stamps == sorted(stamps)


def test_the_live_frame_shows_a_phase_in_its_retry_backoff_as_waiting():
    import io
    import re

    from orchestrator.events import Event
    from orchestrator.render.console import make_console
    from orchestrator.render.progress import LiveProgress, RunView

    t0 = 1_700_000_000.0
    view = RunView()
    view(Event("workflow_started", "r", t0, None, None, {"workflow": "w", "phases": ["p", "q"]}))
    view(Event("phase_started", "r", t0, "p", 1, {"agent": "http"}))
    view(
        Event("phase_retry", "r", t0 + 1, "p", 1, {"error": "503", "delay": 4.0, "next_attempt": 2})
    )

    def frame(now: float) -> str:
        console = make_console(io.StringIO(), force_terminal=False, width=100, environ={})
        console.print(LiveProgress(view, console).render(now=now))
        return console.file.getvalue()

    during = frame(t0 + 2)
    assert re.search(r"waiting\s+p\s+attempt 2 in 3s", during), during
    assert "running" not in during.split("\n")[0]
    after = frame(t0 + 6)  # the backoff is over: the next attempt runs
    assert re.search(r"p\s+attempt 2\s", after) and "waiting" not in after
    assert "1 pending" in during  # q has not started: it is counted, not invisible


def test_the_live_frame_marks_a_tolerated_failure_at_once():
    import io

    from orchestrator.events import Event
    from orchestrator.render.console import make_console
    from orchestrator.render.progress import LiveProgress, RunView

    t0 = 1_700_000_000.0
    view = RunView()
    view(Event("workflow_started", "r", t0, None, None, {"workflow": "w", "phases": ["p", "q"]}))
    for pid, tolerated in (("p", True), ("q", False)):
        view(Event("phase_started", "r", t0, pid, 1, {"agent": "fail"}))
        data = {"status": "failed", "error": "boom", "duration": 1.0, "attempts": 1}
        view(Event("phase_failed", "r", t0 + 1, pid, 1, {**data, "continue_on_error": tolerated}))
    console = make_console(io.StringIO(), force_terminal=False, width=100, environ={})
    console.print(LiveProgress(view, console).render(now=t0 + 2))
    rows = console.file.getvalue().splitlines()
    assert [r.split()[1] for r in rows[:2]] == ["p", "q"]
    assert "(continue_on_error) boom" in rows[0]
    assert "continue_on_error" not in rows[1] and "boom" in rows[1]


# -- an empty --state-dir (an unset $DIR in a script) is refused, not the current folder -------


@pytest.mark.parametrize(
    "args",
    [
        ["run", "wf.yaml"],
        ["run", "wf.yaml", "--detach"],
        ["runs"],
        ["status", "abc"],
        ["stats"],
        ["cache", "clear"],
        ["approve", "abc", "a"],
    ],
    ids=" ".join,
)
def test_an_empty_state_dir_is_refused_and_nothing_is_recorded_here(tmp_path, args):
    write(tmp_path, "name: t\nphases:\n  - {id: a, agent: echo, with: {text: hi}}\n")
    res = orch(*args, "--state-dir", "")
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert "an empty path names no state folder" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wf.yaml"]  # no state.db here

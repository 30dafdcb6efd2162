"""`orch run` through the real command (typer's CliRunner), and the sinks that show a run."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.events import EVENT_TYPES, Event
from orchestrator.render.console import is_live, make_console
from orchestrator.render.progress import JsonLines, LiveProgress, PlainLines, RunView
from orchestrator.render.summary import print_summary

HEADER = "# yaml-language-server: $schema=../schemas/workflow.schema.json\n"
CLOCK = r"\d\d:\d\d:\d\d\.\d{3}"

OK_WORKFLOW = """
name: small
inputs:
  who: {type: string, default: world}
  times: {type: integer, default: 2}
phases:
  - id: fetch
    agent: echo
    with: {text: "hello {{ inputs.who }}"}
  - id: slow
    agent: sleep
    with: {seconds: 0.02, output: 7}
  - id: flaky
    agent: fail
    retries: {attempts: 2, backoff: fixed, delay: 10ms}
    with: {times: 1, output: recovered}
  - id: items
    foreach: [a, b, c]
    agent: echo
    with: {text: "{{ item }}{{ index }}"}
  - id: join
    agent: echo
    with:
      text: ["{{ phases.fetch.output }}", "{{ phases.slow.output }}", "{{ phases.flaky.output }}"]
outputs:
  greeting: "{{ phases.fetch.output }}"
  joined: "{{ phases.join.output }}"
  items: "{{ phases.items.output }}"
  times: "{{ inputs.times }}"
"""

FAILING_WORKFLOW = """
name: broken
phases:
  - id: first
    agent: echo
    with: {text: one}
  - id: boom
    agent: fail
    depends_on: [first]
    with: {message: "the disk is on fire"}
  - id: after
    agent: echo
    depends_on: [boom]
    with: {text: never}
outputs:
  first: "{{ phases.first.output }}"
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / ".orch"))


def write(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + text, encoding="utf-8")
    return path


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["run", *args], env=env)


def no_traceback(result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --- the real command ------------------------------------------------------


def test_a_successful_run_exits_0_and_prints_the_outputs_as_json_on_stdout(tmp_path):
    result = invoke(str(write(tmp_path, OK_WORKFLOW)), "--input", "who=orch")
    no_traceback(result)
    assert result.exit_code == 0, result.output
    outputs = json.loads(result.stdout)
    assert outputs == {
        "greeting": "hello orch",
        "joined": ["hello orch", 7, "recovered"],
        "items": ["a0", "b1", "c2"],
        "times": 2,
    }


def test_plain_lines_on_stderr_when_not_a_terminal(tmp_path):
    result = invoke(str(write(tmp_path, OK_WORKFLOW)))
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    stamped = [line for line in lines if re.match(CLOCK + " ", line)]
    text = "\n".join(stamped)
    assert re.search(CLOCK + r" workflow small started \(run \S+, 5 phases\)", text)
    assert re.search(CLOCK + r" phase fetch started \(attempt 1\)", text)
    assert re.search(CLOCK + r" phase fetch completed in \S+s", text)
    # the attempt that failed, then the next one: never "retry 2" (which read as a second retry)
    assert re.search(
        CLOCK + r" phase flaky attempt 1 failed: failing on purpose.*; attempt 2 in \S+$",
        text,
        re.M,
    )
    assert "retry" not in text
    assert re.search(CLOCK + r" phase flaky completed in \S+ \(attempt 2\)", text)
    assert re.search(CLOCK + r" phase items started \(attempt 1, 3 items\)", text)
    assert re.search(CLOCK + r" workflow completed in \S+", text)
    # the live display's control codes never reach a pipe
    assert "\x1b[" not in result.stderr
    # fetch starts before it completes, and join completes after everything it reads
    index = {line.split(" ", 1)[1]: i for i, line in enumerate(stamped)}
    started = next(i for k, i in index.items() if k.startswith("phase join started"))
    for dep in ("fetch", "slow", "flaky"):
        done = next(i for k, i in index.items() if k.startswith(f"phase {dep} completed"))
        assert done < started


def test_the_summary_table_shows_each_phase_the_success_rate_and_the_critical_path(tmp_path):
    result = invoke(str(write(tmp_path, OK_WORKFLOW)))
    assert result.exit_code == 0, result.output
    err = result.stderr
    for pid in ("fetch", "slow", "flaky", "items", "join"):
        assert re.search(rf"│ {pid}\s+│ completed\s+│", err), err
    # the attempts column says 2; the note does not repeat it
    assert re.search(r"│ flaky\s+│ completed\s+│\s+\S+s │\s+2 │\s+│", err), err
    assert "success rate: 100% (5 of 5 phases that ran completed)\n" in err
    assert re.search(r"critical path: \w+ -> join \(\S+s\)", err)
    assert re.search(r"run \S+: completed in \S+s", err)


def test_a_failed_phase_exits_1_names_the_error_and_skips_its_dependents(tmp_path):
    result = invoke(str(write(tmp_path, FAILING_WORKFLOW)))
    no_traceback(result)
    assert result.exit_code == 1, result.output
    assert re.search(CLOCK + r" phase boom failed: the disk is on fire", result.stderr)
    assert re.search(CLOCK + r" workflow failed", result.stderr)
    assert re.search(r"│ after\s+│ skipped", result.stderr)
    assert "success rate: 50% (1 of 2 phases that ran completed" in result.stderr
    assert result.stdout == ""  # no outputs printed for a failed run


def test_events_jsonl_puts_only_contract_shaped_json_lines_on_stdout(tmp_path):
    result = invoke(str(write(tmp_path, OK_WORKFLOW)), "--events", "jsonl")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines, result.output
    events = [json.loads(line) for line in lines]  # every line is JSON
    run_ids = {e["run_id"] for e in events}
    assert len(run_ids) == 1
    for e in events:
        assert set(e) <= {"event", "v", "run_id", "ts", "phase", "attempt", "data"}
        assert e["v"] == 1  # the event format's version (contract section 5)
        assert e["event"] in EVENT_TYPES
        assert isinstance(e["ts"], float)
        if e["event"].startswith("phase_"):
            assert isinstance(e["phase"], str)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "workflow_started"
    assert kinds[-1] == "workflow_completed"
    assert events[-1]["data"]["outputs"]["greeting"] == "hello world"
    assert "phase_retry" in kinds
    retry = next(e for e in events if e["event"] == "phase_retry")
    assert retry["phase"] == "flaky" and retry["data"]["next_attempt"] == 2
    # progress and the summary went to stderr
    assert re.search(CLOCK + " phase fetch started", result.stderr)
    assert "success rate" in result.stderr


def test_events_jsonl_on_a_failing_run_ends_with_workflow_failed(tmp_path):
    result = invoke(str(write(tmp_path, FAILING_WORKFLOW)), "--events", "jsonl")
    assert result.exit_code == 1
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["event"] == "workflow_failed"
    failed = [e for e in events if e["event"] == "phase_failed"]
    assert failed and failed[0]["phase"] == "boom"
    assert "the disk is on fire" in failed[0]["data"]["error"]


def test_output_file_gets_the_final_outputs(tmp_path):
    out = tmp_path / "out" / "result.json"
    out.parent.mkdir()
    result = invoke(str(write(tmp_path, OK_WORKFLOW)), "--output-file", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["greeting"] == "hello world"
    assert [p.name for p in out.parent.iterdir()] == ["result.json"]  # no temp file left


def test_output_file_is_written_with_events_jsonl_too(tmp_path):
    out = tmp_path / "result.json"
    result = invoke(
        str(write(tmp_path, OK_WORKFLOW)), "--events", "jsonl", "--output-file", str(out)
    )
    assert result.exit_code == 0
    assert json.loads(out.read_text())["items"] == ["a0", "b1", "c2"]


def test_no_color_is_honoured(tmp_path):
    result = invoke(str(write(tmp_path, FAILING_WORKFLOW)), env={"NO_COLOR": "1"})
    assert result.exit_code == 1
    assert "\x1b[" not in result.output


def test_inputs_file_and_input_flags_are_typed_and_merged(tmp_path):
    inputs = tmp_path / "inputs.yaml"
    inputs.write_text("who: file\ntimes: 5\n")
    result = invoke(
        str(write(tmp_path, OK_WORKFLOW)), "--inputs-file", str(inputs), "--input", "times=9"
    )
    assert result.exit_code == 0, result.output
    outputs = json.loads(result.stdout)
    assert outputs["greeting"] == "hello file"
    assert outputs["times"] == 9  # --input wins, parsed as an integer


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "times=many"], "input 'times' must be an integer"),
        (["--input", "tims=3"], "did you mean 'times'?"),
        (["--input", "novalue"], "--input 'novalue' is not NAME=VALUE"),
        (["--events", "xml"], "Invalid value"),
        (["--max-parallel", "0"], "Invalid value"),
    ],
)
def test_bad_arguments_exit_2_with_a_message_and_no_traceback(tmp_path, args, message):
    result = invoke(str(write(tmp_path, OK_WORKFLOW)), *args)
    no_traceback(result)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_required_input_that_is_missing_exits_2(tmp_path):
    wf = write(
        tmp_path,
        "name: need\ninputs:\n  x: {type: string, required: true}\n"
        "phases:\n  - {id: a, agent: echo, with: {text: '{{ inputs.x }}'}}\n",
    )
    result = invoke(str(wf))
    assert result.exit_code == 2
    assert "missing required input 'x'" in result.stderr
    assert "--input x=VALUE" in result.stderr


def test_a_broken_inputs_file_exits_2_with_its_location(tmp_path):
    bad = tmp_path / "inputs.yaml"
    bad.write_text("who: [unclosed\n")
    result = invoke(str(write(tmp_path, OK_WORKFLOW)), "--inputs-file", str(bad))
    no_traceback(result)
    assert result.exit_code == 2
    assert re.search(re.escape(str(bad)) + r":\d+:\d+: ", result.stderr), result.stderr


def test_an_inputs_file_that_is_not_a_mapping_exits_2(tmp_path):
    bad = tmp_path / "inputs.json"
    bad.write_text("[1, 2]")
    result = invoke(str(write(tmp_path, OK_WORKFLOW)), "--inputs-file", str(bad))
    assert result.exit_code == 2
    assert f"{bad}:1:1: the inputs file must map input names to values" in result.stderr


def test_a_json_inputs_file_with_escaped_emoji_is_read_as_json(tmp_path):
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"who": "caf\u00e9 \U0001f600"}))  # json.dumps escapes both
    assert "\\ud83d" in inputs.read_text()  # a surrogate pair YAML parsers refuse
    result = invoke(str(write(tmp_path, OK_WORKFLOW)), "--inputs-file", str(inputs))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["greeting"] == "hello caf\u00e9 \U0001f600"


def test_an_empty_inputs_file_is_named_as_such(tmp_path):
    empty = tmp_path / "inputs.yaml"
    empty.write_text("")
    result = invoke(str(write(tmp_path, OK_WORKFLOW)), "--inputs-file", str(empty))
    assert result.exit_code == 2
    assert f"{empty}:1:1: the inputs file is empty" in result.stderr
    assert "workflow needs" not in result.stderr


def test_an_invalid_workflow_exits_2_with_located_problems(tmp_path):
    wf = write(tmp_path, "name: bad\nphases:\n  - id: a\n    agent: echo\n    depends_on: [b]\n")
    result = invoke(str(wf))
    no_traceback(result)
    assert result.exit_code == 2
    assert re.search(re.escape(str(wf)) + r":\d+:\d+: .*'b'", result.stderr), result.stderr


def test_a_missing_workflow_file_exits_2(tmp_path):
    result = invoke(str(tmp_path / "nope.yaml"))
    no_traceback(result)
    assert result.exit_code == 2
    assert "nope.yaml:1:1:" in result.stderr


def test_dry_run_prints_the_plan_and_runs_no_agent(tmp_path):
    wf = write(
        tmp_path,
        """
name: would-fail
inputs:
  region: {type: string, default: eu}
phases:
  - id: prepare
    agent: echo
    with: {text: "prepare {{ inputs.region }}", run_of: "{{ run.workflow }}"}
  - id: explode
    agent: fail
    timeout: 2s
    retries: 3
    with: {message: "this must not run"}
  - id: report
    agent: echo
    when: "phases.explode.status == 'completed'"
    with: {text: "{{ phases.prepare.output }} and {{ phases.explode.output }}"}
""",
    )
    out = tmp_path / "out.json"
    result = invoke(str(wf), "--dry-run", "--input", "region=us", "--output-file", str(out))
    no_traceback(result)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "plan for workflow would-fail" in text
    assert "3 phases in 2 levels" in text
    assert re.search(r"level 1:\n  1\. prepare  agent echo\n.*\n  2\. explode  agent fail", text)
    assert "level 2:\n  3. report  agent echo  after prepare, explode" in text
    # static values are rendered with the inputs, runtime ones stay templates
    assert '"text": "prepare us"' in text
    assert '"run_of": "would-fail"' in text
    assert '"{{ phases.prepare.output }} and {{ phases.explode.output }}"' in text
    assert "timeout 2s; retries 3" in text
    assert "when: phases.explode.status == 'completed'" in text
    # nothing ran: no events, no failure, no output file
    assert "this must not run" in text  # only as the shown input
    assert "started" not in result.stderr and "failed" not in result.stderr
    assert not out.exists()
    assert not (tmp_path / ".orch").exists()  # no run recorded either


def test_dry_run_renders_foreach_and_fallback_values_known_from_the_inputs(tmp_path):
    wf = write(
        tmp_path,
        """
name: fan
inputs:
  regions: {type: array, default: [eu, us]}
phases:
  - id: per_region
    foreach: "{{ inputs.regions }}"
    agent: echo
    with: {text: "{{ item }}"}
    fallback: {agent: echo, with: {text: "none for {{ inputs.regions | length }} regions"}}
""",
    )
    result = invoke(str(wf), "--dry-run", "--input", 'regions=["ap", "sa", "af"]')
    assert result.exit_code == 0, result.output
    assert 'foreach: ["ap", "sa", "af"]' in result.stdout
    assert 'with: {"text": "{{ item }}"}' in result.stdout
    assert 'fallback: agent echo with {"text": "none for 3 regions"}' in result.stdout


def test_help_lists_every_option():
    result = CliRunner().invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    for option in (
        "--input",
        "--inputs-file",
        "--max-parallel",
        "--dry-run",
        "--events",
        "--output-file",
        "--no-cache",
    ):
        assert option in result.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
@pytest.mark.parametrize("no_color", [False, True])
def test_a_terminal_gets_the_live_display(tmp_path, no_color):
    import pty
    import select

    wf = write(tmp_path, OK_WORKFLOW)
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "40"}
    env.pop("NO_COLOR", None)
    if no_color:
        env["NO_COLOR"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(wf)],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
        cwd=tmp_path,
    )
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + 60  # a bound on a hang, not a timing
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            screen += chunk
        else:
            raise AssertionError("orch kept the terminal open: " + screen.decode(errors="replace"))
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, screen.decode(errors="replace")
    text = screen.decode(errors="replace")
    assert json.loads(out)["greeting"] == "hello world"  # outputs still on stdout
    assert "\x1b[2K" in text or "\x1b[1A" in text  # the live display redraws in place
    assert re.search(r"small .*5/5 phases", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text))
    assert not re.search(CLOCK + " phase fetch started", text)  # no plain lines on a terminal
    assert "success rate: 100%" in text
    coloured = re.search(r"\x1b\[[0-9;]*3[0-9](;[0-9]+)*m", text)
    assert bool(coloured) is not no_color


def test_a_reader_that_goes_away_does_not_break_the_run(tmp_path):
    wf = write(tmp_path, OK_WORKFLOW)
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(wf), "--events", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    first = proc.stdout.readline()  # like `| head -1`
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=30) == 0, err
    assert json.loads(first)["event"] == "workflow_started"
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert re.search(CLOCK + " workflow completed", err)


def test_secrets_never_reach_stdout_stderr_or_the_output_file(tmp_path):
    wf = write(
        tmp_path,
        """
name: sec
phases:
  - id: a
    agent: echo
    with: {text: "token is {{ secrets.MY_TOKEN }}"}
  - id: b
    agent: fail
    continue_on_error: true
    with: {message: "bad {{ secrets.MY_TOKEN }}"}
outputs:
  said: "{{ phases.a.output }}"
""",
    )
    out = tmp_path / "out.json"
    secret = "hunter2-s3cret-value"
    for extra in ([], ["--events", "jsonl"]):
        result = invoke(str(wf), "--output-file", str(out), *extra, env={"MY_TOKEN": secret})
        assert result.exit_code == 0, result.output
        assert secret not in result.stdout and secret not in result.stderr
        assert json.loads(out.read_text()) == {"said": "token is ***"}
        assert "bad ***" in result.stderr


# --- the sinks, fed with events as the engine emits them ------------------


def ev(kind, phase=None, attempt=None, ts=1_700_000_000.0, **data):
    return Event(kind, "run-1", ts, phase, attempt, data)


RUN = [
    ev("workflow_started", workflow="demo", phases=["a", "b", "c", "d"], inputs={}),
    ev("phase_started", "a", 1, ts=1_700_000_000.5, agent="echo"),
    ev("phase_stream", "a", 1, text="tok"),
    ev("phase_stream", "a", 1, text="ens\nsecond li"),
    ev("phase_retry", "a", 1, error="boom", delay=0.5, next_attempt=2),
    ev("phase_started", "a", 2, agent="echo"),
    ev(
        "phase_completed",
        "a",
        2,
        status="completed",
        output=1,
        duration=1.25,
        attempts=2,
        fallback_used=False,
        cached=False,
        metadata={"tokens": {"prompt": 3, "completion": 4, "total": 7}},
    ),
    ev("phase_started", "b", 1, agent="sleep", items=4),
    ev("phase_stream", "b", 1, progress={"done": 2, "total": 4}),
    ev(
        "phase_failed",
        "b",
        1,
        status="failed",
        error="it broke\nmore detail",
        duration=0.5,
        attempts=1,
        continue_on_error=False,
    ),
    ev("phase_skipped", "c", status="skipped", reason="upstream 'b' failed"),
    ev(
        "workflow_failed",
        status="failed",
        outputs={},
        duration=2.0,
        error="phase 'b' failed",
        counts={"completed": 1, "failed": 1, "skipped": 1},
        tokens={},
    ),
]


def test_plain_lines_are_timestamped_and_greppable():
    buf = io.StringIO()
    sink = PlainLines(buf)
    for e in RUN:
        sink(e)
    lines = [line.split(" ", 1)[1] for line in buf.getvalue().splitlines()]
    assert all(re.match(CLOCK + " ", line) for line in buf.getvalue().splitlines())
    assert lines == [
        "workflow demo started (run run-1, 4 phases)",
        "phase a started (attempt 1)",
        "phase a | tokens",
        "phase a | second li",
        "phase a attempt 1 failed: boom; attempt 2 in 500ms",
        "phase a started (attempt 2)",
        "phase a completed in 1.2s (attempt 2)",
        "phase b started (attempt 1, 4 items)",
        "phase b progress 2/4",
        "phase b failed: it broke",
        "  more detail",
        "phase c skipped: upstream 'b' failed",
        "workflow failed in 2s: phase 'b' failed",
    ]


def plain(events, *, stamps=False):
    buf = io.StringIO()
    sink = PlainLines(buf)
    for e in events:
        sink(e)
    return [line if stamps else line.split(" ", 1)[1] for line in buf.getvalue().splitlines()]


def clock(ts):
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


T0 = 1_700_000_000.0


def test_plain_lines_write_slow_pieces_without_newlines_each_on_its_own_line():
    ticks = [ev("phase_stream", "s", 1, ts=T0 + 0.5 * n, text=f"tick {n}") for n in range(3)]
    lines = plain([*ticks, ev("phase_completed", "s", 1, ts=T0 + 1.2, duration=1.2)], stamps=True)
    assert lines == [  # each stamped with the time its text came, not when it was written
        f"{clock(T0)} phase s | tick 0",
        f"{clock(T0 + 0.5)} phase s | tick 1",
        f"{clock(T0 + 1.0)} phase s | tick 2",
        f"{clock(T0 + 1.2)} phase s completed in 1.2s",
    ]


def test_plain_lines_join_fast_tokens_but_not_for_longer_than_a_second():
    # an LLM streams a token every 60ms: one line, not one per token, until a second has passed
    tokens = [ev("phase_stream", "llm", 1, ts=T0 + 0.06 * n, text=f"w{n} ") for n in range(30)]
    lines = plain([*tokens, ev("phase_completed", "llm", 1, ts=T0 + 2, duration=2)])
    assert lines == [
        "phase llm | " + "".join(f"w{n} " for n in range(17)),
        "phase llm | " + "".join(f"w{n} " for n in range(17, 30)),
        "phase llm completed in 2s",
    ]


def test_plain_lines_never_glue_two_handoff_turns_or_two_phases_together():
    events = [
        ev("phase_stream", "h", 1, turn={"n": 1, "agent": "writer", "next": "critic"}),
        ev("phase_stream", "h", 1, text="draft one"),
        ev("phase_stream", "h", 1, turn={"n": 2, "agent": "critic"}),
        ev("phase_stream", "h", 1, text="looks good"),
        ev("phase_stream", "p", 1, text="other\n"),
        ev("phase_stream", "h", 1, text="!"),
        ev("phase_completed", "h", 1, duration=0.1),
    ]
    assert plain(events) == [
        "phase h turn 1: writer -> critic",
        "phase h | draft one",
        "phase h turn 2: critic",
        "phase h | looks good",
        "phase p | other",
        "phase h | !",
        "phase h completed in 100ms",
    ]


def test_jsonl_sink_writes_to_json_of_each_event():
    buf = io.StringIO()
    sink = JsonLines(buf)
    for e in RUN:
        sink(e)
    assert [json.loads(x) for x in buf.getvalue().splitlines()] == [e.as_dict() for e in RUN]


def test_the_run_view_folds_events_into_phase_states():
    view = RunView()
    for e in RUN:
        view(e)
    assert [view.phases[p].state for p in "abcd"] == ["completed", "failed", "skipped", "pending"]
    assert view.phases["a"].attempts == 2 and view.phases["a"].duration == 1.25
    assert view.phases["b"].done == 2 and view.phases["b"].total == 4
    assert view.status == "failed" and view.total == 4 and view.finished_count == 3
    assert view.token_totals() == {"prompt": 3, "completion": 4, "total": 7}
    assert not view.running


def test_the_live_frame_shows_running_phases_progress_and_the_streamed_tail():
    view = RunView()
    for e in RUN[:4] + RUN[7:9]:
        view(e)
    console = make_console(io.StringIO(), force_terminal=True, width=120, environ={})
    assert is_live(console)
    live = LiveProgress(view, console)
    console.print(live.render(now=1_700_000_003.0))
    text = console.file.getvalue()
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert re.search(r"running\s+a\s+attempt 1\s+2\.5s\s+second li", plain), plain
    assert re.search(r"running\s+b\s+attempt 1\s+\S+\s+━+.*2/4", plain), plain
    assert re.search(r"demo\s+━*\s+0/4 phases", plain), plain
    assert "\x1b[" in text  # colour on a terminal without NO_COLOR


def test_the_live_frame_keeps_the_newest_streamed_text_visible():
    view = RunView()
    view(ev("phase_started", "llm", 1, agent="llm"))
    view(ev("phase_stream", "llm", 1, text="word " * 200 + "NEWEST"))
    console = make_console(io.StringIO(), force_terminal=False, width=100, environ={})
    console.print(LiveProgress(view, console).render(now=1_700_000_001.0))
    out = console.file.getvalue()
    assert re.search(r"running\s+llm\s+attempt 1\s+1s\s+…\w* (word )+NEWEST\n", out)


def test_the_live_frame_has_no_colour_under_no_color():
    view = RunView()
    for e in RUN:
        view(e)
    console = make_console(io.StringIO(), force_terminal=True, width=100, environ={"NO_COLOR": "1"})
    console.print(LiveProgress(view, console).render(now=1_700_000_003.0))
    assert not re.search(r"\x1b\[[0-9;]*3\dm", console.file.getvalue())  # no foreground colour


def test_the_live_frame_of_a_huge_run_stays_small():
    view = RunView(keep_finished=5)
    view(ev("workflow_started", workflow="big", phases=[f"p{i}" for i in range(10_000)]))
    for i in range(10_000):
        view(ev("phase_started", f"p{i}", 1, agent="noop"))
        if i < 9_950:
            view(ev("phase_completed", f"p{i}", 1, status="completed", duration=0.0, attempts=1))
    console = make_console(io.StringIO(), force_terminal=False, width=100, environ={})
    console.print(LiveProgress(view, console, max_running_rows=20).render(now=1e9))
    lines = console.file.getvalue().splitlines()
    assert len(lines) <= 5 + 20 + 2
    assert "... and 30 more running" in console.file.getvalue()
    assert "9950/10000 phases" in console.file.getvalue()


def test_the_summary_lists_failures_first_when_the_run_is_huge():
    view = RunView()
    for i in range(100):
        view(ev("phase_started", f"p{i}", 1))
        status = "failed" if i == 77 else "completed"
        view(
            ev(
                f"phase_{status}",
                f"p{i}",
                1,
                status=status,
                duration=i / 100,
                attempts=1,
                error="bad" if i == 77 else None,
            )
        )
    console = make_console(io.StringIO(), width=120, environ={})
    print_summary(console, view)
    out = console.file.getvalue()
    assert re.search(r"│ p77\s+│ failed\s+│.*│ bad", out)
    assert "(70 more phases not shown)" in out
    assert "success rate: 99% (99 of 100 phases that ran completed; 99 completed, 1 failed)" in out


def test_the_summary_shows_token_totals_and_compensations_when_there_are_any():
    view = RunView()
    for e in RUN:
        view(e)
    view(ev("phase_compensated", "a", ok=False, error="refund refused"))
    console = make_console(io.StringIO(), width=80, environ={})
    print_summary(console, view)
    out = console.file.getvalue()
    assert "tokens: prompt 3, completion 4, total 7\n" in out
    assert "compensations: 1 failed (a)\n" in out
    assert "error: phase 'b' failed\n" in out
    quiet = RunView()
    quiet(ev("workflow_completed", status="completed", duration=1.0, tokens={"total": 0}))
    console = make_console(io.StringIO(), width=80, environ={})
    print_summary(console, quiet)
    assert "tokens" not in console.file.getvalue()


PARALLEL_WORKFLOW = """
name: three
phases:
  - {id: a, agent: sleep, with: {seconds: 0.2}}
  - {id: b, agent: sleep, with: {seconds: 0.2}}
  - {id: c, agent: sleep, with: {seconds: 0.2}}
"""


def max_running(events) -> int:
    running, most = 0, 0
    for e in events:
        if e["event"] == "phase_started":
            running += 1
        elif e["event"] in ("phase_completed", "phase_failed"):
            running -= 1
        most = max(most, running)
    return most


@pytest.mark.parametrize(("args", "most"), [([], 3), (["--max-parallel", "1"], 1)])
def test_max_parallel_bounds_the_phases_running_at_once(tmp_path, args, most):
    result = invoke(str(write(tmp_path, PARALLEL_WORKFLOW)), "--events", "jsonl", *args)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert max_running(events) == most

"""What a new user saw on the command line, fixed: each test runs the real `orch` command
(typer's CliRunner: not a terminal) or the real renderers, and asserts what is printed."""

from __future__ import annotations

import io
import json
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.eventlines import event_line
from orchestrator.events import Event
from orchestrator.render.console import make_console
from orchestrator.render.progress import LiveProgress, PlainLines, RunView
from orchestrator.render.summary import print_summary
from orchestrator.render.tables import status_view
from orchestrator.state.base import PhaseRecord, PhaseState, RunRecord

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / ".orch"))
    monkeypatch.delenv("COLUMNS", raising=False)


def orch(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env)


def write(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def ev(kind, phase=None, attempt=None, ts=1_700_000_000.0, **data):
    return Event(kind, "run-1", ts, phase, attempt, data)


# -- 1. --output-file is checked before anything runs ---------------------------------------


def test_an_output_file_in_a_missing_folder_exits_2_before_anything_runs(tmp_path):
    ledger = tmp_path / "ledger"
    wf = write(
        tmp_path,
        f"name: w\nphases:\n  - {{id: a, agent: echo, with: {{text: A, ledger: '{ledger}'}}}}\n",
    )
    res = orch("run", str(wf), "--output-file", str(tmp_path / "nodir" / "x.json"))
    assert res.exit_code == 2, res.output
    assert f"error: --output-file '{tmp_path / 'nodir' / 'x.json'}': the folder" in res.stderr
    assert "does not exist" in res.stderr
    assert not ledger.exists()  # the phase never ran
    assert not (tmp_path / ".orch").exists()  # nor was a run recorded
    res = orch("run", str(wf), "--output-file", str(tmp_path))
    assert res.exit_code == 2 and "is a directory, not a file" in res.stderr
    assert not ledger.exists()


# -- 2. handlers are not the workflow's phases ------------------------------------------------

HANDLED = """
name: handled
phases:
  - {id: only, agent: fail, with: {message: broken}}
on_failure:
  - {id: notify, agent: echo, with: {text: told}}
finally:
  - {id: cleanup, agent: echo, with: {text: clean}}
"""


def test_the_success_rate_and_progress_count_only_the_workflows_phases(tmp_path):
    res = orch("run", str(write(tmp_path, HANDLED)))
    assert res.exit_code == 1, res.output
    assert "success rate: 0% (0 of 1 phase that ran completed; 1 failed)" in res.stderr
    assert "handlers: notify completed, cleanup completed" in res.stderr
    run_id = json.loads(orch("runs", "--json").stdout)[0]["id"]
    info = json.loads(orch("status", run_id, "--json").stdout)
    assert info["progress"] == {"done": 1, "completed": 0, "total": 1}
    assert {p["id"]: p["handler"] for p in info["phases"]} == {
        "only": False,
        "notify": True,
        "cleanup": True,
    }
    assert "progress: 0/1 phases completed (1 failed)" in orch("status", run_id).stdout


def test_the_live_display_counts_only_the_workflows_phases():
    view = RunView()
    view(ev("workflow_started", workflow="w", phases=["a"]))
    view(ev("phase_started", "a", 1))
    view(ev("phase_failed", "a", 1, status="failed", error="x", duration=0.1, attempts=1))
    for handler in ("notify", "cleanup"):
        view(ev("phase_started", handler, 1))
        view(ev("phase_completed", handler, 1, status="completed", duration=0.1, attempts=1))
    console = make_console(io.StringIO(), force_terminal=False, width=120, environ={})
    console.print(LiveProgress(view, console).render(now=1_700_000_001.0))
    out = console.file.getvalue()
    assert "1/1 phases" in out and "1 failed" in out and "completed" not in out.splitlines()[-1]


# -- 3. exit codes (the refused operations are in test_runs.py) -------------------------------


def test_resume_and_cancel_of_an_unknown_or_finished_run_exit_2(tmp_path):
    wf = write(tmp_path, "name: w\nphases:\n  - {id: a, agent: echo, with: {text: A}}\n")
    assert orch("run", str(wf)).exit_code == 0
    run_id = json.loads(orch("runs", "--json").stdout)[0]["id"]
    res = orch("cancel", run_id)
    assert res.exit_code == 2
    assert f"error: run {run_id} has already ended (completed); nothing to cancel\n" in res.stderr
    assert orch("cancel", "nope").exit_code == 2


def test_one_phase_is_counted_in_the_singular(tmp_path):
    wf = write(tmp_path, "name: py2\nphases:\n  - {id: a, agent: echo, with: {text: A}}\n")
    res = orch("run", str(wf))
    assert res.exit_code == 0 and "(1 of 1 phase that ran completed)" in res.stderr
    assert "workflow py2 started (run " in res.stderr and ", 1 phase)" in res.stderr
    run_id = json.loads(orch("runs", "--json").stdout)[0]["id"]
    logs = orch("logs", run_id)
    assert "workflow_started" in logs.stdout and "py2 (1 phase)" in logs.stdout, logs.stdout
    assert "1 phases" not in logs.stdout + res.stderr
    assert ", 1 attempt: " in logs.stdout and "(s)" not in logs.stdout
    assert "1 phase in 1 level" in orch("run", str(wf), "--dry-run").stdout
    items = ev_line("phase_started", items=1)
    assert items == "phase p started (attempt 1, 1 item)"


def ev_line(kind: str, **data: object) -> str:
    buf = io.StringIO()
    PlainLines(buf)(Event(kind, "r", 1_700_000_000.0, "p", 1, dict(data)))
    return buf.getvalue().split(" ", 1)[1].rstrip("\n")


# -- 4. usage lines, whole numbers, --version -------------------------------------------------


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        ("run", "Usage: orch run [OPTIONS] FILE|NAME"),
        ("graph", "Usage: orch graph [OPTIONS] FILE|NAME"),
        ("status", "Usage: orch status [OPTIONS] RUN"),
        ("agents", "Usage: orch agents [OPTIONS] [NAME]"),
    ],
)
def test_usage_lines_name_arguments_without_braces(command, usage):
    res = orch(command, "--help")
    assert res.exit_code == 0
    assert res.stdout.splitlines()[0] == usage
    assert "{" not in res.stdout.splitlines()[0]


def test_validate_usage_shows_several_files():
    first = orch("validate", "--help").stdout.splitlines()[0]
    assert re.fullmatch(r"Usage: orch validate \[OPTIONS\] FILE\.\.\.", first), first


@pytest.mark.parametrize(
    ("value", "message"), [("abc", "'abc' is not a whole number"), ("0", "'0' is less than 1")]
)
def test_max_parallel_says_what_a_bad_value_is(tmp_path, value, message):
    wf = write(tmp_path, "name: w\nphases:\n  - {id: a, agent: echo, with: {text: A}}\n")
    res = orch("run", str(wf), "--max-parallel", value)
    assert res.exit_code == 2
    assert f"Invalid value for '--max-parallel': {message}" in res.stderr
    assert "int range" not in res.stderr


def test_version_prints_the_installed_version():
    res = orch("--version")
    assert res.exit_code == 0
    assert res.stdout == f"orch {version('orch-workflows')}\n"


# -- 5. nouns and shapes of errors ------------------------------------------------------------


def test_a_state_dir_that_is_a_file_is_named_as_such(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    wf = write(tmp_path, "name: w\nphases:\n  - {id: a, agent: echo, with: {text: A}}\n")
    res = orch("run", str(wf), "--state-dir", str(afile))
    assert res.exit_code == 2
    bad = f"error: cannot use the state folder '{afile}': '{afile}' is a file, not a folder"
    assert bad in res.stderr
    assert "Errno" not in res.stderr
    res = orch("runs", "--state-dir", str(afile))
    assert "Errno" not in res.output


def test_located_errors_print_as_validate_prints_problems(tmp_path):
    inputs = write(tmp_path, "[1, 2]\n", "inputs.yaml")
    wf = write(tmp_path, "name: w\nphases:\n  - {id: a, agent: echo, with: {text: A}}\n")
    res = orch("run", str(wf), "--inputs-file", str(inputs))
    assert res.exit_code == 2
    first = res.stderr.splitlines()[0]
    assert first.startswith(f"{inputs}:1:1: the inputs file must map")  # no `error: ` before it
    res = orch("run", "nofile.yaml")
    assert res.exit_code == 2 and res.stderr.startswith("nofile.yaml:1:1: ")


# -- 6. wording -------------------------------------------------------------------------------


def test_compensations_say_which_succeeded_and_which_failed():
    view = RunView()
    view(ev("phase_compensated", "pay", ok=True))
    view(ev("phase_compensated", "ship", ok=False, error="no"))
    view(ev("workflow_failed", status="failed", duration=1.0, error="phase 'x' failed"))
    console = make_console(io.StringIO(), width=100, environ={})
    print_summary(console, view)
    assert "compensations: 1 ok (pay), 1 failed (ship)\n" in console.file.getvalue()


def test_logs_do_not_repeat_a_cancelled_status():
    line = event_line(ev("phase_failed", "sh", 1, status="cancelled", error="cancelled"))
    assert line.endswith("phase_failed        sh               cancelled")
    line = event_line(ev("phase_failed", "sh", 1, status="failed", error="exit 3"))
    assert line.endswith("failed: exit 3")


def test_a_resumed_run_says_resumed_and_how_many_phases_were_done():
    buf = io.StringIO()
    PlainLines(buf, completed_before=2)(
        ev("workflow_started", workflow="crash", phases=["a", "b", "c"], resumed_from="run-1")
    )
    text = buf.getvalue().split(" ", 1)[1]
    assert text == "workflow crash resumed (run run-1, 3 phases, 2 already completed)\n"


def test_status_does_not_repeat_the_state_as_a_note():
    run = RunRecord("r1", "w", "w.yaml", "cancelled", 1.0, 2.0, phase_ids=("sh",))
    phase = PhaseRecord("r1", "sh", PhaseState.CANCELLED, attempts=1, error="cancelled")
    console = make_console(io.StringIO(), environ={})
    console.print(status_view(run, [phase], now=3.0))
    row = next(line for line in console.file.getvalue().splitlines() if line.startswith("sh "))
    assert [c for c in row.split() if c != "│"] == ["sh", "cancelled", "1", "-"]


# -- 7. attempts ------------------------------------------------------------------------------


def test_the_live_row_and_the_summary_label_attempts_once():
    view = RunView()
    view(ev("workflow_started", workflow="w", phases=["risk"]))
    view(ev("phase_started", "risk", 1, agent="fail"))
    view(ev("phase_retry", "risk", 1, error="busy", delay=0.1, next_attempt=2))
    assert view.phases["risk"].note == "attempt 1 failed; attempt 2 in 100ms"
    view(ev("phase_completed", "risk", 2, status="completed", duration=0.505, attempts=2))
    console = make_console(io.StringIO(), force_terminal=False, width=120, environ={})
    console.print(LiveProgress(view, console).render(now=1_700_000_001.0))
    row = console.file.getvalue().splitlines()[0]
    assert re.fullmatch(r"completed\s+risk\s+attempt 2\s+505ms", row), row
    console = make_console(io.StringIO(), width=120, environ={})
    print_summary(console, view)
    summary_row = next(x for x in console.file.getvalue().splitlines() if "│ risk" in x)
    assert "attempt" not in summary_row and re.search(r"│\s+2 │\s+│$", summary_row)


# -- 8. tables in pipes -----------------------------------------------------------------------


def test_tables_in_a_pipe_are_not_wrapped_and_have_no_trailing_spaces(tmp_path):
    long_error = "the upstream service answered with an error that is long " * 3
    wf = write(
        tmp_path,
        "name: w\nphases:\n"
        "  - {id: a_phase_with_a_rather_long_name_for_grep, agent: echo, with: {text: A}}\n"
        f"  - {{id: b, agent: fail, with: {{message: '{long_error.strip()}'}}}}\n",
    )
    assert orch("run", str(wf)).exit_code == 1
    run_id = json.loads(orch("runs", "--json").stdout)[0]["id"]
    out = orch("status", run_id).stdout
    lines = out.splitlines()
    assert any(len(line) > 80 for line in lines)  # not wrapped at 80 columns
    assert all(line == line.rstrip() for line in lines), [x for x in lines if x != x.rstrip()]
    row = next(line for line in lines if line.startswith("b "))
    assert "the upstream service answered" in row  # the note is on the phase's line
    narrow = orch("status", run_id, env={"COLUMNS": "60"}).stdout
    assert max(len(line) for line in narrow.splitlines()) <= 60  # COLUMNS is honoured


# -- 9. one shape for JSON and times ----------------------------------------------------------


def test_runs_and_status_json_both_call_the_run_id_id(tmp_path):
    wf = write(tmp_path, "name: w\nphases:\n  - {id: a, agent: echo, with: {text: A}}\n")
    assert orch("run", str(wf)).exit_code == 0
    listed = json.loads(orch("runs", "--json").stdout)[0]
    info = json.loads(orch("status", listed["id"], "--json").stdout)
    assert info["id"] == listed["id"] and "run_id" not in info


def test_a_pending_phase_shows_a_dash_for_its_time():
    run = RunRecord("r1", "w", "w.yaml", "running", 1.0, phase_ids=("a", "b"))
    phases = [
        PhaseRecord("r1", "a", PhaseState.RUNNING, attempts=1, started=1.0),
        PhaseRecord("r1", "b", PhaseState.PENDING),
    ]
    console = make_console(io.StringIO(), environ={})
    console.print(status_view(run, phases, now=3.0))
    row = next(line for line in console.file.getvalue().splitlines() if line.startswith("b "))
    assert [c for c in row.split() if c != "│"] == ["b", "pending", "0", "-"]


def test_dry_run_critical_path_has_a_unit_as_graph_has(tmp_path):
    wf = write(
        tmp_path,
        "name: w\nphases:\n  - {id: slow, agent: echo, estimated_duration: 3, with: {text: A}}\n",
    )
    res = orch("run", str(wf), "--dry-run")
    assert res.exit_code == 0, res.output
    assert "critical path (estimated): slow (3s)" in res.stdout
    assert "critical path (3s): slow" in orch("graph", str(wf)).stdout


def test_dry_run_with_events_jsonl_keeps_stdout_for_json(tmp_path):
    wf = write(tmp_path, "name: w\nphases:\n  - {id: a, agent: echo, with: {text: A}}\n")
    res = orch("run", str(wf), "--dry-run", "--events", "jsonl")
    assert res.exit_code == 0, res.output
    assert res.stdout == ""
    assert "plan for workflow w" in res.stderr


# -- 11. orch agents shows users what is for them ---------------------------------------------


def test_agents_hide_the_internal_ledger_key():
    listing = orch("agents").stdout
    assert "ledger" not in listing
    detail = orch("agents", "sleep").stdout
    assert "seconds" in detail and "ledger" not in detail
    # the key still works (crash tests need it) and tools still see it
    assert (
        "ledger"
        in json.loads(orch("agents", "sleep", "--json").stdout)["config_schema"]["properties"]
    )


def test_the_last_net_prints_located_errors_as_problems_too(capsys):
    from orchestrator.cli.fast import report_error as _report
    from orchestrator.errors import Location, StateError, UsageError

    assert _report(UsageError("bad value", location=Location("in.yaml", 3, 5))) == 2
    assert capsys.readouterr().err == "in.yaml:3:5: bad value\n"
    _report(StateError("disk full", hint="free some space"))
    assert capsys.readouterr().err == "error: disk full\n  hint: free some space\n"


@pytest.mark.parametrize(
    ("value", "message"),
    [("abc", "'abc' is not a number of seconds"), ("-1", "'-1' is not a number of seconds")],
)
def test_cancel_wait_says_what_a_bad_value_is(value, message):
    res = orch("cancel", "some-run", "--wait", value)
    assert res.exit_code == 2
    assert f"Invalid value for '--wait': {message}" in res.stderr
    assert "float range" not in res.stderr and "x>=0" not in res.stderr


def test_logs_label_a_retry_as_run_progress_does():
    line = event_line(ev("phase_retry", "risk", 1, error="busy", delay=0.1, next_attempt=2))
    assert line.endswith("attempt 1 failed: busy; attempt 2 in 100ms")

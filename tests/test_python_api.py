"""The README's Python API example runs as written, and its runs are the CLI's runs."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import orchestrator
from orchestrator.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
ORCH = [sys.executable, "-m", "orchestrator"]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- python-api-example -->\n```python\n(.*?)```", text, re.S)
    assert found, "the README lost its Python API example"
    return found.group(1)


def _orch(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `orch ARGS`, its output captured."""
    return subprocess.run(
        [*ORCH, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _orch_json(state: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """The JSON that the real `orch ARGS --json --state-dir STATE` prints."""
    out = _orch(*args, "--json", "--state-dir", str(state), env=env)
    assert out.returncode == 0, out.stderr
    if args[0] == "logs":  # one event a line
        return [json.loads(line) for line in out.stdout.splitlines()]
    return json.loads(out.stdout)


def test_the_readme_python_api_example_runs_and_its_runs_show_in_orch_runs(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    (tmp_path / "example.py").write_text(_readme_example())
    out = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    started = next(line for line in lines if line.startswith("started "))
    run_id = started.split()[1]
    # followed live: every event, in order, ending with the run's end
    end = lines.index("completed {'greeting': 'HELLO ORCH'}")
    kinds = [line.split()[0] for line in lines[1:end]]
    assert kinds[0] == "workflow_started" and kinds[-1] == "workflow_completed"
    assert kinds.count("phase_completed") == 2
    assert "nap cancelled" in lines
    assert lines.count("deploy failed") == 1 and lines.count("deploy completed") == 1
    # the same runs, through the real `orch` command
    state = tmp_path / ".orch"
    recorded = {r["id"]: (r["workflow"], r["status"]) for r in _orch_json(state, "runs", env=env)}
    assert recorded[run_id] == ("hello", "completed")
    assert sorted(recorded.values()) == [
        ("deploy", "completed"),
        ("gate", "completed"),
        ("hello", "completed"),
        ("nap", "cancelled"),
    ]
    listed = [line.split() for line in lines if re.match(r"^[0-9a-f]{12} ", line)]
    assert {row[0] for row in listed} == set(recorded)
    # the resumed deploy ran only what had not completed: build once, ship twice
    deploy = next(rid for rid, (wf, _) in recorded.items() if wf == "deploy")
    logs = _orch_json(state, "logs", deploy, env=env)
    assert [e["phase"] for e in logs if e["event"] == "phase_started"] == ["build", "ship", "ship"]
    # the approval from Python is recorded as `orch approve` records it: who and when
    gate = next(rid for rid, (wf, _) in recorded.items() if wf == "gate")
    logs = _orch_json(state, "logs", gate, env=env)
    (decided,) = [e["data"]["approval"] for e in logs if e["event"] == "phase_started"]
    assert decided["decision"] == "approved" and decided["comment"] == "ok"
    assert f"ship approved by {decided['who']}" in lines and decided["who"]
    assert isinstance(decided["at"], float)
    assert "gate completed" in lines
    # stats(): the numbers `orch stats` prints
    expected = [
        f"stats {w['workflow']} {w['runs']} {w['statuses']}"
        for w in _orch_json(state, "stats", env=env)["workflows"]
    ]
    assert [line for line in lines if line.startswith("stats ")] == expected
    assert len(expected) == 4


def test_a_workflow_from_a_mapping_gets_the_checks_of_a_file():
    with pytest.raises(orchestrator.WorkflowInvalid) as caught:
        orchestrator.load_workflow({"name": "x", "phases": [{"id": "a", "agent": "ecko"}]})
    (problem,) = caught.value.problems
    # located by its path in the mapping: the user never saw the lines of orch's own dump
    assert str(problem) == "<memory>: phases[0].agent: unknown agent 'ecko'; did you mean 'echo'?"


def test_a_mapping_problem_inside_a_template_or_a_duration_names_its_path_once():
    with pytest.raises(orchestrator.WorkflowInvalid) as caught:
        orchestrator.load_workflow(
            {
                "name": "x",
                "phases": [
                    {"id": "a", "agent": "echo", "timeout": "soon"},
                    {"id": "b", "agent": "echo", "with": {"text": "{{ phases.nope.output }}"}},
                ],
            }
        )
    shown = [str(p).splitlines()[0] for p in caught.value.problems]
    assert shown == [
        "<memory>: phases[0].timeout: 'soon' is not a duration;"
        " use 500ms, 30s, 5m, 1h or a number of seconds",
        "<memory>: phases[1].with.text: unknown phase 'nope' in phases[1].with.text",
    ]


def test_start_takes_yaml_text_and_the_run_shows_in_orch_runs(tmp_path):
    import asyncio

    async def run(text):
        handle = await orchestrator.start(text, state_dir=tmp_path / "s")
        return await handle.wait()

    text = (
        "name: from-text\nphases:\n  - {id: a, agent: echo, with: {text: hi}}\n"
        "outputs: {said: '{{ phases.a.output }}'}\n"
    )
    result = asyncio.run(run(text))
    assert (result.status, result.outputs) == ("completed", {"said": "hi"})
    listed = _orch("runs", "--json", "--state-dir", str(tmp_path / "s"))
    assert [r["workflow"] for r in json.loads(listed.stdout)] == ["from-text"]
    with pytest.raises(orchestrator.WorkflowInvalid) as caught:  # text keeps its own lines
        asyncio.run(run("name: y\nphases:\n  - {id: a, agent: ecoh}\n"))
    assert str(caught.value.problems[0]).startswith("<memory>:3:")


def test_run_sync_inside_a_running_loop_says_what_to_do_instead():
    import asyncio

    plan = orchestrator.compile_plan(
        orchestrator.load_workflow({"name": "x", "phases": [{"id": "a", "agent": "noop"}]})
    )

    async def inside():
        orchestrator.run_sync(plan)

    with pytest.raises(UsageError) as caught:
        asyncio.run(inside())
    assert "inside a running event loop" in str(caught.value)
    assert "await" in (caught.value.hint or "")


def test_a_traceback_shows_the_hint_of_an_api_error(tmp_path):
    # what a notebook or an uncaught error shows is str(exc): the what-to-do is in it
    script = tmp_path / "inside.py"
    script.write_text(
        "import asyncio, orchestrator\n"
        "plan = orchestrator.compile_plan(orchestrator.load_workflow(\n"
        "    {'name': 'x', 'phases': [{'id': 'a', 'agent': 'noop'}]}))\n"
        "async def main():\n"
        "    orchestrator.run_sync(plan)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 1
    shown = out.stderr.splitlines()[-2:]
    assert shown == [
        "orchestrator.errors.UsageError: run_sync() cannot run inside a running event loop"
        " (Jupyter, async code)",
        "  hint: use `result = await orchestrator.execute(plan, ...)`, or"
        " `handle = await orchestrator.start(...)` then `await handle.wait()`",
    ]


def test_a_schedule_input_problem_shows_its_hint_once(tmp_path):
    # the problem keeps the error's message: its hint is the problem's own, shown once
    (tmp_path / "wf.yaml").write_text(
        "name: s\ninputs:\n  n: {type: integer}\n"
        "schedule:\n  - cron: '0 * * * *'\n    inputs: {m: 3}\n"
        "phases:\n  - {id: a, agent: echo}\n"
    )
    out = _orch("validate", str(tmp_path / "wf.yaml"))
    assert out.returncode == 2
    assert out.stdout.splitlines() == [
        f"{tmp_path / 'wf.yaml'}:6:17: schedule[0].inputs: unknown input 'm'",
        "  hint: declared inputs: n",
    ]


def test_a_phase_the_run_lacks_shows_its_did_you_mean_in_python_and_once_in_the_cli(tmp_path):
    import asyncio

    flow = {"name": "one", "phases": [{"id": "ship", "agent": "echo", "with": {"text": "s"}}]}

    async def go():
        handle = await orchestrator.start(flow, state_dir=tmp_path)
        await handle.wait(timeout=60)
        with pytest.raises(UsageError) as caught:
            async for _ in orchestrator.follow(handle.run_id, state_dir=tmp_path, phase="shp"):
                pass
        return handle.run_id, caught.value

    run_id, error = asyncio.run(go())
    assert str(error) == f"run '{run_id}' has no phase 'shp'\n  hint: did you mean 'ship'?"
    # the CLI prints the message and the hint, each once
    out = _orch("logs", run_id, "--phase", "shp", "--state-dir", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"error: run '{run_id}' has no phase 'shp'",
        "  hint: did you mean 'ship'?",
    ]


def test_a_phase_the_run_lacks_with_no_close_name_lists_the_runs_phases(tmp_path):
    import asyncio

    flow = {
        "name": "two",
        "phases": [
            {"id": "build", "agent": "echo", "with": {"text": "b"}},
            {"id": "ship", "agent": "echo", "with": {"text": "s"}, "depends_on": ["build"]},
        ],
    }

    async def go():
        handle = await orchestrator.start(flow, state_dir=tmp_path)
        await handle.wait(timeout=60)
        return handle.run_id

    run_id = asyncio.run(go())
    out = _orch("logs", run_id, "--phase", "nah", "--state-dir", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"error: run '{run_id}' has no phase 'nah'",
        "  hint: its phases: build, ship",
    ]


def test_start_honours_the_phase_cache(tmp_path):
    import asyncio

    ledger = tmp_path / "ledger"
    flow = {
        "name": "cached",
        "phases": [
            {
                "id": "a",
                "agent": "echo",
                "cache": True,
                "with": {"text": "x", "ledger": str(ledger)},
            }
        ],
    }

    async def twice():
        for _ in range(2):
            handle = await orchestrator.start(flow, state_dir=tmp_path / "s")
            await handle.wait()
        return handle

    handle = asyncio.run(twice())
    assert len(ledger.read_text().splitlines()) == 1  # the second run was served by the cache
    phases = {p.id: p for p in handle.status().phases}
    assert phases["a"].cached is True


def _open_files_under(folder: Path) -> list[str]:
    fds = Path("/proc/self/fd")
    names = []
    for fd in fds.iterdir():
        try:
            names.append(str(fd.readlink()))
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
    return sorted(n for n in names if n.startswith(str(folder)))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="lists open files through /proc")
def test_follow_keeps_nothing_of_the_store_open_while_the_caller_holds_an_event(tmp_path):
    # a caller that stops at any event leaves the generator to be closed whenever: at garbage
    # collection if nobody closes it (Python 3.13 reports a connection collected open)
    import asyncio

    flow = {"name": "one", "phases": [{"id": "a", "agent": "echo", "with": {"text": "x"}}]}

    async def go():
        handle = await orchestrator.start(flow, state_dir=tmp_path)
        await handle.wait(timeout=60)
        before = _open_files_under(tmp_path)
        held = []
        async for event in orchestrator.follow(handle.run_id, state_dir=tmp_path):
            held.append((event.event, _open_files_under(tmp_path)))
            if event.event == "phase_started":
                break  # stops early, as a caller looking for one event does
        return before, held

    before, held = asyncio.run(go())
    assert [kind for kind, _ in held] == ["workflow_started", "phase_started"]
    assert all(files == before for _, files in held), (before, held)


def test_follow_of_one_phase_gives_its_events_and_names_a_phase_the_run_lacks(tmp_path):
    import asyncio

    flow = {
        "name": "two",
        "phases": [
            {"id": "build", "agent": "echo", "with": {"text": "b"}},
            {"id": "ship", "agent": "echo", "depends_on": ["build"], "with": {"text": "s"}},
        ],
    }

    async def go(phase):
        handle = await orchestrator.start(flow, state_dir=tmp_path)
        await handle.wait(timeout=60)
        return [
            (e.event, e.phase)
            async for e in orchestrator.follow(handle.run_id, state_dir=tmp_path, phase=phase)
        ]

    assert asyncio.run(go("ship")) == [("phase_started", "ship"), ("phase_completed", "ship")]
    with pytest.raises(UsageError) as caught:  # as `orch logs RUN --phase shp` says
        asyncio.run(go("shp"))
    assert "has no phase 'shp'" in str(caught.value)
    assert caught.value.hint == "did you mean 'ship'?"


def test_load_workflow_and_start_read_a_str_with_a_line_break_as_yaml_text(tmp_path):
    import asyncio

    text = "name: x\nphases:\n  - {id: a, agent: echo, with: {text: hi}}\n"
    assert [p.id for p in orchestrator.load_workflow(text).phases] == ["a"]
    assert orchestrator.validate(text) == []

    async def run():
        handle = await orchestrator.start(text, state_dir=tmp_path)
        return await handle.wait()

    assert asyncio.run(run()).status == "completed"
    with pytest.raises(orchestrator.WorkflowInvalid) as caught:  # its problems at its lines
        orchestrator.load_workflow("name: y\nphases:\n  - {id: a, agent: ecoh}\n")
    assert str(caught.value.problems[0]).startswith("<memory>:3:")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (float("nan"), "nan is NaN"),
        (float("inf"), "inf is Infinity"),
        (-float("inf"), "-inf is -Infinity"),
    ],
)
def test_a_mapping_with_a_number_json_cannot_carry_is_refused_as_in_a_file(tmp_path, value, shown):
    flow = {"name": "x", "phases": [{"id": "a", "agent": "echo", "with": {"text": value}}]}
    with pytest.raises(orchestrator.WorkflowInvalid) as caught:
        orchestrator.load_workflow(flow)
    (problem,) = caught.value.problems
    assert str(problem).splitlines()[0] == (
        f"<memory>: phases[0].with.text: the number {shown} (JSON has no NaN or Infinity)"
    )
    # the same value in a file: refused, by the same rule
    (tmp_path / "wf.yaml").write_text(
        "name: x\nphases:\n  - {id: a, agent: echo, with: {text: .nan}}\n"
    )
    out = _orch("validate", str(tmp_path / "wf.yaml"))
    assert out.returncode == 2
    assert "the number '.nan' is NaN (JSON has no NaN or Infinity)" in out.stdout


def test_reject_from_python_fails_the_waiting_phase_and_a_second_decision_is_refused(tmp_path):
    import asyncio

    gate = {"name": "gate", "phases": [{"id": "ship", "agent": "echo", "approval": {}}]}

    async def go():
        handle = await orchestrator.start(gate, state_dir=tmp_path)
        async for event in handle.events():
            if event.event == "phase_waiting":
                orchestrator.reject(handle.run_id, "ship", comment="not today", state_dir=tmp_path)
        return handle.run_id, await handle.wait()

    run_id, result = asyncio.run(go())
    assert result.status == "failed"
    assert "rejected by " in result.phases["ship"].error
    assert result.phases["ship"].error.endswith(": not today")
    with pytest.raises(UsageError, match="was already rejected by "):
        orchestrator.approve(run_id, "ship", state_dir=tmp_path)
    # the CLI sees the same decision
    out = _orch("approve", run_id, "ship", "--state-dir", str(tmp_path))
    assert out.returncode == 2 and "was already rejected by " in out.stderr


def _deploy_yaml(tmp_path: Path) -> str:
    return (
        "name: deploy\nphases:\n  - {id: build, agent: echo, with: {text: built}}\n"
        "  - id: ship\n    agent: shell\n    depends_on: [build]\n"
        f"    with: {{command: test -f {tmp_path / 'approved'}}}\n"
    )


def _deploy(tmp_path: Path) -> dict:
    return {
        "name": "deploy",
        "phases": [
            {"id": "build", "agent": "echo", "with": {"text": "built"}},
            {
                "id": "ship",
                "agent": "shell",
                "depends_on": ["build"],
                "with": {"command": f"test -f {tmp_path / 'approved'}"},
            },
        ],
    }


def _started_phases(run_id: str, state: Path) -> list[str]:
    return [e["phase"] for e in _orch_json(state, "logs", run_id) if e["event"] == "phase_started"]


@pytest.mark.parametrize("given", ["mapping", "yaml text"])
def test_a_run_started_from_a_mapping_or_yaml_text_resumes_with_orch_resume(tmp_path, given):
    import asyncio

    source = _deploy(tmp_path) if given == "mapping" else _deploy_yaml(tmp_path)

    async def first():
        handle = await orchestrator.start(source, state_dir=tmp_path / "s")
        return handle.run_id, (await handle.wait()).status

    run_id, status = asyncio.run(first())
    assert status == "failed"
    (tmp_path / "approved").touch()
    out = _orch("resume", run_id, "--state-dir", str(tmp_path / "s"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert orchestrator.status(run_id, state_dir=tmp_path / "s").status == "completed"
    assert _started_phases(run_id, tmp_path / "s") == ["build", "ship", "ship"]


def test_a_run_recorded_without_its_workflow_text_resumes_with_workflow_file(tmp_path):
    # runs recorded before orch kept the text (or from a hand-built workflow) still resume:
    # `orch resume RUN --workflow FILE` gives the workflow
    import asyncio
    import dataclasses

    bare = dataclasses.replace(orchestrator.load_workflow(_deploy(tmp_path)), text="")

    async def first():
        handle = await orchestrator.start(bare, state_dir=tmp_path / "s")
        return handle.run_id, (await handle.wait()).status

    run_id, status = asyncio.run(first())
    assert status == "failed"
    (tmp_path / "approved").touch()
    resume = ("resume", run_id, "--state-dir", str(tmp_path / "s"))
    out = _orch(*resume)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"error: run '{run_id}' was not started from a workflow file, and its workflow's text"
        " was not recorded (runs started from Python before orch recorded it)",
        f"  hint: pass the workflow it ran: `orch resume {run_id} --workflow FILE`, or"
        " resume(..., workflow=...) from Python",
    ]
    (tmp_path / "deploy.yaml").write_text(_deploy_yaml(tmp_path))
    out = _orch(*resume, "--workflow", str(tmp_path / "deploy.yaml"))
    assert out.returncode == 0, out.stderr
    assert _started_phases(run_id, tmp_path / "s") == ["build", "ship", "ship"]


def test_stats_names_its_since_argument_as_python_writes_it(tmp_path):
    """orchestrator.stats(since=...) names `since`, not the command line's `--since`."""
    with pytest.raises(UsageError) as info:
        orchestrator.stats(since="bogus", state_dir=tmp_path / "state")
    assert info.value.headline == "since 'bogus' is not a duration"
    assert "--since" not in str(info.value)
    assert info.value.hint == "write a duration back from now, e.g. 7d, 12h or 30m"


def test_wait_and_a_handles_wait_answer_the_same_questions_about_the_end(tmp_path):
    # orchestrator.wait gives a RunStatus, handle.wait a RunResult (README): both say
    # run_id, status, ok, outputs and error the same way, for a completed and a failed run
    state = str(tmp_path / "s")
    good = {
        "name": "good",
        "phases": [{"id": "a", "agent": "echo", "with": {"text": "hi"}}],
        "outputs": {"said": "{{ phases.a.output }}"},
    }
    bad = {
        "name": "bad",
        "phases": [
            {"id": "a", "agent": "echo", "with": {"text": "hi"}},
            {"id": "b", "agent": "fail", "depends_on": ["a"]},
        ],
        "outputs": {"said": "{{ phases.a.output }}"},
    }

    async def both(workflow: dict[str, Any]) -> tuple[Any, Any]:
        handle = await orchestrator.start(workflow, state_dir=state)
        return await handle.wait(), await orchestrator.wait(handle.run_id, state_dir=state)

    for workflow, status, error in (
        (good, "completed", None),
        (bad, "failed", "phase 'b' failed: failing on purpose (attempt 1)"),
    ):
        result, found = asyncio.run(both(workflow))
        assert isinstance(result, orchestrator.RunResult)
        assert isinstance(found, orchestrator.RunStatus)
        for answer in (result, found):
            assert (answer.status, answer.ok, answer.error) == (status, not error, error)
            assert answer.outputs == {"said": "hi"}
            assert answer.started <= answer.ended
        assert found.run_id == result.run_id == found.id


def test_resume_of_a_run_that_already_completed_returns_none_and_status_has_its_outcome(
    tmp_path,
):
    state = str(tmp_path / "s")
    workflow = {
        "name": "done",
        "phases": [{"id": "a", "agent": "echo", "with": {"text": "hi"}}],
        "outputs": {"said": "{{ phases.a.output }}"},
    }

    async def go() -> tuple[Any, Any]:
        handle = await orchestrator.start(workflow, state_dir=state)
        result = await handle.wait()
        return result, await orchestrator.resume(handle.run_id, state_dir=state)

    result, resumed = asyncio.run(go())
    assert resumed is None  # nothing to resume, as `orch resume` says (exit 0)
    found = orchestrator.status(result.run_id, state_dir=state)
    assert (found.status, found.outputs, found.run.resumes) == ("completed", {"said": "hi"}, 0)
    cli = _orch("resume", result.run_id, "--state-dir", state)
    assert cli.returncode == 0, cli.stderr
    assert cli.stderr == f"run {result.run_id} already completed; nothing to resume\n"


def test_run_sync_takes_a_workflow_and_says_what_it_takes_for_anything_else(tmp_path):
    flow = orchestrator.load_workflow({"name": "w", "phases": [{"id": "a", "agent": "echo"}]})
    result = orchestrator.run_sync(flow)  # compiled on the way, as compile_plan(flow)
    assert (result.status, list(result.phases)) == ("completed", ["a"])
    with pytest.raises(UsageError) as caught:
        orchestrator.run_sync(str(tmp_path / "wf.yaml"))  # type: ignore[arg-type]
    assert str(caught.value) == (
        "execute() and run_sync() run a Plan, not str\n  hint: `orchestrator.run_sync("
        "orchestrator.compile_plan(orchestrator.load_workflow(...)))`"
    )


def test_two_runs_started_at_once_with_one_id_one_is_refused(tmp_path):
    # both pass the early check (neither is recorded yet); the store then refuses the
    # second one's workflow_started: no two runs share one history
    state = tmp_path / "s"
    workflow = {"name": "twice", "phases": [{"id": "a", "agent": "echo", "with": {"text": "x"}}]}

    async def both() -> tuple[list[Any], Any]:
        starts = [orchestrator.start(workflow, state_dir=state, run_id="same") for _ in "ab"]
        outcomes = await asyncio.gather(*starts, return_exceptions=True)
        started = [o for o in outcomes if not isinstance(o, BaseException)]
        assert len(started) == 1, outcomes
        return outcomes, await started[0].wait()

    outcomes, result = asyncio.run(both())
    refused = [o for o in outcomes if isinstance(o, UsageError)]
    assert len(refused) == 1, outcomes
    assert str(refused[0]).startswith("run 'same' already exists in ")
    assert "`orch resume same`" in (refused[0].hint or "")
    assert result.status == "completed"
    logs = _orch_json(state, "logs", "same")
    assert [e["event"] for e in logs].count("workflow_started") == 1

"""The python agent: sync in a thread, async awaited, kwargs, ctx, failures; import checks."""

from __future__ import annotations

import asyncio
import threading

import pytest

from orchestrator.agents import AgentContext, AgentFailure, AgentResult
from orchestrator.agents.builtin.python import PythonAgent

MODULE = """
import asyncio, threading
from orchestrator.agents import AgentResult, AgentFailure

def add(a, b=1):
    return {"sum": a + b, "thread": threading.current_thread().name}

async def slow_upper(text):
    await asyncio.sleep(0)
    return text.upper()

def two(a, b):
    return a + b

def with_ctx(ctx, x):
    return f"{ctx.phase_id}:{x}:{ctx.idempotency_key}"

def rich():
    return AgentResult(output=1, metadata={"cost": 0.5})

def boom():
    raise ValueError("bad value")

def refuse():
    raise AgentFailure("no", transient=False)

class Box:
    @staticmethod
    def make(n):
        return [n] * n

not_callable = 3
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "pyagent_mod.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def run(workdir, input: dict):
    c = AgentContext(run_id="r", phase_id="calc", workdir=str(workdir))
    return asyncio.run(PythonAgent().run(input, c))


def test_sync_function_runs_in_a_worker_thread_with_kwargs(workdir):
    result = run(workdir, {"function": "pyagent_mod:add", "kwargs": {"a": 2, "b": 3}})
    assert result.output["sum"] == 5
    assert result.output["thread"] != threading.main_thread().name


def test_async_function_is_awaited(workdir):
    result = run(workdir, {"function": "pyagent_mod:slow_upper", "kwargs": {"text": "hi"}})
    assert result.output == "HI"


def test_ctx_is_passed_when_asked_and_agent_result_kept(workdir):
    result = run(workdir, {"function": "pyagent_mod:with_ctx", "kwargs": {"x": 1}})
    assert result.output == "calc:1:r/calc/1"
    rich = run(workdir, {"function": "pyagent_mod:rich"})
    assert isinstance(rich, AgentResult) and rich.metadata == {"cost": 0.5}
    assert run(workdir, {"function": "pyagent_mod:Box.make", "kwargs": {"n": 2}}).output == [2, 2]


def test_exceptions_become_failures(workdir):
    with pytest.raises(AgentFailure) as boom:
        run(workdir, {"function": "pyagent_mod:boom"})
    assert str(boom.value) == "pyagent_mod:boom raised ValueError: bad value"
    assert boom.value.transient is True
    with pytest.raises(AgentFailure) as refused:
        run(workdir, {"function": "pyagent_mod:refuse"})
    assert refused.value.transient is False
    with pytest.raises(AgentFailure) as wrong:
        run(workdir, {"function": "pyagent_mod:add", "kwargs": {"zzz": 1}})
    assert (
        str(wrong.value) == "kwargs do not fit pyagent_mod:add(a, b): unexpected 'zzz'; missing 'a'"
    )
    assert wrong.value.transient is False


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_mod_xyz:f", "cannot import module 'no_such_mod_xyz'"),
        ("pyagent_mod:missing", "module 'pyagent_mod' has no attribute 'missing'"),
        ("pyagent_mod:not_callable", "'pyagent_mod:not_callable' is not callable"),
    ],
)
def test_import_problems_are_found_at_check_and_at_run(workdir, target, message):
    problems = PythonAgent.check_static({"function": target}, workflow_path=str(workdir / "w.yaml"))
    assert [p.message[: len(message)] for p in problems] == [message]
    assert problems[0].path == ("function",)
    with pytest.raises(AgentFailure, match="^" + message[:20].replace("(", r"\(")):
        run(workdir, {"function": target})


def test_a_template_target_is_not_checked_statically(workdir):
    found = PythonAgent.check_static(
        {"function": "{{ inputs.fn }}"}, workflow_path=str(workdir / "w.yaml")
    )
    assert found == []


def test_a_timed_out_sync_function_does_not_hold_orch_run_open(tmp_path):
    """The phase fails on its timeout and `orch run` exits, though the thread sleeps on."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "sleepy_mod.py").write_text("import time\n\ndef nap():\n    time.sleep(30)\n")
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "name: sleepy\nphases:\n  - id: nap\n    agent: python\n    timeout: 200ms\n"
        "    with: {function: 'sleepy_mod:nap'}\n"
    )
    orch_bin = str(Path(sys.executable).parent / "orch")
    done = subprocess.run(
        [orch_bin, "run", str(flow), "--events", "jsonl", "--state-dir", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=20,  # a hang guard, not a speed assertion
    )
    assert done.returncode == 1, done.stderr
    events = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    failed = next(e for e in events if e["event"] == "phase_failed")
    assert failed["phase"] == "nap" and "timed out" in failed["data"]["error"]


def test_kwargs_are_checked_against_the_signature_at_validate_and_at_run(tmp_path):
    """Both the unexpected and the missing keys are named, before the run and during it."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    (tmp_path / "kw_mod.py").write_text("def f(a, b):\n    return a + b\n")
    flow = tmp_path / "flow.yaml"
    text = (
        "name: kw\ninputs:\n  n: {type: integer, default: 1}\nphases:\n"
        "  - id: add\n    agent: python\n"
        "    with: {function: 'kw_mod:f', kwargs: {a: '{{ inputs.n }}', c: 2}}\n"
    )
    flow.write_text(text)
    checked = CliRunner().invoke(app, ["validate", str(flow)])
    assert checked.exit_code == 2
    expected = "kwargs do not fit kw_mod:f(a, b): unexpected 'c'; missing 'b'"
    assert f"{flow}:7:42: {expected}" in checked.output
    flow.write_text(text.replace("c: 2", "b: 2"))
    assert CliRunner().invoke(app, ["validate", str(flow)]).exit_code == 0
    with pytest.raises(AgentFailure) as info:
        run(tmp_path, {"function": "kw_mod:f", "kwargs": {"a": 1, "c": 2}})
    assert str(info.value) == expected


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sys_exit_in_a_function_is_a_failed_phase_not_a_crash(tmp_path, kind):
    import json
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "quitter.py").write_text(
        "import sys\n\ndef sync():\n    sys.exit(4)\n\nasync def async_():\n    sys.exit(4)\n"
    )
    name = "sync" if kind == "sync" else "async_"
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        f"name: quit\nphases:\n  - {{id: q, agent: python, with: {{function: 'quitter:{name}'}}}}\n"
    )
    orch_bin = str(Path(sys.executable).parent / "orch")
    done = subprocess.run(
        [orch_bin, "run", str(flow), "--events", "jsonl", "--state-dir", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    events = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    failed = next(e for e in events if e["event"] == "phase_failed")
    assert "raised SystemExit: 4" in failed["data"]["error"]
    assert events[-1]["event"] == "workflow_failed"


def test_an_orch_error_the_function_raises_is_a_one_line_phase_error(tmp_path):
    """A function that raises an orch error with a hint: the phase's error (the event, and
    `orch status`'s cell) is its one line; the hint is not folded into it."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "strict_mod.py").write_text(
        "from orchestrator.errors import UsageError\n\n"
        "def f():\n    raise UsageError('the table is empty', hint='load it first')\n"
    )
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "name: strict\nphases:\n  - id: load\n    agent: python\n"
        "    with: {function: 'strict_mod:f'}\n"
    )
    orch_bin = str(Path(sys.executable).parent / "orch")
    state = str(tmp_path / "s")
    done = subprocess.run(
        [orch_bin, "run", str(flow), "--events", "jsonl", "--state-dir", state],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    events = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    failed = next(e for e in events if e["event"] == "phase_failed")
    assert failed["data"]["error"] == "strict_mod:f raised UsageError: the table is empty"
    shown = subprocess.run(
        [orch_bin, "status", events[0]["run_id"], "--state-dir", state, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    phase = json.loads(shown.stdout)["phases"][0]
    assert phase["error"] == "strict_mod:f raised UsageError: the table is empty"

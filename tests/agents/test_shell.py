"""The shell agent, with real subprocesses: outputs, failures, caps, process trees, injection."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from orchestrator.agents import AgentContext, AgentFailure
from orchestrator.agents.builtin.shell import ShellAgent
from orchestrator.expr import render_shell


def ctx(tmp_path: Path, **kw) -> AgentContext:
    return AgentContext(run_id="r1", phase_id="p", workdir=str(tmp_path), **kw)


def run(input: dict, c: AgentContext):
    return asyncio.run(ShellAgent().run(input, c))


def test_string_command_runs_in_sh_and_output_is_stdout_without_last_newline(tmp_path):
    result = run({"command": "echo hello; echo world"}, ctx(tmp_path))
    assert result.output == "hello\nworld"
    assert result.metadata["exit_code"] == 0


def test_argv_list_is_passed_as_it_is(tmp_path):
    result = run({"command": ["printf", "%s|", "a b", "$HOME", ";"]}, ctx(tmp_path))
    assert result.output == "a b|$HOME|;|"


def test_env_cwd_and_stdin(tmp_path):
    (tmp_path / "sub").mkdir()
    result = run(
        {
            "command": 'printf "%s %s " "$GREETING" "$(basename "$PWD")"; cat',
            "env": {"GREETING": "hi", "N": 3},
            "cwd": "sub",
            "stdin": "from stdin",
        },
        ctx(tmp_path),
    )
    assert result.output == "hi sub from stdin"


def test_inherit_env_false_gives_a_clean_environment(tmp_path):
    os.environ["ORCH_TEST_LEAK"] = "leak"
    try:
        result = run(
            {"command": ["/usr/bin/env"], "inherit_env": False, "env": {"ONLY": "1"}},
            ctx(tmp_path),
        )
    finally:
        del os.environ["ORCH_TEST_LEAK"]
    assert "ONLY=1" in result.output
    assert "ORCH_TEST_LEAK" not in result.output


def test_json_and_lines_outputs(tmp_path):
    c = ctx(tmp_path)
    assert run({"command": "echo '{\"a\": [1, 2]}'", "output": "json"}, c).output == {"a": [1, 2]}
    assert run({"command": "printf 'x\\ny\\n'", "output": "lines"}, c).output == ["x", "y"]


def test_bad_json_is_a_permanent_failure(tmp_path):
    with pytest.raises(AgentFailure) as info:
        run({"command": "echo nope", "output": "json"}, ctx(tmp_path))
    assert "not valid JSON" in str(info.value)
    assert info.value.transient is False


def test_non_zero_exit_fails_with_the_stderr_tail(tmp_path):
    command = "for i in $(seq 1 2000); do echo line$i >&2; done; exit 3"
    with pytest.raises(AgentFailure) as info:
        run({"command": command}, ctx(tmp_path))
    message = str(info.value)
    assert "exited with code 3" in message
    assert "line2000" in message
    assert "line1\n" not in message  # only the tail
    assert info.value.metadata["exit_code"] == 3


def test_a_missing_program_is_a_permanent_failure(tmp_path):
    with pytest.raises(AgentFailure) as info:
        run({"command": ["no-such-program-orch"]}, ctx(tmp_path))
    assert "cannot start 'no-such-program-orch'" in str(info.value)
    assert info.value.transient is False


def test_output_over_the_cap_stops_the_command(tmp_path):
    with pytest.raises(AgentFailure) as info:
        run({"command": "yes", "max_output": 100_000}, ctx(tmp_path))
    assert "exceeds max_output (100000 bytes)" in str(info.value)


def _tree_command(pids: Path) -> str:
    # a child, a grandchild that leaves the session (setsid), and the shell itself
    return (
        f"sh -c 'echo $$ >> {pids}; exec sleep 300' & "
        f'setsid sh -c \'sh -c "echo \\$\\$ >> {pids}; exec sleep 300" & '
        f"echo $$ >> {pids}; exec sleep 300' & "
        f"echo $$ >> {pids}; "
        f"while [ $(wc -l < {pids}) -lt 4 ]; do sleep 0.05; done; echo ready >&2; sleep 300"
    )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


#: Seconds a test waits for a command's processes to exist: a bound on a hang, not a timing.
BOUND = 60.0


def _wait_for_pids(pids: Path, n: int) -> list[int]:
    """The pids the command wrote, once there are ``n`` (or after BOUND seconds: fewer)."""
    deadline = time.monotonic() + BOUND
    while len(pids.read_text().split()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return [int(x) for x in pids.read_text().split()]


async def _tree_ready(pids: Path, n: int, task: asyncio.Future) -> list[int]:
    """The pids once the command wrote ``n`` of them; fails (never hangs) when the command
    ended first or did not get there within BOUND seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    while len(found := pids.read_text().split()) < n:
        if task.done():
            raise AssertionError(f"the command ended with {len(found)} of {n} pids: {task!r}")
        assert loop.time() < deadline, f"{len(found)} of {n} pids after {BOUND:g}s"
        await asyncio.sleep(0.02)
    return [int(x) for x in found]


def _run_then_none_alive(main, pids: Path, n: int) -> None:
    """Run ``main()``; then the ``n`` processes the command wrote pids for are all gone.
    Whatever still runs after the checks is SIGKILLed: a failed test leaves nothing."""
    try:
        asyncio.run(main())
        recorded = _wait_for_pids(pids, n)
        assert len(recorded) == n
        assert [p for p in recorded if _alive(p)] == []
    finally:
        _kill_leftovers(pids)  # after the checks: a no-op when the agent did its job


def _kill_leftovers(pids: Path) -> None:
    """SIGKILL whatever the command wrote a pid for and still runs (a failed test leaves
    no `sleep 300` behind)."""
    for pid in [int(x) for x in pids.read_text().split()]:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def test_timeout_kills_the_whole_tree_setsid_included(tmp_path):
    """Reliability T1: after the deadline, no process of the command tree survives."""
    pids = tmp_path / "pids"
    pids.touch()

    async def go():
        agent = ShellAgent()
        task = asyncio.ensure_future(
            agent.run(
                {"command": _tree_command(pids), "kill_grace": 1},
                ctx(tmp_path, deadline=time.monotonic() + 60),
            )
        )
        # wait until the whole tree exists, then move the deadline by cancelling
        assert all(_alive(p) for p in await _tree_ready(pids, 4, task))
        return task

    async def main():
        task = await go()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    _run_then_none_alive(main, pids, 4)


def test_cancel_kills_a_child_that_left_the_group_and_cleared_its_environment(tmp_path):
    """Such a child is found only through its parent, before the shell dies."""
    pids = tmp_path / "pids"
    pids.touch()
    command = (
        f"setsid env -i sh -c 'echo $$ >> {pids}; exec sleep 300' & "
        f"echo $$ >> {pids}; "
        f"while [ $(wc -l < {pids}) -lt 2 ]; do sleep 0.05; done; sleep 300"
    )

    async def main():
        task = asyncio.ensure_future(
            ShellAgent().run({"command": command, "kill_grace": 1}, ctx(tmp_path))
        )
        await _tree_ready(pids, 2, task)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    _run_then_none_alive(main, pids, 2)


def test_deadline_stops_the_command_and_its_tree(tmp_path):
    def trial(pids: Path, seconds: float) -> None:
        async def with_deadline():
            c = ctx(tmp_path, deadline=time.monotonic() + seconds)
            return await ShellAgent().run({"command": _tree_command(pids), "kill_grace": 1}, c)

        with pytest.raises(AgentFailure) as info:
            asyncio.run(with_deadline())
        assert "timed out" in str(info.value)

    until_the_whole_tree_timed_out(tmp_path, trial)


def until_the_whole_tree_timed_out(tmp_path: Path, trial) -> None:
    """Run ``trial(pids, seconds)`` (a ``_tree_command`` that times out after ``seconds``)
    until the whole tree (4 processes) existed before the time was up; after every trial
    nothing of the command may be alive.

    On a loaded machine 2 s may not be enough to start four shells: a trial cut short
    (fewer than four pids) runs again with twice the time (a bound, never a speed check).
    """
    seconds = 2.0
    while True:
        pids = tmp_path / f"pids-{seconds:g}"
        pids.touch()
        try:
            trial(pids, seconds)
            recorded = [int(x) for x in pids.read_text().split()]
            assert [p for p in recorded if _alive(p)] == []
        finally:
            _kill_leftovers(pids)  # after the checks: a no-op when the agent did its job
        if len(recorded) == 4:
            return
        assert seconds < BOUND / 2, f"the command's tree never started within {seconds:g}s"
        seconds *= 2


def test_term_is_sent_before_kill(tmp_path):
    marker = tmp_path / "got-term"
    command = f"trap 'echo term > {marker}; exit 0' TERM; while :; do sleep 0.05; done"

    async def main():
        task = asyncio.ensure_future(ShellAgent().run({"command": command}, ctx(tmp_path)))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert marker.read_text() == "term\n"


def test_a_background_child_holding_stdout_does_not_block(tmp_path):
    result = run({"command": "sleep 300 & echo done"}, ctx(tmp_path))
    assert result.output == "done"


# Reliability X1 (agent level): values that arrive from upstream, through the shell renderer,
# argv and env. The end-to-end version through `orch run` is in tests/agents/test_e2e.py.
PAYLOADS = [
    "; touch MARKER",
    "$(touch MARKER)",
    "`touch MARKER`",
    "| touch MARKER",
    "|| touch MARKER",
    "&& touch MARKER",
    "& touch MARKER",
    "\ntouch MARKER",
    "\r\ntouch MARKER",
    "'; touch MARKER; '",
    '"; touch MARKER; "',
    '"$(touch MARKER)"',
    "'$(touch MARKER)'",
    "$IFS;touch${IFS}MARKER",
    "${IFS}touch${IFS}MARKER",
    "> MARKER",
    ">> MARKER",
    "< /etc/passwd > MARKER",
    "*",
    "?*",
    "[a-z]*",
    "~",
    "$((1+1)) $HOME $0",
    "a\\'b\\\"c",
    "-n -e touch MARKER",
    "{touch,MARKER}",
    "$(printf 'touch MARKER' | sh)",
    "!! !$ #comment",
    "\x00",
    "é ünïcödé 🙂 'q' \"qq\"",
    "",
    "  spaces  around  ",
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_injection_payloads_create_nothing_and_arrive_byte_for_byte(tmp_path, payload):
    value = payload.replace("\x00", "")  # a NUL cannot be in argv or env at all
    context = {"phases": {"up": {"output": value}}}
    c = ctx(tmp_path)
    # a shell string, a lone {{ }}, argv and env
    as_string = render_shell("printf '%s' {{ phases.up.output }}", context)
    echoed = run({"command": as_string}, c)
    lone = render_shell("{{ phases.up.output }}", context)
    assert run({"command": "printf '%s' " + lone}, c).output == value
    argv = run({"command": ["printf", "%s", value]}, c)
    env = run({"command": 'printf "%s" "$V"', "env": {"V": value}}, c)
    assert echoed.output == value
    assert argv.output == value
    assert env.output == value
    assert list(tmp_path.iterdir()) == []


def test_stream_sends_stdout_as_it_comes(tmp_path):
    pieces: list[str] = []

    async def collect(text: str) -> None:
        pieces.append(text)

    c = AgentContext(run_id="r1", phase_id="p", workdir=str(tmp_path), _stream=collect)
    result = run({"command": "printf 'é1\\n'; sleep 0.1; printf 'ü2\\n'", "stream": True}, c)
    assert result.output == "é1\nü2"
    assert "".join(pieces) == "é1\nü2\n"
    assert len(pieces) == 2


def test_check_static_warns_on_phase_outputs_in_command_strings_only():
    def warn(command):
        return [
            (p.path, p.severity, p.message)
            for p in ShellAgent.check_static({"command": command}, workflow_path="w.yaml")
        ]

    assert warn("echo {{ phases.a.output }} {{ previous.output }}") == [
        (
            ("command",),
            "warning",
            "the output of phases.a, previous is spliced into a shell command string; "
            "it is shell-quoted, but an argv list or env is safer",
        )
    ]
    assert warn("echo {{ inputs.name }}") == []
    assert warn(["echo", "{{ phases.a.output }}"]) == []
    assert warn("echo plain") == []


def test_render_shell_quotes_every_value_by_kind():
    ctx_ = {"s": "a b", "l": ["x y", "z"], "d": {"k": "v"}, "n": 3, "b": True, "none": None}
    assert render_shell("cmd {{ s }}", ctx_) == "cmd 'a b'"
    assert render_shell("cmd {{ l }}", ctx_) == "cmd 'x y' z"  # one word per element
    assert render_shell("cmd {{ d }}", ctx_) == """cmd '{"k": "v"}'"""
    assert render_shell("{{ n }} {{ b }} {{ none }}", ctx_) == "3 true null"
    assert render_shell("{{ s | upper }}", ctx_) == "'A B'"  # a lone template is a string too
    assert render_shell("{% for x in l %}[{{ x }}]{% endfor %}", ctx_) == "['x y'][z]"
    assert render_shell("no templates; $HOME", ctx_) == "no templates; $HOME"


def test_a_command_that_closes_its_output_and_keeps_running_is_waited_for(tmp_path):
    start = time.process_time()
    result = run({"command": "exec >&- 2>&-; sleep 0.5; exit 0"}, ctx(tmp_path))
    assert result.output == ""
    assert time.process_time() - start < 0.4  # CPU time, not wall time: no busy loop


_HAS_PIDFD = hasattr(os, "pidfd_open")


def _pidfd_works() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return False
    return True


@pytest.mark.skipif(not _pidfd_works(), reason="no pidfd here (not Linux >= 5.3)")
def test_the_exit_is_watched_through_the_commands_pidfd_not_polled(tmp_path, monkeypatch):
    # the command closes its pipes first, so only its exit is left to wait for
    opened: list[int] = []
    real = os.pidfd_open  # type: ignore[attr-defined]

    def spy(pid: int, *args: int) -> int:
        opened.append(pid)
        return real(pid, *args)

    monkeypatch.setattr(os, "pidfd_open", spy)
    marker = tmp_path / "pid"
    command = f"echo $$ > {marker}; exec >&- 2>&-; sleep 0.2; exit 7"
    with pytest.raises(AgentFailure) as failure:
        run({"command": command}, ctx(tmp_path))
    assert "exit" in str(failure.value) and "7" in str(failure.value)
    assert opened == [int(marker.read_text())]  # the command's own pid, watched once


def test_without_pidfd_the_exit_is_polled_with_the_same_result(tmp_path, monkeypatch):
    def refused(pid: int, *args: int) -> int:  # a kernel before 5.3, or a sandbox
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", refused, raising=False)
    result = run({"command": "exec >&- 2>&-; sleep 0.2; exit 0"}, ctx(tmp_path))
    assert result.metadata["exit_code"] == 0
    with pytest.raises(AgentFailure, match="3"):
        run({"command": "sleep 0.1; exit 3"}, ctx(tmp_path))
    monkeypatch.delattr(os, "pidfd_open")  # not Linux: no such function
    assert run({"command": ["echo", "polled"]}, ctx(tmp_path)).output == "polled"

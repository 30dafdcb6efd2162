"""Ctrl-C and SIGTERM stop a real `orch run` process cleanly: exit 130/143, no traceback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import BOUND, Processes, Spawned

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

LONG_WORKFLOW = """# yaml-language-server: $schema=../schemas/workflow.schema.json
name: long
phases:
  - id: quick
    agent: echo
    with: {text: ready}
  - id: long_a
    agent: sleep
    depends_on: [quick]
    with: {seconds: 60}
  - id: long_b
    agent: sleep
    depends_on: [quick]
    with: {seconds: 60}
  - id: after
    agent: echo
    depends_on: [long_a, long_b]
    with: {text: never}
"""


def start_run(processes: Processes, tmp_path: Path, text: str = LONG_WORKFLOW) -> Spawned:
    """`orch run --events jsonl` in its own session (its process group is where leftovers
    would be), ended at teardown if the test stops before it does."""
    wf = tmp_path / "long.yaml"
    wf.write_text(text)
    return processes.start(
        [sys.executable, "-m", "orchestrator", "run", str(wf), "--events", "jsonl"],
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1", "ORCH_STATE_DIR": str(tmp_path / ".orch")},
    )


def wait_for_running(proc: Spawned, phases: set[str]) -> list[dict]:
    """Read events until every phase in ``phases`` has started; return them."""
    seen: list[dict] = []
    started: set[str] = set()
    while not phases <= started:
        line = proc.line()
        if line is None:
            code, _, err = proc.finish()
            raise AssertionError(f"orch ended early: {code} {err}")
        event = json.loads(line)
        seen.append(event)
        if event["event"] == "phase_started":
            started.add(event["phase"])
    return seen


def finish(proc: Spawned) -> tuple[int, list[dict], str]:
    code, rest, err = proc.finish()
    return code, [json.loads(line) for line in rest], err


def eventually(check, bound: float = BOUND) -> bool:
    """Whether ``check()`` became true within ``bound`` seconds (a bound on a hang: the
    kernel reaps and the agent's grace runs at their own pace on a loaded machine)."""
    end = time.monotonic() + bound
    while not check():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def group_is_gone(pgid: int) -> bool:
    """Whether no process is left in the process group (reaping is asynchronous)."""

    def gone() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    return eventually(gone)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_cancels_the_run_cleanly(tmp_path, sig, code, processes):
    proc = start_run(processes, tmp_path)
    before = wait_for_running(proc, {"long_a", "long_b"})
    proc.proc.send_signal(sig)
    rc, after, err = finish(proc)
    events = before + after
    assert rc == code, err
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err and "CancelledError" not in err
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "workflow_cancelled"
    assert events[-1]["data"]["status"] == "cancelled"
    ended = {e["phase"]: e["data"]["status"] for e in events if e["event"] == "phase_failed"}
    assert ended.get("long_a") == "cancelled" and ended.get("long_b") == "cancelled"
    assert not any(e["event"] == "phase_started" and e["phase"] == "after" for e in events)
    assert "cancelling the run" in err
    assert group_is_gone(proc.pid)
    # who cancelled it, as `orch status` shows it (text and JSON) and `orch wait` exits
    env = {**os.environ, "NO_COLOR": "1", "ORCH_STATE_DIR": str(tmp_path / ".orch")}

    def orch(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "orchestrator", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)

    run_id = events[-1]["run_id"]
    info = json.loads(orch("status", run_id, "--json").stdout)
    assert (info["status"], info["cancelled_by"]) == ("cancelled", sig.name)
    assert f"status: cancelled (by {sig.name})" in orch("status", run_id).stdout
    assert orch("wait", run_id).returncode == code


def test_a_second_ctrl_c_still_exits_130_without_a_traceback(tmp_path, processes):
    proc = start_run(processes, tmp_path)
    wait_for_running(proc, {"long_a"})
    proc.proc.send_signal(signal.SIGINT)
    proc.proc.send_signal(signal.SIGINT)
    rc, _, err = finish(proc)
    assert rc == 130, err
    assert "Traceback" not in err
    assert group_is_gone(proc.pid)


def test_ctrl_c_under_the_live_display_says_so_and_exits_130(tmp_path):
    import pty
    import select

    wf = tmp_path / "long.yaml"
    wf.write_text(LONG_WORKFLOW)
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "40"}
    env["ORCH_STATE_DIR"] = str(tmp_path / ".orch")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(wf)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    os.close(slave)
    screen, sent = b"", False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
        # both long phases are drawn as running: interrupt
        if not sent and b"long_a" in screen and b"long_b" in screen:
            proc.send_signal(signal.SIGINT)
            sent = True
    os.close(master)
    assert sent, screen.decode(errors="replace")
    assert proc.wait(timeout=30) == 130
    text = screen.decode(errors="replace")
    assert "Ctrl-C: cancelling the run" in text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert "cancelled" in text and "error: the run was cancelled" in text
    assert group_is_gone(proc.pid)


def _shell_agent_installed() -> bool:
    from orchestrator.agents.registry import AgentRegistry

    return "shell" in AgentRegistry.from_entry_points()


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find processes")
@pytest.mark.skipif(not _shell_agent_installed(), reason="the shell agent is not installed")
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_leaves_no_agent_process_behind(tmp_path, sig, code, processes):
    marker = f"{os.getpid() % 1000}.{time.time_ns() % 10**9}"  # a unique `sleep` argument
    proc = start_run(
        processes,
        tmp_path,
        LONG_WORKFLOW.replace(
            "agent: sleep\n    depends_on: [quick]\n    with: {seconds: 60}",
            "agent: shell\n    depends_on: [quick]\n"
            f"    with: {{command: 'sleep {marker} & sleep {marker}; wait'}}",
            1,
        ),
    )
    try:
        wait_for_running(proc, {"long_a", "long_b"})
        # the shell has started both sleeps
        assert eventually(lambda: len(_processes_with(marker)) >= 2)
        proc.proc.send_signal(sig)
        rc, events, err = finish(proc)
        assert rc == code, err
        assert "Traceback" not in err
        assert events[-1]["event"] == "workflow_cancelled"
        # the agent's process tree is killed (TERM, then KILL after a grace)
        assert eventually(lambda: not _processes_with(marker)), _processes_with(marker)
    finally:  # after the checks: nothing to do when orch did its job
        for pid in _processes_with(marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

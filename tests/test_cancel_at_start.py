"""A Python program that stops following a run right at ``phase_started`` of a long shell
phase (issue 8, item 5): the program returns at once, and the command does not outlive it
(no orphan re-parented to init). The host is a real Python process, the command a real
``sleep``; processes are found by the tag every command carries (/proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orchestrator.agents.builtin.process import leftovers

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")

HOST = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    import orchestrator

    mode, folder, state, times = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])

    def nap(pidfile):
        return {
            "name": "nap",
            "phases": [{"id": "nap", "agent": "shell",
                        "with": {"command": f"echo $$ > {pidfile}; exec sleep 600"}}],
        }

    async def started(pidfile):  # the command runs (not merely starting)
        while not pidfile.exists():
            await asyncio.sleep(0.01)

    async def main(run_id):
        pidfile = folder / run_id
        if mode.startswith("run"):  # the engine's iterator: leaving the loop cancels the run
            plan = orchestrator.compile_plan(orchestrator.load_workflow(nap(pidfile)))
            async for event in orchestrator.run(plan, run_id=run_id):
                if event.event == "phase_started":
                    if mode == "run-after-start":
                        await started(pidfile)
                    break
        else:  # a recorded run followed through its handle, cancelled at phase_started
            handle = await orchestrator.start(nap(pidfile), state_dir=state, run_id=run_id)
            async for event in handle.events():
                if event.event == "phase_started":
                    if mode == "start-after-start":
                        await started(pidfile)
                    handle.cancel()
                    break
            assert (await handle.wait()).status == "cancelled"
        # ... and main returns at once: asyncio.run ends the loop while the run stops

    for n in range(times):  # the window is a few event-loop steps wide: try it often
        asyncio.run(main(f"{mode}-{n}"))
    print("exited", flush=True)
    """
)


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie not yet reaped by its new parent counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].startswith("Z")


@pytest.mark.parametrize(
    ("mode", "times"),
    [("run-at-start", 20), ("run-after-start", 3), ("start-at-start", 3), ("start-after-start", 2)],
)
def test_leaving_a_run_at_phase_started_of_a_shell_phase_returns_and_leaves_no_process(
    tmp_path, mode, times
):
    script = tmp_path / "host.py"
    script.write_text(HOST)
    folder = tmp_path / "pids"
    folder.mkdir()
    host = subprocess.Popen(
        [sys.executable, str(script), mode, str(folder), str(tmp_path / "state"), str(times)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = host.communicate(timeout=120)  # a generous bound: each command sleeps 600 s
    finally:
        if host.poll() is None:
            host.kill()
            host.communicate()
        # nothing of the commands is left: not a shell (by the pid it wrote, when it got to
        # write it), not anything carrying a run's tag; a killed process may take a moment
        # to be reaped by its new parent
        runs = [f"{mode}-{n}" for n in range(times)]
        pids = [int(p.read_text()) for p in folder.iterdir() if p.read_text().strip()]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            any(leftovers(r) for r in runs) or not all(_gone(p) for p in pids)
        ):
            time.sleep(0.05)
        left = {r: found for r in runs if (found := leftovers(r))}
        for pid in (pid for found in left.values() for pid in found):
            os.kill(pid, signal.SIGKILL)  # do not leave them to the next test
    assert host.returncode == 0, err
    assert out.splitlines() == ["exited"]
    assert left == {}
    assert [p for p in pids if not _gone(p)] == [], "a command outlived the program"
    if mode.endswith("after-start"):
        assert len(pids) == times  # each command had really started

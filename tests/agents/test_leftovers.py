"""Commands left running by a killed `orch run` are stopped when the run is resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agents.test_shell import _alive, _wait_for_pids

ORCH = str(Path(sys.executable).parent / "orch")

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")


def test_resume_after_kill_9_stops_the_old_command_tree_first(tmp_path):
    pids = tmp_path / "pids"
    pids.touch()
    flag = tmp_path / "second.flag"
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        f"""
name: leftovers
phases:
  - id: slow
    agent: shell
    with:
      kill_grace: 1
      command: |
        if [ -f {flag} ]; then echo second; exit 0; fi
        sleep 60 & echo $! >> {pids}; echo $$ >> {pids}; wait
outputs:
  said: "{{{{ phases.slow.output }}}}"
"""
    )
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [ORCH, "run", str(flow), "--state-dir", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        old = _wait_for_pids(pids, 2)
        assert len(old) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    try:
        assert all(_alive(p) for p in old)  # kill -9 leaves the command tree running
        listed = subprocess.run(
            [ORCH, "runs", "--json", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=20,
        )
        run_id = json.loads(listed.stdout)[0]["id"]
        status = subprocess.run(
            [ORCH, "status", run_id, "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert f"2 leftover processes of run {run_id} still running (pids " in status.stderr
        flag.touch()
        resumed = subprocess.run(
            [ORCH, "resume", run_id, "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert resumed.returncode == 0, resumed.stderr
        assert [p for p in old if _alive(p)] == []
        line = next(x for x in resumed.stderr.splitlines() if x.startswith("stopped"))
        assert line.startswith(f"stopped 2 leftover processes of run {run_id} (pids ")
        assert sorted(int(p) for p in line.split("(pids ")[1].rstrip(")").split(", ")) == sorted(
            old
        )
        assert json.loads(resumed.stdout) == {"said": "second"}
        assert len(pids.read_text().split()) == 2  # the second run did not start another copy
    finally:
        for pid in old:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

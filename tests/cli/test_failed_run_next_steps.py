"""A failed run tells the user what to type next, and those commands work as printed."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
FLOW = """\
name: f
phases:
  - {id: a, agent: echo, with: {text: hi}}
  - {id: b, agent: fail, depends_on: [a], with: {times: 9, message: boom}}
  - {id: c, agent: echo, depends_on: [b]}
"""


def _shell(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "NO_COLOR": "1"}
    env.pop("ORCH_STATE_DIR", None)
    return subprocess.run(line, shell=True, cwd=cwd, env=env, capture_output=True, text=True)


def test_the_summary_ends_with_the_resume_and_logs_commands_and_they_work(tmp_path):
    (tmp_path / "f.yaml").write_text(FLOW)
    state = tmp_path / "my state"
    run = _shell(f"orch run f.yaml --state-dir {shlex.quote(str(state))}", tmp_path)
    assert run.returncode == 1
    *_, resume, logs = run.stderr.rstrip("\n").splitlines()
    assert resume.startswith("resume it: orch resume ") and resume.endswith(
        f"--state-dir '{state}'"
    )
    assert logs.startswith("its logs:  orch logs ") and " --phase b " in logs

    shown = _shell(logs.split(":", 1)[1], tmp_path)  # as printed, in a shell
    assert shown.returncode == 0, shown.stderr
    assert "boom" in shown.stdout and "phase a" not in shown.stdout

    again = _shell(resume.split(":", 1)[1], tmp_path)
    assert again.returncode == 1  # b fails again; the run is resumed, not started anew
    assert "resume it: orch resume" in again.stderr


def test_status_of_a_failed_run_does_not_call_it_done(tmp_path):
    (tmp_path / "f.yaml").write_text(FLOW)
    assert _shell("orch run f.yaml", tmp_path).returncode == 1
    run_id = _shell("orch runs --json", tmp_path).stdout.split('"id": "')[1].split('"')[0]
    status = _shell(f"orch status {run_id}", tmp_path).stdout
    assert "progress: 1/3 phases completed (1 failed, 1 skipped)" in status

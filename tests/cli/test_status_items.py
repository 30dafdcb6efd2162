"""`orch status` of a run whose foreach phase is running: how many of its items are done.

Real `orch` processes on a real store: each item waits for its own file, so the test
decides how far the phase got; a resumed run counts the items its first launch
completed (they do not run again).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.processes import BOUND

ORCH = [sys.executable, "-m", "orchestrator"]

FAN = """
name: fan
phases:
  - id: fan
    foreach: "{{ ['a', 'b', 'c', 'd'] }}"
    max_parallel: 1
    agent: shell
    with: {command: "while [ ! -f go-{{ item }} ]; do sleep 0.05; done; echo {{ item }}"}
  - {id: after, agent: echo, depends_on: [fan], with: {text: "{{ phases.fan.output | length }}"}}
"""


def _orch(tmp_path, *args):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(
        [*ORCH, *args, "--state-dir", "s"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND,
    )


def _status(tmp_path, run_id):
    res = _orch(tmp_path, "status", run_id, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _until(check, what):
    """Poll ``check`` until true; a bound on a hang, not a speed check."""
    end = time.monotonic() + BOUND
    while not check():
        assert time.monotonic() < end, f"not seen within {BOUND:g}s: {what}"
        time.sleep(0.05)


def _fan(info):
    return next(p for p in info["phases"] if p["id"] == "fan")


def _starts(tmp_path, run_id):
    logs = _orch(tmp_path, "logs", run_id, "--json", "--phase", "fan").stdout.splitlines()
    return sum(1 for line in logs if json.loads(line)["event"] == "phase_started")


def _two_done(tmp_path, processes, env):
    """`orch run` of FAN with items a and b let through: its process and run id, once
    `orch status` says 2 of the 4 items are done."""
    (tmp_path / "wf.yaml").write_text(FAN)
    first = processes.start([*ORCH, "run", "wf.yaml", "--state-dir", "s"], cwd=tmp_path, env=env)
    for item in "ab":
        (tmp_path / f"go-{item}").write_text("")
    _until(lambda: (tmp_path / "s" / "state.db").exists(), "the store")
    _until(lambda: _orch(tmp_path, "runs", "--json").stdout.strip() not in ("", "[]"), "the run")
    run_id = json.loads(_orch(tmp_path, "runs", "--json").stdout)[0]["id"]
    _until(lambda: (_fan(_status(tmp_path, run_id)).get("items") or {}).get("done") == 2, "2 done")
    return first, run_id


def test_status_shows_how_many_items_of_a_running_foreach_are_done(tmp_path, processes):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    first, run_id = _two_done(tmp_path, processes, env)

    info = _status(tmp_path, run_id)
    assert info["current"] == ["fan"]
    assert _fan(info)["items"] == {"done": 2, "total": 4}
    assert next(p for p in info["phases"] if p["id"] == "after")["items"] is None
    text = _orch(tmp_path, "status", run_id).stdout
    assert "running now: fan (items 2/4 done)" in text
    assert [line for line in text.splitlines() if line.startswith("fan ")][0].endswith(
        "items 2/4 done"
    )

    # kill -9: a resumed run does not run a, b again; its status counts them at once
    os.killpg(first.pid, signal.SIGKILL)
    first.finish()
    resumed = processes.start([*ORCH, "resume", run_id, "--state-dir", "s"], cwd=tmp_path, env=env)
    _until(lambda: _starts(tmp_path, run_id) == 2, "the resumed run's start of fan")
    info = _status(tmp_path, run_id)
    assert (info["status"], info["owner_pid"]) == ("running", resumed.pid)
    assert _fan(info)["items"] == {"done": 2, "total": 4}
    assert "running now: fan (items 2/4 done)" in _orch(tmp_path, "status", run_id).stdout

    (tmp_path / "go-c").write_text("")
    _until(lambda: _fan(_status(tmp_path, run_id))["items"] == {"done": 3, "total": 4}, "3 done")
    (tmp_path / "go-d").write_text("")
    code, _, err = resumed.finish()
    assert code == 0, err
    info = _status(tmp_path, run_id)
    assert info["status"] == "completed" and _fan(info)["items"] is None  # not running
    assert _fan(info)["output"] == ["a", "b", "c", "d"]
    assert "items" not in _orch(tmp_path, "status", run_id).stdout


def test_a_resume_that_runs_a_changed_foreach_again_counts_no_item_of_before(tmp_path, processes):
    # resume --force of a changed foreach phase runs every item again: the items the
    # first launch completed are not counted as done (they were, before: 2/4 at once)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    first, run_id = _two_done(tmp_path, processes, env)
    os.killpg(first.pid, signal.SIGKILL)
    first.finish()
    for item in "ab":
        (tmp_path / f"go-{item}").unlink()
    (tmp_path / "wf.yaml").write_text(FAN.replace("echo {{ item }}", "echo again {{ item }}"))
    args = [*ORCH, "resume", run_id, "--force", "--state-dir", "s"]
    resumed = processes.start(args, cwd=tmp_path, env=env)
    _until(lambda: _starts(tmp_path, run_id) == 2, "the resumed run's start of fan")
    assert _fan(_status(tmp_path, run_id))["items"] == {"done": 0, "total": 4}
    assert "running now: fan (items 0/4 done)" in _orch(tmp_path, "status", run_id).stdout
    (tmp_path / "go-a").write_text("")
    _until(lambda: _fan(_status(tmp_path, run_id))["items"] == {"done": 1, "total": 4}, "1 done")
    for item in "bcd":
        (tmp_path / f"go-{item}").write_text("")
    code, _, err = resumed.finish()
    assert code == 0, err
    assert _fan(_status(tmp_path, run_id))["output"] == [f"again {i}" for i in "abcd"]

"""`orch run --detach` and `orch wait`, from a clean shell: real processes, a real store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.processes import holds_open

ORCH = [sys.executable, "-m", "orchestrator"]

GATED = """
name: gated
phases:
  - id: gate
    agent: shell
    with: {command: "while [ ! -f go ]; do sleep 0.05; done; echo opened"}
  - id: after
    agent: echo
    depends_on: [gate]
    with: {text: "{{ phases.gate.output | trim }}"}
outputs:
  said: "{{ phases.after.output }}"
"""


def _orch(tmp_path, *args, timeout=60):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(
        [*ORCH, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


def _detach(tmp_path, text, processes, *options):
    """Start ``text`` detached; the run is ended at teardown if the test stops before it."""
    (tmp_path / "wf.yaml").write_text(text)
    res = _orch(tmp_path, "run", "wf.yaml", "--detach", "--state-dir", "s", *options)
    assert res.returncode == 0, res.stderr
    run_id = res.stdout.strip()
    processes.adopt(tmp_path / "s", run_id)
    assert len(run_id) == 12 and res.stdout == run_id + "\n"
    return run_id


def test_detach_returns_while_the_run_goes_on_and_wait_exits_with_its_outcome(tmp_path, processes):
    run_id = _detach(tmp_path, GATED, processes)
    # the run is recorded and still running: its gate is closed until the file exists
    status = _orch(tmp_path, "status", run_id, "--json", "--state-dir", "s")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "running"
    pending = _orch(tmp_path, "wait", run_id, "--timeout", "0.3", "--state-dir", "s")
    assert pending.returncode == 124  # as timeout(1): not the 1 of a failed run
    assert f"run {run_id} is still running" in pending.stderr
    (tmp_path / "go").write_text("")
    done = _orch(tmp_path, "wait", run_id, "--state-dir", "s")
    assert done.returncode == 0, done.stderr
    assert f"run {run_id} completed" in done.stderr
    status = json.loads(_orch(tmp_path, "status", run_id, "--json", "--state-dir", "s").stdout)
    assert status["status"] == "completed"
    logs = _orch(tmp_path, "logs", run_id, "--json", "--state-dir", "s")
    final = json.loads(logs.stdout.splitlines()[-1])
    assert final["event"] == "workflow_completed"
    assert final["data"]["outputs"] == {"said": "opened"}


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to see the waiter wait")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_on_wait_stops_the_waiting_not_the_run_and_says_so(tmp_path, processes, sig):
    # the run goes on in its own process: the waiter's Ctrl-C (or SIGTERM: a CI job
    # stopped) is not the 130/143 of a run cancelled so, and a script tells "I stopped
    # waiting" from "it was cancelled"
    run_id = _detach(tmp_path, GATED, processes)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    waiter = processes.start([*ORCH, "wait", run_id, "--state-dir", "s"], cwd=tmp_path, env=env)
    # orch wait polls the store from inside its wait: a Ctrl-C sent once it has the store
    # open lands on the waiting, not on Python still loading orch
    holds_open(waiter.pid, tmp_path / "s" / "state.db")
    waiter.proc.send_signal(sig)
    code, out, err = waiter.finish()
    assert code == 124, err  # as --timeout: the waiting stopped, the run goes on
    assert err == f"stopped waiting; run {run_id} goes on (`orch status {run_id}`)\n"
    assert out == []
    status = _orch(tmp_path, "status", run_id, "--json", "--state-dir", "s")
    assert json.loads(status.stdout)["status"] == "running"
    (tmp_path / "go").write_text("")  # the run was not touched: it completes
    done = _orch(tmp_path, "wait", run_id, "--state-dir", "s")
    assert done.returncode == 0, done.stderr
    assert f"run {run_id} completed" in done.stderr
    final = _orch(tmp_path, "logs", run_id, "--json", "--state-dir", "s").stdout.splitlines()[-1]
    assert json.loads(final)["data"]["outputs"] == {"said": "opened"}


def test_wait_exits_1_for_a_failed_run(tmp_path, processes):
    run_id = _detach(
        tmp_path,
        "name: broken\nphases:\n  - {id: a, agent: fail, with: {message: no luck}}\n",
        processes,
    )
    res = _orch(tmp_path, "wait", run_id, "--state-dir", "s")
    assert res.returncode == 1
    assert f"run {run_id} failed: phase 'a' failed: no luck" in res.stderr


def test_a_detached_run_cancelled_from_another_shell_waits_out_as_143(tmp_path, processes):
    run_id = _detach(tmp_path, GATED, processes)
    cancel = _orch(tmp_path, "cancel", run_id, "--state-dir", "s")
    assert cancel.returncode == 0, cancel.stderr
    res = _orch(tmp_path, "wait", run_id, "--state-dir", "s")
    assert res.returncode == 143, res.stderr
    assert f"run {run_id} cancelled" in res.stderr


def test_wait_for_an_unknown_run_is_a_usage_error(tmp_path):
    (tmp_path / "s").mkdir()
    res = _orch(tmp_path, "wait", "nope", "--state-dir", "s")
    assert res.returncode == 2
    assert "no run 'nope'" in res.stderr


def test_detach_still_checks_the_workflow_in_the_foreground(tmp_path):
    (tmp_path / "wf.yaml").write_text("name: x\nphases:\n  - {id: a, agent: ecko}\n")
    res = _orch(tmp_path, "run", "wf.yaml", "--detach", "--state-dir", "s")
    assert res.returncode == 2
    assert "wf.yaml:3:" in res.stderr and res.stdout == ""


READS = """
name: reads
phases:
  - {id: read, agent: shell, with: {command: "cat answer.txt"}}
outputs:
  said: "{{ phases.read.output | trim }}"
"""


def _outputs(tmp_path, run_id):
    done = _orch(tmp_path, "wait", run_id, "--state-dir", "s")
    assert done.returncode == 0, done.stderr
    logs = _orch(tmp_path, "logs", run_id, "--json", "--state-dir", "s")
    final = json.loads(logs.stdout.splitlines()[-1])
    assert final["event"] == "workflow_completed"
    return final["data"]["outputs"]


def test_a_detached_run_records_and_replays_its_agent_calls(tmp_path, processes):
    (tmp_path / "answer.txt").write_text("recorded\n")
    recorded = _detach(tmp_path, READS, processes, "--record", "calls")
    assert _outputs(tmp_path, recorded) == {"said": "recorded"}
    assert list((tmp_path / "calls").glob("*.json"))  # the child recorded the call
    (tmp_path / "answer.txt").write_text("live\n")
    replayed = _detach(tmp_path, READS, processes, "--replay", "calls")
    # answered from the recording: the shell command did not run again
    assert _outputs(tmp_path, replayed) == {"said": "recorded"}


def test_detach_checks_replay_and_executor_before_starting_anything(tmp_path):
    (tmp_path / "wf.yaml").write_text(READS)
    (tmp_path / "answer.txt").write_text("live\n")
    missing = _orch(tmp_path, "run", "wf.yaml", "--detach", "--state-dir", "s", "--replay", "no")
    assert missing.returncode == 2
    assert "--replay no: no such folder" in missing.stderr
    assert missing.stdout == ""
    bad = _orch(tmp_path, "run", "wf.yaml", "--detach", "--state-dir", "s", "--executor", "nope")
    assert bad.returncode == 2
    assert "unknown executor 'nope'" in bad.stderr
    # nothing was started: no run is recorded
    runs = _orch(tmp_path, "runs", "--json", "--state-dir", "s")
    assert json.loads(runs.stdout) == []


def test_a_detached_run_gets_the_executor_option(tmp_path, processes):
    (tmp_path / "answer.txt").write_text("on dask\n")
    run_id = _detach(tmp_path, READS, processes, "--executor", "dask")
    assert _outputs(tmp_path, run_id) == {"said": "on dask"}
    log = (tmp_path / "s" / "logs" / f"{run_id}.log").read_text()
    assert "agent calls run on a local Dask cluster" in log

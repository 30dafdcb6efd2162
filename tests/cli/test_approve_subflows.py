"""Approvals inside sub-workflows (the `workflow` agent), decided by the real `orch approve`
from another process at `<calling phase>/<phase>`, and across a kill -9 and `orch resume`."""

from __future__ import annotations

import getpass
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.cli.test_approve import (
    asked_twice,
    env,
    finish,
    orch,
    read_until,
    start,
    stored_waiting,
)
from tests.processes import Spawned

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

CHILD = """name: child
inputs:
  draft: {type: string}
phases:
  - id: check
    agent: echo
    with: {text: "checked {{ inputs.draft }}"}
  - id: publish
    agent: echo
    depends_on: [check]
    approval: {message: "Publish {{ phases.check.output }}?"APPROVAL}
    with: {text: "published {{ inputs.draft }}"}
outputs:
  result: "{{ phases.publish.output }}"
"""

PARENT = """name: parent
phases:
  - id: draft
    agent: echo
    with: {text: v1}
  - id: release
    agent: workflow
    with: {path: child.yaml, inputs: {draft: "{{ phases.draft.output }}"}}
  - id: after
    agent: echo
    with: {text: "{{ phases.release.output.result }}"}
"""


def files(tmp_path: Path, approval: str = "", parent: str = PARENT) -> Path:
    (tmp_path / "child.yaml").write_text(CHILD.replace("APPROVAL", approval))
    path = tmp_path / "parent.yaml"
    path.write_text(parent)
    return path


def kill_while_waiting(tmp_path: Path, proc: Spawned, phase: str) -> list[dict]:
    """Read the run's events until ``phase`` waits (stored), then kill -9 it; the events."""
    seen = read_until(proc, "phase_waiting", phase)
    stored_waiting(tmp_path, seen[-1]["run_id"], phase)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.finish()
    return seen


def stored_waits(tmp_path: Path, run_id: str, phase: str, count: int) -> None:
    """Until the store holds ``count`` phase_waiting events of ``phase`` (bounded)."""
    deadline = time.monotonic() + 30
    while True:
        logs = orch(tmp_path, "logs", run_id, "--phase", phase, "--json")
        events = [json.loads(x) for x in logs.stdout.splitlines()] if logs.returncode == 0 else []
        if sum(e["event"] == "phase_waiting" for e in events) >= count:
            return
        assert time.monotonic() < deadline, f"{phase} did not wait {count} times: {logs.stdout}"
        time.sleep(0.1)


def test_a_sub_workflows_phase_waits_in_the_parent_run_and_another_shell_approves(
    tmp_path, processes
):
    proc = start(processes, tmp_path, files(tmp_path))
    seen = read_until(proc, "phase_waiting", "release/publish")
    run_id = seen[-1]["run_id"]
    assert seen[0]["event"] == "workflow_started" and seen[0]["run_id"] == run_id
    assert seen[-1]["data"]["message"] == "Publish checked v1?"
    stored_waiting(tmp_path, run_id, "release/publish")
    status = orch(tmp_path, "status", run_id)
    assert "waiting for approval: release/publish" in status.stdout
    assert f"orch approve {run_id} release/publish" in status.stdout
    as_json = json.loads(orch(tmp_path, "status", run_id, "--json").stdout)
    assert as_json["status"] == "running" and as_json["waiting"] == ["release/publish"]
    states = {p["id"]: p["state"] for p in as_json["phases"]}
    assert states["release"] == "running" and states["release/publish"] == "waiting"
    assert as_json["progress"]["total"] == 3  # the parent's own phases

    decided = orch(tmp_path, "approve", run_id, "release/publish", "--comment", "go")
    assert decided.returncode == 0, decided.stderr
    user = getpass.getuser()
    assert decided.stderr == f"phase release/publish of run {run_id} approved by {user}: go\n"

    code, events, err = finish(proc, seen)
    assert code == 0, err
    started = next(
        e for e in events if e["event"] == "phase_started" and e["phase"] == "release/publish"
    )
    assert started["run_id"] == run_id
    assert started["data"]["approval"]["decision"] == "approved"
    assert started["data"]["approval"]["comment"] == "go"
    assert events[-1]["event"] == "workflow_completed"
    done = [e["phase"] for e in events if e["event"] == "phase_completed"]
    assert done[-3:] == ["release/publish", "release", "after"]
    after = next(e for e in events if e["event"] == "phase_completed" and e["phase"] == "after")
    assert after["data"]["output"] == "published v1"
    assert "sub-run approvals: release/publish completed" in err
    logs = orch(tmp_path, "logs", run_id, "--phase", "release/publish")
    assert [line.split()[1] for line in logs.stdout.splitlines()] == [
        "phase_waiting",
        "phase_started",
        "phase_completed",
    ]


def rejected(tmp_path: Path, processes) -> tuple[str, list[dict]]:
    """A run whose release/publish another shell rejected ('not yet'): its id, events."""
    proc = start(processes, tmp_path, files(tmp_path))
    seen = read_until(proc, "phase_waiting", "release/publish")
    run_id = seen[-1]["run_id"]
    stored_waiting(tmp_path, run_id, "release/publish")
    assert orch(tmp_path, "reject", run_id, "release/publish", "-m", "not yet").returncode == 0
    code, events, err = finish(proc, seen)
    assert code == 1, err
    return run_id, events


def test_a_rejection_inside_the_sub_workflow_fails_the_calling_phase(tmp_path, processes):
    _, events = rejected(tmp_path, processes)
    failed = {e["phase"]: e["data"]["error"] for e in events if e["event"] == "phase_failed"}
    assert failed["release/publish"] == f"rejected by {getpass.getuser()}: not yet"
    assert "rejected by" in failed["release"] and "not yet" in failed["release"]


def test_resuming_after_a_rejection_inside_the_sub_workflow_asks_again(tmp_path, processes):
    run_id, _ = rejected(tmp_path, processes)
    resumed = processes.start(
        [sys.executable, "-m", "orchestrator", "resume", run_id], cwd=tmp_path, env=env(tmp_path)
    )
    stored_waits(tmp_path, run_id, "release/publish", 2)  # the sub-run asks again
    assert orch(tmp_path, "approve", run_id, "release/publish", "-m", "now").returncode == 0
    code, _, err = resumed.finish()
    assert code == 0, err
    events = asked_twice(tmp_path, run_id, "release/publish")
    assert events[1]["data"]["approval"]["comment"] == "not yet"


def test_the_wait_survives_a_kill_and_resume_honours_the_decision(tmp_path, processes):
    seen = kill_while_waiting(
        tmp_path, start(processes, tmp_path, files(tmp_path)), "release/publish"
    )
    run_id = seen[-1]["run_id"]
    status = json.loads(orch(tmp_path, "status", run_id, "--json").stdout)
    assert status["status"] == "interrupted" and status["waiting"] == ["release/publish"]
    decided = orch(tmp_path, "approve", run_id, "release/publish")
    assert decided.returncode == 0, decided.stderr
    resumed = orch(tmp_path, "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert "phase release/publish started (attempt 1; approved by" in resumed.stderr
    assert "waiting for approval" not in resumed.stderr
    status = json.loads(orch(tmp_path, "status", run_id, "--json").stdout)
    assert status["status"] == "completed" and status["outputs"] == {}
    states = {p["id"]: p["state"] for p in status["phases"]}
    assert states == {
        "draft": "completed",
        "release": "completed",
        "after": "completed",
        "release/publish": "completed",
    }


def test_a_resumed_run_goes_on_waiting_from_the_first_wait(tmp_path, processes):
    proc = start(processes, tmp_path, files(tmp_path, ", timeout: 1h"))
    seen = kill_while_waiting(tmp_path, proc, "release/publish")
    run_id, first_wait = seen[-1]["run_id"], seen[-1]["ts"]
    resumed = processes.start(
        [sys.executable, "-m", "orchestrator", "resume", run_id], cwd=tmp_path, env=env(tmp_path)
    )
    # the resumed run has taken over and its sub-run waits again (stored): until then the
    # store holds the killed run's wait, and an approval could come before the second wait
    stored_waits(tmp_path, run_id, "release/publish", 2)
    status = json.loads(orch(tmp_path, "status", run_id, "--json").stdout)
    assert status["status"] == "running" and status["waiting"] == ["release/publish"]
    assert orch(tmp_path, "approve", run_id, "release/publish").returncode == 0
    code, _, err = resumed.finish()
    assert code == 0, err
    assert "phase after completed" in err
    logs = orch(tmp_path, "logs", run_id, "--phase", "release/publish", "--json")
    waits = [json.loads(x) for x in logs.stdout.splitlines()]
    waits = [e for e in waits if e["event"] == "phase_waiting"]
    # the resumed sub-run waited again at the same address; the timeout counts from here
    assert len(waits) == 2 and waits[0]["ts"] == first_wait


def test_foreach_items_and_repeat_iterations_have_their_own_address(tmp_path, processes):
    parent = """name: parent
phases:
  - id: each
    agent: workflow
    foreach: [a, b]
    with: {path: child.yaml, inputs: {draft: "{{ item }}"}}
  - id: loop
    agent: workflow
    repeat: {until: "false", max: 2}
    with: {path: child.yaml, inputs: {draft: "round"}}
"""
    proc = start(processes, tmp_path, files(tmp_path, parent=parent))
    wanted = {"each[0]/publish", "each[1]/publish", "loop#1/publish"}
    seen: list[dict] = []
    run_id = ""
    while wanted - {e.get("phase") for e in seen if e["event"] == "phase_waiting"}:
        line = proc.line()
        assert line is not None, proc.finish()[2]
        seen.append(json.loads(line))
        run_id = seen[0]["run_id"]
    for address in sorted(wanted):
        stored_waiting(tmp_path, run_id, address)
        assert orch(tmp_path, "approve", run_id, address).returncode == 0
    # the second iteration is a new sub-run: it waits again, at its own address
    more = read_until(proc, "phase_waiting", "loop#2/publish")
    assert orch(tmp_path, "approve", run_id, "loop#2/publish").returncode == 0
    code, events, err = finish(proc, seen + more)
    assert code == 0, err
    started = {e["phase"] for e in events if e["event"] == "phase_started" and "/" in e["phase"]}
    assert started == wanted | {"loop#2/publish"}

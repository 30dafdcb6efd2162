"""Approvals decided by the real `orch approve`/`orch reject` from another process, while a
real `orch run` waits, and across a kill -9 and `orch resume`."""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import Processes, Spawned

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "workflows" / "approval-release.yaml"

GATE = """# yaml-language-server: $schema=../schemas/workflow.schema.json
name: gate
phases:
  - id: build
    agent: echo
    with: {text: built}
  - id: deploy
    agent: echo
    depends_on: [build]
    approval: {message: "Ship {{ phases.build.output }}?"APPROVAL}
    with: {text: "deployed {{ phases.build.output }}"}
  - id: after
    agent: echo
    depends_on: [deploy]
    with: {text: after}
"""


def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "ORCH_STATE_DIR": str(tmp_path / ".orch")}


def orch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `orch` in another process, as a second shell would run it."""
    return python(tmp_path, "-m", "orchestrator", *args)


def python(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """This Python in another process, in ``tmp_path`` (with its state folder)."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env(tmp_path),
        timeout=60,
    )


def start(processes: Processes, tmp_path: Path, workflow: Path) -> Spawned:
    """`orch run --events jsonl` in its own session, ended at teardown if still going."""
    return processes.start(
        [sys.executable, "-m", "orchestrator", "run", str(workflow), "--events", "jsonl"],
        cwd=tmp_path,
        env=env(tmp_path),
    )


def gate(tmp_path: Path, approval: str = "") -> Path:
    path = tmp_path / "gate.yaml"
    path.write_text(GATE.replace("APPROVAL", approval))
    return path


def read_until(proc: Spawned, event: str, phase: str) -> list[dict]:
    """The run's events up to and including ``event`` of ``phase`` (each line within a bound)."""
    seen: list[dict] = []
    while True:
        line = proc.line()
        if line is None:
            code, _, err = proc.finish()
            raise AssertionError(f"orch ended early: {code} {err}")
        seen.append(json.loads(line))
        if seen[-1]["event"] == event and seen[-1].get("phase") == phase:
            return seen


def stored_waiting(tmp_path: Path, run_id: str, phase: str, status: str | None = None) -> None:
    """Until the store says ``phase`` waits (printed events may be ahead of the store),
    and, given ``status``, that the run has that status (a resumed run's process has
    taken the run over: before, the killed run's wait is still what the store holds)."""
    deadline = time.monotonic() + 30
    while True:
        shown = orch(tmp_path, "status", run_id, "--json")
        if shown.returncode == 0:
            data = json.loads(shown.stdout)
            if phase in data.get("waiting", ()) and status in (None, data["status"]):
                return
        assert time.monotonic() < deadline, f"{phase} never waited: {shown.stdout}"
        time.sleep(0.1)


def finish(proc: Spawned, before: list[dict]) -> tuple[int, list[dict], str]:
    code, rest, err = proc.finish()
    return code, before + [json.loads(x) for x in rest], err


def test_a_run_waits_until_another_shell_approves(tmp_path, processes):
    proc = start(processes, tmp_path, gate(tmp_path))
    seen = read_until(proc, "phase_waiting", "deploy")
    run_id = seen[-1]["run_id"]
    assert seen[-1]["data"]["message"] == "Ship built?"
    status = orch(tmp_path, "status", run_id)
    assert "waiting for approval: deploy" in status.stdout
    assert f"orch approve {run_id} deploy" in status.stdout
    as_json = json.loads(orch(tmp_path, "status", run_id, "--json").stdout)
    assert as_json["status"] == "running"
    assert as_json["waiting"] == ["deploy"]
    assert {p["id"]: p["state"] for p in as_json["phases"]}["deploy"] == "waiting"

    decided = orch(tmp_path, "approve", run_id, "deploy", "--comment", "ship it")
    assert decided.returncode == 0, decided.stderr
    user = getpass.getuser()
    assert decided.stderr == f"phase deploy of run {run_id} approved by {user}: ship it\n"

    code, events, err = finish(proc, seen)
    assert code == 0, err
    started = next(e for e in events if e["event"] == "phase_started" and e["phase"] == "deploy")
    assert started["data"]["approval"]["decision"] == "approved"
    assert started["data"]["approval"]["who"] == user
    assert started["data"]["approval"]["comment"] == "ship it"
    assert events[-1]["event"] == "workflow_completed"
    done = [e["phase"] for e in events if e["event"] == "phase_completed"]
    assert done == ["build", "deploy", "after"]
    # the decision is final: a second one is refused, naming who decided
    again = orch(tmp_path, "reject", run_id, "deploy")
    assert again.returncode == 2
    assert f"was already approved by {user} at " in again.stderr
    ended = orch(tmp_path, "approve", run_id, "build")
    assert ended.returncode == 2
    assert f"run {run_id} has already ended (completed)" in ended.stderr


def test_a_rejection_fails_the_phase_and_the_run(tmp_path, processes):
    proc = start(processes, tmp_path, gate(tmp_path))
    seen = read_until(proc, "phase_waiting", "deploy")
    run_id = seen[-1]["run_id"]
    decided = orch(tmp_path, "reject", run_id, "deploy", "-m", "freeze until Monday")
    assert decided.returncode == 0, decided.stderr
    late = orch(tmp_path, "approve", run_id, "deploy")
    assert late.returncode == 2
    assert f"was already rejected by {getpass.getuser()} at " in late.stderr
    code, events, err = finish(proc, seen)
    assert code == 1
    failed = next(e for e in events if e["event"] == "phase_failed")
    assert failed["phase"] == "deploy"
    assert failed["data"]["error"] == f"rejected by {getpass.getuser()}: freeze until Monday"
    assert "phase 'deploy' failed: rejected by" in err
    skipped = [e["phase"] for e in events if e["event"] == "phase_skipped"]
    assert skipped == ["after"]


def test_independent_phases_keep_running_while_one_waits(tmp_path, processes):
    proc = start(processes, tmp_path, RELEASE)
    seen = read_until(proc, "phase_completed", "release_notes")
    kinds = [(e["event"], e.get("phase")) for e in seen]
    # the notes (0.2s of work) completed while deploy was waiting
    assert kinds.index(("phase_waiting", "deploy")) < kinds.index(
        ("phase_completed", "release_notes")
    )
    run_id = seen[0]["run_id"]
    assert orch(tmp_path, "approve", run_id, "deploy").returncode == 0
    code, events, err = finish(proc, seen)
    assert code == 0, err
    outputs = events[-1]["data"]["outputs"]
    assert outputs == {"deployed": "deployed artifact-1.4.0.tar.gz", "notes": "notes for 1.4.0"}


def test_the_wait_survives_a_kill_and_resume_honours_a_decision_made_meanwhile(tmp_path, processes):
    proc = start(processes, tmp_path, gate(tmp_path))
    seen = read_until(proc, "phase_waiting", "deploy")
    run_id = seen[-1]["run_id"]
    stored_waiting(tmp_path, run_id, "deploy")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.finish()
    runs = json.loads(orch(tmp_path, "runs", "--json").stdout)
    assert runs[0]["status"] == "interrupted"
    # nobody runs it now: the decision is recorded and waits for the resume
    decided = orch(tmp_path, "approve", run_id, "deploy", "-m", "after the crash")
    assert decided.returncode == 0, decided.stderr
    resumed = orch(tmp_path, "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert f"phase deploy started (attempt 1; approved by {getpass.getuser()}" in resumed.stderr
    assert "waiting for approval" not in resumed.stderr  # decided already: no new wait
    status = json.loads(orch(tmp_path, "status", run_id, "--json").stdout)
    assert status["status"] == "completed"
    assert {p["id"]: p["state"] for p in status["phases"]} == {
        "build": "completed",
        "deploy": "completed",
        "after": "completed",
    }


def test_a_resumed_run_goes_on_waiting(tmp_path, processes):
    proc = start(processes, tmp_path, gate(tmp_path))
    seen = read_until(proc, "phase_waiting", "deploy")
    run_id = seen[-1]["run_id"]
    stored_waiting(tmp_path, run_id, "deploy")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.finish()
    resumed = processes.start(
        [sys.executable, "-m", "orchestrator", "resume", run_id], cwd=tmp_path, env=env(tmp_path)
    )
    stored_waiting(tmp_path, run_id, "deploy", status="running")  # the resumed run waits
    status = json.loads(orch(tmp_path, "status", run_id, "--json").stdout)
    assert status["status"] == "running" and status["waiting"] == ["deploy"]
    assert orch(tmp_path, "approve", run_id, "deploy").returncode == 0
    code, _, err = resumed.finish()
    assert code == 0, err
    assert "phase after completed" in err


@pytest.mark.parametrize(
    ("on_timeout", "code", "phase_end"),
    [("reject", 1, "phase_failed"), ("approve", 0, "phase_completed")],
)
def test_a_timeout_decides_as_configured(tmp_path, on_timeout, code, phase_end, processes):
    wf = gate(tmp_path, f", timeout: 300ms, on_timeout: {on_timeout}")
    proc = start(processes, tmp_path, wf)
    returncode, events, err = finish(proc, [])
    assert returncode == code, err
    end = next(e for e in events if e.get("phase") == "deploy" and e["event"] == phase_end)
    if on_timeout == "reject":
        assert end["data"]["error"] == (
            "no decision within 300ms: the approval timed out (on_timeout: reject)"
        )
    else:
        started = next(
            e for e in events if e["event"] == "phase_started" and e["phase"] == "deploy"
        )
        assert started["data"]["approval"]["decision"] == "timed out (approve)"
        # the line reads as a sentence (it was `timed out (approve) by timeout`)
        assert "phase deploy started (attempt 1; approved: nobody decided within the timeout)" in (
            err
        )


def test_deciding_what_does_not_wait_is_refused(tmp_path, processes):
    wf = gate(tmp_path)
    proc = start(processes, tmp_path, wf)
    seen = read_until(proc, "phase_waiting", "deploy")
    run_id = seen[-1]["run_id"]
    not_waiting = orch(tmp_path, "approve", run_id, "after")
    assert not_waiting.returncode == 2
    assert not_waiting.stderr.startswith(
        f"error: phase 'after' of run {run_id} is not waiting for approval (it is pending)"
    )
    unknown = orch(tmp_path, "approve", run_id, "deplyo")
    assert unknown.returncode == 2
    assert f"run {run_id} has no phase 'deplyo'" in unknown.stderr
    no_run = orch(tmp_path, "reject", "nosuchrun", "deploy")
    assert no_run.returncode == 2
    assert "no run 'nosuchrun'" in no_run.stderr
    assert "Traceback" not in not_waiting.stderr + unknown.stderr + no_run.stderr


def test_resuming_a_rejected_run_asks_again_and_keeps_the_rejection(tmp_path, processes):
    user = getpass.getuser()
    proc = start(processes, tmp_path, gate(tmp_path))
    seen = read_until(proc, "phase_waiting", "deploy")
    run_id = seen[-1]["run_id"]
    assert orch(tmp_path, "reject", run_id, "deploy", "-m", "no").returncode == 0
    code, _, err = finish(proc, seen)
    assert code == 1
    assert f"resume it: orch resume {run_id}" in err  # the hint is true:
    refused = orch(tmp_path, "approve", run_id, "deploy")
    assert refused.returncode == 2
    assert f"was already rejected by {user}" in refused.stderr
    assert f"hint: `orch resume {run_id}` asks again" in refused.stderr
    resumed = processes.start(
        [sys.executable, "-m", "orchestrator", "resume", run_id], cwd=tmp_path, env=env(tmp_path)
    )
    stored_waiting(tmp_path, run_id, "deploy", status="running")  # a new wait
    approved = orch(tmp_path, "approve", run_id, "deploy", "-m", "ok now")
    assert approved.returncode == 0, approved.stderr
    code, _, err = resumed.finish()
    assert code == 0, err
    assert f"phase deploy started (attempt 1; approved by {user}: ok now)" in err
    # nothing earlier is lost: the rejection (who, when, why) stays in the history
    events = asked_twice(tmp_path, run_id, "deploy")
    rejection = events[1]["data"]
    assert rejection["error"] == f"rejected by {user}: no"
    assert rejection["approval"]["decision"] == "rejected"
    assert rejection["approval"]["who"] == user
    assert rejection["approval"]["comment"] == "no"
    assert isinstance(rejection["approval"]["at"], float)
    approval = events[3]["data"]["approval"]
    assert (approval["decision"], approval["comment"]) == ("approved", "ok now")
    assert approval["at"] > rejection["approval"]["at"]
    assert "rejected by" in orch(tmp_path, "logs", run_id, "--phase", "deploy").stdout


def stored_events(tmp_path: Path, run_id: str, phase: str, *kinds: str) -> list[dict]:
    """The phase's events as `orch logs --json` reads them, asserted to be of ``kinds``."""
    logs = orch(tmp_path, "logs", run_id, "--phase", phase, "--json")
    events = [json.loads(line) for line in logs.stdout.splitlines()]
    assert [e["event"] for e in events] == list(kinds)
    return events


def asked_twice(tmp_path: Path, run_id: str, phase: str) -> list[dict]:
    """The phase's stored events: refused, asked again, approved and run (asserted)."""
    return stored_events(
        tmp_path, run_id, phase, *WAITED, "phase_waiting", "phase_started", "phase_completed"
    )


WAITED = ("phase_waiting", "phase_failed")  # a wait that ended in a refusal


def test_resuming_after_a_timeout_that_rejects_waits_anew(tmp_path, processes):
    wf = gate(tmp_path, ", timeout: 300ms, on_timeout: reject")
    first, events, err = finish(start(processes, tmp_path, wf), [])
    assert first == 1, err
    run_id = events[0]["run_id"]
    failed = next(e for e in events if e["event"] == "phase_failed")
    assert failed["data"]["approval"]["decision"] == "timed out (reject)"
    resumed = orch(tmp_path, "resume", run_id)
    assert resumed.returncode == 1  # times out again, after a wait of its own
    mine = stored_events(tmp_path, run_id, "deploy", *WAITED, *WAITED)
    # the second wait began after the first one's timeout, not at the first wait
    assert mine[2]["data"]["since"] >= mine[1]["ts"] > mine[0]["data"]["since"]
    assert mine[3]["ts"] - mine[2]["data"]["since"] >= 0.3


SLOTS = """
name: slots
max_parallel: MAX
phases:
  - id: gate
    agent: echo
    approval: {message: "go?", timeout: 60s, on_timeout: approve}
    with: {text: gated}
  - id: gate2
    agent: echo
    approval: {message: "go too?", timeout: 60s, on_timeout: approve}
    with: {text: gated too}
  - id: other
    agent: shell
    with: {command: "while [ ! -f go ]; do sleep 0.05; done; echo other"}
"""


def test_a_waiting_approval_holds_no_max_parallel_slot(tmp_path, processes):
    """max_parallel 1, two phases waiting for approval and an independent one: the
    independent one runs while both wait (they gave their slot back), and an approved
    phase takes a slot again before it goes on (it starts after `other` ended)."""
    wf = tmp_path / "slots.yaml"
    wf.write_text(SLOTS.replace("MAX", "1"))
    proc = start(processes, tmp_path, wf)
    seen = read_until(proc, "phase_started", "other")
    run_id = seen[0]["run_id"]
    kinds = [(e["event"], e.get("phase")) for e in seen]
    # both gates wait (the second started in the slot the first gave back), then other
    assert kinds.index(("phase_waiting", "gate")) < kinds.index(("phase_waiting", "gate2"))
    assert kinds.index(("phase_waiting", "gate2")) < kinds.index(("phase_started", "other"))
    stored_waiting(tmp_path, run_id, "gate2")
    assert orch(tmp_path, "approve", run_id, "gate").returncode == 0
    # the approved gate waits for the slot `other` holds: give the bug a chance to show
    time.sleep(1)
    (tmp_path / "go").touch()
    seen = read_until(proc, "phase_completed", "gate")
    kinds = [(e["event"], e.get("phase")) for e in seen]
    assert kinds.index(("phase_completed", "other")) < kinds.index(("phase_started", "gate"))
    assert orch(tmp_path, "approve", run_id, "gate2").returncode == 0
    code, events, err = finish(proc, seen)
    assert code == 0, err
    # never more than max_parallel phases ran (started, not ended) at once
    running: set[str] = set()
    for e in events:
        if e["event"] == "phase_started":
            running.add(e["phase"])
            assert len(running) <= 1, running
        elif e["event"] in ("phase_completed", "phase_failed"):
            running.discard(e["phase"])


def test_a_foreach_phase_approval_message_cannot_name_the_item(tmp_path):
    """A foreach phase asks for its approval once, before its items: validate says so
    (it used to pass validate and fail at run time with undefined name 'item')."""
    wf = tmp_path / "each.yaml"
    wf.write_text(
        "name: each\nphases:\n  - id: ship\n    foreach: [a, b]\n    agent: echo\n"
        '    approval: {message: "go {{ item }}?"}\n    with: {text: "{{ item }}"}\n'
    )
    for command in ("validate", "run"):
        refused = orch(tmp_path, command, str(wf))
        said = refused.stdout + refused.stderr  # validate reports on stdout
        assert refused.returncode == 2, said
        assert (
            f"{wf}:6:25: phases[0].approval.message: 'item' is not defined here:"
            " a foreach phase asks for its approval once, before its items"
        ) in said
        assert "hint: name the whole list instead" in said
    wf.write_text(wf.read_text().replace("go {{ item }}?", "ship {{ ['a', 'b'] | length }}?"))
    assert orch(tmp_path, "validate", str(wf)).returncode == 0


def test_a_run_time_error_in_the_approval_message_is_reported_at_its_key(tmp_path):
    wf = tmp_path / "msg.yaml"
    wf.write_text(
        "name: msg\nphases:\n  - id: a\n    agent: echo\n    with: {text: hi}\n"
        "  - id: ask\n    agent: echo\n    approval:\n"
        '      message: "go {{ phases.a.output.nope.deeper }}?"\n    with: {text: hi}\n'
    )
    failed = orch(tmp_path, "run", str(wf))
    assert failed.returncode == 1
    assert f"phase 'ask' failed: approval.message: {wf}:9:16: 'nope' is not defined" in (
        failed.stderr
    )


def test_runs_and_status_say_who_waits_and_who_decided(tmp_path, processes):
    user = getpass.getuser()
    proc = start(processes, tmp_path, gate(tmp_path))
    seen = read_until(proc, "phase_waiting", "deploy")
    run_id = seen[-1]["run_id"]
    stored_waiting(tmp_path, run_id, "deploy")
    runs = orch(tmp_path, "runs")
    assert "running (waiting: deploy)" in runs.stdout  # not just `running`
    rows = json.loads(orch(tmp_path, "runs", "--json").stdout)
    assert (rows[0]["status"], rows[0]["waiting"]) == ("running", ["deploy"])
    assert orch(tmp_path, "approve", run_id, "deploy", "-m", "ship it").returncode == 0
    code, _, err = finish(proc, seen)
    assert code == 0, err
    assert "(waiting" not in orch(tmp_path, "runs").stdout
    assert json.loads(orch(tmp_path, "runs", "--json").stdout)[0]["waiting"] == []
    status = orch(tmp_path, "status", run_id)
    deploy = next(line for line in status.stdout.splitlines() if line.startswith("deploy "))
    assert f"approved by {user}: ship it" in deploy
    phases = json.loads(orch(tmp_path, "status", run_id, "--json").stdout)["phases"]
    decided = {p["id"]: p["decision"] for p in phases}
    assert decided["build"] is None
    assert decided["deploy"]["decision"] == "approved"
    assert (decided["deploy"]["who"], decided["deploy"]["comment"]) == (user, "ship it")
    logs = orch(tmp_path, "logs", run_id, "--phase", "deploy").stdout
    assert f"agent echo; approved by {user}: ship it" in logs


def test_an_approval_under_run_sync_names_the_python_way_to_get_a_store(tmp_path):
    wf = gate(tmp_path)
    script = (
        "import orchestrator\n"
        f"plan = orchestrator.compile_plan(orchestrator.load_workflow({str(wf)!r}))\n"
        "result = orchestrator.run_sync(plan)\n"
        "print(result.phases['deploy'].error)\n"
    )
    ran = python(tmp_path, "-c", script)
    assert ran.returncode == 0, ran.stderr
    assert "the run has no state store to receive one" in ran.stdout
    assert "`orch run`, or from Python with `orchestrator.start(...)`" in ran.stdout


BUSY_AGENT = """
name: busy
agents:
  ops: {type: shell, max_concurrency: 1}
phases:
  - id: gate
    agent: ops
    approval: {message: "go?", timeout: 60s, on_timeout: approve}
    with: {command: "echo gated"}
  - id: other
    agent: ops
    with: {command: "echo other"}
"""


def test_a_waiting_approval_does_not_count_against_its_agents_max_concurrency(tmp_path, processes):
    wf = tmp_path / "busy.yaml"
    wf.write_text(BUSY_AGENT)
    proc = start(processes, tmp_path, wf)
    seen = read_until(proc, "phase_completed", "other")  # ran while gate waited
    kinds = [(e["event"], e.get("phase")) for e in seen]
    assert kinds.index(("phase_waiting", "gate")) < kinds.index(("phase_started", "other"))
    assert ("phase_started", "gate") not in kinds
    assert orch(tmp_path, "approve", seen[0]["run_id"], "gate").returncode == 0
    code, events, err = finish(proc, seen)
    assert code == 0, err
    assert [e["phase"] for e in events if e["event"] == "phase_completed"] == ["other", "gate"]


SLOT = """
name: slot
max_parallel: 1
phases:
  - id: gate
    agent: echo
    approval: {message: "Go?"}
    with: {text: gone}
  - id: slow
    agent: shell
    with: {command: "while [ ! -f go ]; do sleep 0.05; done; echo slow"}
"""


def test_an_approved_phase_waiting_for_a_slot_asks_no_one(tmp_path, processes):
    (tmp_path / "slot.yaml").write_text(SLOT)
    proc = start(processes, tmp_path, tmp_path / "slot.yaml")
    seen = read_until(proc, "phase_started", "slow")  # slow holds the one slot until ./go
    run_id = seen[-1]["run_id"]
    stored_waiting(tmp_path, run_id, "gate")
    assert orch(tmp_path, "approve", run_id, "gate").returncode == 0

    runs = orch(tmp_path, "runs")
    assert "running" in runs.stdout and "waiting: gate" not in runs.stdout
    status = orch(tmp_path, "status", run_id)
    assert "waiting for approval" not in status.stdout
    assert f"orch approve {run_id} gate" not in status.stdout
    row = next(line for line in status.stdout.splitlines() if line.split()[:1] == ["gate"])
    assert "approved, waiting for a slot" in row
    as_json = json.loads(orch(tmp_path, "status", run_id, "--json").stdout)
    assert as_json["waiting"] == []
    assert json.loads(orch(tmp_path, "runs", "--json").stdout)[0]["waiting"] == []

    (tmp_path / "go").touch()
    code, events, err = finish(proc, seen)
    assert code == 0, err
    done = [e["phase"] for e in events if e["event"] == "phase_completed"]
    assert done == ["slow", "gate"]

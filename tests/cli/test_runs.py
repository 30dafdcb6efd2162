"""`orch runs`, `status`, `logs`, `cancel`, `resume` and `cache clear` through the real command."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.events import Event
from orchestrator.state.sqlite import open_store
from tests.processes import holds_open
from tests.servers import FakeOpenAI

runner = CliRunner()


def orch(*args, state_dir):
    return runner.invoke(app, [*args, "--state-dir", str(state_dir)])


def stored(state_dir, read):
    """What ``read(store)`` finds in the state folder; the store is closed after."""
    with open_store(state_dir) as store:
        return read(store)


def _record(state_dir, events):
    store = open_store(state_dir)

    async def go():
        for e in events:
            await store.record(e)

    asyncio.run(go())
    store.close()


def _history(state_dir, run="run-1", t0=None):
    t0 = t0 or time.time() - 10
    _record(
        state_dir,
        [
            Event(
                "workflow_started",
                run,
                t0,
                data={
                    "workflow": "wf",
                    "path": "wf.yaml",
                    "phases": ["a", "b"],
                    "fingerprints": {},
                    "inputs": {},
                },
            ),
            Event("phase_started", run, t0 + 1, "a", 1, {"agent": "echo"}),
            Event("phase_stream", run, t0 + 1.5, "a", 1, {"text": "working"}),
            Event(
                "phase_completed",
                run,
                t0 + 2,
                "a",
                1,
                {"status": "completed", "output": "A", "duration": 1.0, "attempts": 1},
            ),
            Event("phase_started", run, t0 + 2, "b", 1, {"agent": "fail"}),
            Event(
                "phase_failed",
                run,
                t0 + 3,
                "b",
                1,
                {"status": "failed", "error": "it broke", "attempts": 1},
            ),
            Event(
                "workflow_failed",
                run,
                t0 + 3.5,
                data={"status": "failed", "error": "phase 'b' failed"},
            ),
        ],
    )


@pytest.mark.handmade_events  # _history() writes hand-made events
def test_runs_lists_id_workflow_status_started_duration(tmp_path):
    _history(tmp_path, "run-1")
    res = orch("runs", state_dir=tmp_path)
    assert res.exit_code == 0, res.output
    header, row = [line for line in res.output.splitlines() if line.strip()][0::2][:2]
    for column in ("id", "workflow", "status", "started", "duration"):
        assert column in header
    assert "run-1" in row and "wf" in row and "failed" in row and "3.5s" in row
    data = json.loads(orch("runs", "--json", state_dir=tmp_path).output)
    assert [(r["id"], r["status"], r["duration"]) for r in data] == [("run-1", "failed", 3.5)]


def test_runs_on_an_empty_store(tmp_path):
    res = orch("runs", state_dir=tmp_path)
    assert res.exit_code == 0 and "no runs recorded yet" in res.output


@pytest.mark.handmade_events  # _history() writes hand-made events
def test_status_shows_state_progress_and_each_phase(tmp_path):
    _history(tmp_path)
    res = orch("status", "run-1", state_dir=tmp_path)
    assert res.exit_code == 0, res.output
    # a failed phase is not "done" work: 2/2 phases done read as a success
    assert "status: failed" in res.output
    assert "progress: 1/2 phases completed (1 failed)" in res.output
    lines = {line.split()[0]: line for line in res.output.splitlines() if line.strip()}
    assert "completed" in lines["a"] and "1s" in lines["a"].split()
    assert "failed" in lines["b"] and "it broke" in lines["b"]
    info = json.loads(orch("status", "run", "--json", state_dir=tmp_path).output)  # prefix
    assert info["status"] == "failed"
    assert info["cancelled_by"] is None  # only a cancelled run has who cancelled it
    assert info["progress"] == {"done": 2, "completed": 1, "total": 2}
    assert [(p["id"], p["state"], p["attempts"]) for p in info["phases"]] == [
        ("a", "completed", 1),
        ("b", "failed", 1),
    ]


@pytest.mark.handmade_events  # _history() writes hand-made events
def test_unknown_run_is_exit_2_with_a_hint(tmp_path):
    _history(tmp_path)
    for cmd in ("status", "logs", "resume", "cancel"):
        res = orch(cmd, "nope", state_dir=tmp_path)
        assert res.exit_code == 2, (cmd, res.output)
        assert "no run 'nope'" in res.output and "orch runs" in res.output
        assert "Traceback" not in res.output


@pytest.mark.handmade_events  # _history() writes hand-made events
def test_logs_prints_events_and_filters_by_phase(tmp_path):
    _history(tmp_path)
    res = orch("logs", "run-1", state_dir=tmp_path)
    kinds = [line.split()[1] for line in res.output.splitlines()]
    assert kinds == [
        "workflow_started",
        "phase_started",
        "phase_stream",
        "phase_completed",
        "phase_started",
        "phase_failed",
        "workflow_failed",
    ]
    assert "working" in res.output and "it broke" in res.output
    res = orch("logs", "run-1", "--phase", "b", "--json", state_dir=tmp_path)
    events = [json.loads(line) for line in res.output.splitlines()]
    assert [(e["event"], e["phase"]) for e in events] == [
        ("phase_started", "b"),
        ("phase_failed", "b"),
    ]
    res = orch("logs", "run-1", "--phase", "bb", state_dir=tmp_path)
    assert res.exit_code == 2 and "no phase 'bb'" in res.output and "did you mean 'b'" in res.output


@pytest.mark.handmade_events  # _history() writes hand-made events
def test_logs_follow_stops_when_the_run_ends(tmp_path):
    _history(tmp_path)
    res = orch("logs", "run-1", "--follow", state_dir=tmp_path)
    assert res.exit_code == 0 and res.output.splitlines()[-1].split()[1] == "workflow_failed"


@pytest.mark.handmade_events  # _history() writes hand-made events
def test_a_dead_owner_shows_as_interrupted_and_cancel_records_it(tmp_path):
    code = (
        "import asyncio, os, sys\n"
        "from orchestrator.events import Event\n"
        "from orchestrator.state.sqlite import open_store\n"
        "s = open_store(sys.argv[1])\n"
        "asyncio.run(s.record(Event('workflow_started', 'dead', 1.0, data={'workflow': 'w',"
        " 'phases': ['a']})))\n"
        "asyncio.run(s.record(Event('phase_started', 'dead', 2.0, 'a', 1)))\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    res = orch("status", "dead", state_dir=tmp_path)
    assert "status: interrupted" in res.output and "orch resume dead" in res.output
    res = orch("cancel", "dead", state_dir=tmp_path)
    assert res.exit_code == 0 and "recorded as cancelled" in res.output
    info = json.loads(orch("status", "dead", "--json", state_dir=tmp_path).output)
    assert info["status"] == "cancelled" and info["phases"][0]["state"] == "cancelled"
    assert info["cancelled_by"] == "SIGTERM"  # as `orch cancel` of a live run: exit 143
    assert orch("wait", "dead", state_dir=tmp_path).exit_code == 143
    res = orch("cancel", "dead", state_dir=tmp_path)  # refused: exit 2, as bad usage
    assert res.exit_code == 2
    assert "error: run dead has already ended (cancelled); nothing to cancel" in res.output


def test_cache_clear_says_how_many(tmp_path):
    store = open_store(tmp_path)
    asyncio.run(store.cache_put("k", 1, {}, now=time.time(), ttl=None))
    store.close()
    res = orch("cache", "clear", state_dir=tmp_path)
    assert res.exit_code == 0 and "cleared 1 cached result" in res.output
    assert stored(tmp_path, lambda s: s.cache_get("k")) is None


@pytest.mark.handmade_events  # _history() writes hand-made events
def test_state_dir_comes_from_the_environment(tmp_path, monkeypatch):
    _history(tmp_path)
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path))
    res = runner.invoke(app, ["runs"])
    assert "run-1" in res.output


def test_a_corrupt_state_file_is_a_clear_error(tmp_path):
    (tmp_path / "state.db").write_bytes(b"\x00garbage" * 500)
    res = orch("runs", state_dir=tmp_path)  # exit 2, as `orch run` on the same store
    assert res.exit_code == 2 and "state.db" in res.output and "Traceback" not in res.output
    wf = tmp_path / "wf.yaml"
    wf.write_text("name: w\nphases:\n  - {id: a, agent: echo, with: {text: A}}\n")
    ran = runner.invoke(app, ["run", str(wf), "--state-dir", str(tmp_path)])
    assert ran.exit_code == 2 and "state.db" in ran.output
    assert os.path.getsize(tmp_path / "state.db") == 4000  # never "repaired" by deleting


# -- with real runs ---------------------------------------------------------------------

ORCH = [sys.executable, "-m", "orchestrator"]

LONG = """
name: long
phases:
  - id: a
    agent: echo
    with: {text: A, ledger: "LEDGER"}
    compensate: {agent: echo, with: {text: "undo {{ phases.a.output }}", ledger: "LEDGER"}}
  - {id: b, agent: sleep, depends_on: [a], with: {seconds: 60, ledger: "LEDGER"}}
  - {id: c, agent: echo, depends_on: [b], with: {text: C}}
"""


def _ledger(path):
    return [line.split()[1] for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for(predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _cli(*args, state_dir):
    return subprocess.run(
        [*ORCH, *args, "--state-dir", str(state_dir)], capture_output=True, text=True, timeout=60
    )


def _start_long(tmp_path, **streams):
    """`orch run` of LONG (b sleeps a minute) in the background: (process, ledger, state)."""
    ledger = tmp_path / "ledger"
    wf = tmp_path / "long.yaml"
    wf.write_text(LONG.replace("LEDGER", str(ledger)))
    state = tmp_path / "state"
    proc = subprocess.Popen([*ORCH, "run", str(wf), "--state-dir", str(state)], **streams)
    return proc, ledger, state


def test_status_logs_resume_and_cancel_against_a_live_run(tmp_path):
    proc, ledger, state = _start_long(
        tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    follower = None
    try:
        _wait_for(lambda: _ledger(ledger) == ["a", "b"], "phase b to start")
        run_id = stored(state, lambda s: s.list_runs())[0].id
        # orch status while it runs: running, 1 of 3 done, b running now
        info = json.loads(orch("status", run_id, "--json", state_dir=state).output)
        assert info["status"] == "running"
        assert info["progress"] == {"done": 1, "completed": 1, "total": 3}
        assert info["current"] == ["b"] and info["owner_pid"] == proc.pid
        text = orch("status", run_id, state_dir=state).output
        assert "status: running" in text and "running now: b" in text
        assert "running" in orch("runs", state_dir=state).output
        follower = subprocess.Popen(
            [*ORCH, "logs", run_id, "--follow", "--state-dir", str(state)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # D4: a second owner is refused at once, naming the live one
        res = _cli("resume", run_id, state_dir=state)
        assert res.returncode == 2  # refused, as every refused operation on a run
        assert f"still running in process {proc.pid}" in res.stderr
        assert f"orch cancel {run_id}" in res.stderr
        # orch cancel from this other process: the run stops cleanly (as on SIGTERM, exit 143)
        res = _cli("cancel", run_id, state_dir=state)
        assert res.returncode == 0, res.stderr
        assert f"asked process {proc.pid} to cancel run {run_id}" in res.stderr
        assert f"run {run_id} cancelled" in res.stderr
        assert proc.wait(timeout=30) == 143
        out, _ = follower.communicate(timeout=30)  # --follow ends with the run
        assert follower.returncode == 0
        assert out.splitlines()[-1].split()[1] == "workflow_cancelled"
    finally:
        for p in (proc, follower):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
            if p is not None:
                p.stdout.close()
                p.stderr.close()
    info = json.loads(orch("status", run_id, "--json", state_dir=state).output)
    states = {p["id"]: p["state"] for p in info["phases"]}
    assert info["status"] == "cancelled"
    assert states == {"a": "completed", "b": "cancelled", "c": "skipped"}
    assert _ledger(ledger) == ["a", "b", "a"]  # the cancel ran a's compensation
    assert info["phases"][0]["compensated"] is True


def test_logs_follow_says_when_the_runs_process_died(tmp_path):
    # kill -9 of the run's process: --follow ends as orch wait does (exit 1, the resume
    # hint), not silently with 0 as if the run had ended
    proc, ledger, state = _start_long(
        tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    follower = None
    try:
        _wait_for(lambda: _ledger(ledger) == ["a", "b"], "phase b to start")
        run_id = stored(state, lambda s: s.list_runs())[0].id
        follower = subprocess.Popen(
            [*ORCH, "logs", run_id, "--follow", "--state-dir", str(state)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert follower.stdout is not None
        for line in follower.stdout:  # following: b's start is printed
            if "phase_started" in line and " b" in line:
                break
        # Ctrl-C on a waiter stops the waiting and says the run goes on
        waiter = subprocess.Popen(
            [*ORCH, "wait", run_id, "--state-dir", str(state)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        holds_open(waiter.pid, state / "state.db")  # waiting, not loading orch
        waiter.send_signal(signal.SIGINT)
        _, said = waiter.communicate(timeout=60)
        assert waiter.returncode == 124
        assert said == f"stopped waiting; run {run_id} goes on (`orch status {run_id}`)\n"
        assert proc.poll() is None
        proc.kill()
        proc.wait()
        out, err = follower.communicate(timeout=60)
        assert follower.returncode == 1
        assert f"run {run_id} interrupted (its process died)" in err
        assert f"orch resume {run_id}" in err
    finally:
        for p in (proc, follower):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        if follower is not None:
            follower.stdout.close()
            follower.stderr.close()


CHAIN = """
name: chain
phases:
  - {id: a, agent: echo, with: {text: A, ledger: "LEDGER"}}
  - {id: b, agent: echo, depends_on: [a], with: {text: B, ledger: "LEDGER"}}
  - {id: side, agent: echo, with: {text: S, ledger: "LEDGER"}}
  - {id: c, agent: fail, depends_on: [b], with: {message: down}}
outputs:
  c: "{{ phases.c.output }}"
"""


def test_resume_reruns_only_what_did_not_complete(tmp_path):
    ledger = tmp_path / "ledger"
    wf = tmp_path / "chain.yaml"
    wf.write_text(CHAIN.replace("LEDGER", str(ledger)))
    assert runner.invoke(app, ["run", str(wf), "--state-dir", str(tmp_path)]).exit_code == 1
    run_id = stored(tmp_path, lambda s: s.list_runs())[0].id
    res = orch("resume", run_id, state_dir=tmp_path)
    assert res.exit_code == 1  # c fails again
    assert f"resuming run {run_id}: 3 of 4 phases completed, 1 to run" in res.output
    assert sorted(_ledger(ledger)) == ["a", "b", "side"]  # nothing completed ran twice
    # the fixed workflow: refused as changed, naming the phase; forced, only c runs
    wf.write_text(
        CHAIN.replace("LEDGER", str(ledger))
        .replace("agent: fail", "agent: echo")
        .replace("{message: down}", '{text: C, ledger: "' + str(ledger) + '"}')
    )
    res = orch("resume", run_id, state_dir=tmp_path)
    assert res.exit_code == 2
    assert "phase c changed" in res.output and "--force" in res.output
    res = orch("resume", run_id, "--force", state_dir=tmp_path)
    assert res.exit_code == 0, res.output
    assert sorted(_ledger(ledger)) == ["a", "b", "c", "side"]
    assert json.loads(res.stdout) == {"c": "C"}
    run = stored(tmp_path, lambda s: s.get_run(run_id))
    assert (run.status, run.outputs, run.resumes) == ("completed", {"c": "C"}, 2)
    res = orch("resume", run_id, state_dir=tmp_path)
    assert res.exit_code == 0 and "already completed; nothing to resume" in res.output


def test_forced_resume_reruns_a_changed_phase_and_its_downstream(tmp_path):
    ledger = tmp_path / "ledger"
    wf = tmp_path / "chain.yaml"
    wf.write_text(CHAIN.replace("LEDGER", str(ledger)))
    assert runner.invoke(app, ["run", str(wf), "--state-dir", str(tmp_path)]).exit_code == 1
    run_id = stored(tmp_path, lambda s: s.list_runs())[0].id
    # D5: edit a completed phase (b); c still fails, so the resumed run fails again
    wf.write_text(CHAIN.replace("LEDGER", str(ledger)).replace("text: B", "text: B2"))
    res = orch("resume", run_id, state_dir=tmp_path)
    assert res.exit_code == 2 and "phase b changed" in res.output
    assert sorted(_ledger(ledger)) == ["a", "b", "side"]  # refused: nothing ran
    res = orch("resume", run_id, "--force", state_dir=tmp_path)
    assert "changed, with their downstream: b, c" in res.output
    assert sorted(_ledger(ledger)) == ["a", "b", "b", "side"]  # b again; a and side not
    phases = {p.id: p for p in stored(tmp_path, lambda s: s.phases(run_id))}
    assert phases["b"].output == "B2" and phases["c"].state == "failed"


def test_two_runs_sharing_one_state_directory_both_record_correctly(tmp_path):
    wf = tmp_path / "many.yaml"
    wf.write_text(
        "name: many\nphases:\n"
        + "".join(
            f"  - {{id: p{i}, agent: sleep, with: {{seconds: 0.01, output: {i}}}}}\n"
            for i in range(40)
        )
    )
    procs = [
        subprocess.Popen(
            [*ORCH, "run", str(wf), "--state-dir", str(tmp_path / "s")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    with open_store(tmp_path / "s") as store:
        runs = store.list_runs()
        assert len(runs) == 2 and {r.status for r in runs} == {"completed"}
        for run in runs:
            phases = store.phases(run.id)
            assert [p.output for p in phases] == list(range(40))
        assert len(store.events(run.id)) == 2 + 2 * 40
        assert store.integrity_check() == "ok"


CACHED = """
name: cachey
inputs:
  who: {type: string, default: you}
phases:
  - id: hello
    agent: echo
    cache: true
    with: {text: "hello {{ inputs.who }}", ledger: "LEDGER"}
  - id: later
    agent: echo
    cache: {ttl: 1h}
    with: {text: "{{ phases.hello.output }}!", ledger: "LEDGER"}
"""


def test_cache_hits_show_in_progress_status_and_dry_run(tmp_path):
    ledger = tmp_path / "ledger"
    wf = tmp_path / "c.yaml"
    wf.write_text(CACHED.replace("LEDGER", str(ledger)))

    def run(*extra):
        return runner.invoke(app, ["run", str(wf), "--state-dir", str(tmp_path / "s"), *extra])

    res = run("--dry-run")
    assert res.exit_code == 0 and "cache: empty" in res.output
    assert not (tmp_path / "s").exists()  # a dry run creates nothing
    assert run().exit_code == 0
    res = run("--dry-run")
    assert "cache: hello would be served from the cache" in res.output
    assert "cache: later depends on run-time values" in res.output
    assert "cache: hello is not cached yet" in run("--dry-run", "-i", "who=me").output
    res = run()
    assert res.exit_code == 0
    assert "phase hello completed" in res.output and "(cached)" in res.output
    assert _ledger(ledger) == ["hello", "later"]  # the second run executed nothing
    run_id = stored(tmp_path / "s", lambda s: s.list_runs())[0].id
    assert "cached" in orch("status", run_id, state_dir=tmp_path / "s").output
    assert run("--no-cache").exit_code == 0
    assert _ledger(ledger) == ["hello", "later", "hello", "later"]
    assert "cleared 2 cached results" in orch("cache", "clear", state_dir=tmp_path / "s").output
    assert run().exit_code == 0
    assert len(_ledger(ledger)) == 6


@pytest.mark.handmade_events  # _history() writes hand-made events
def test_a_corrupt_row_is_a_clear_error_and_other_runs_stay_readable(tmp_path):
    import sqlite3

    _history(tmp_path, "good")
    _history(tmp_path, "bad")
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("UPDATE phases SET output='{broken' WHERE run_id='bad' AND id='a'")
    conn.commit()
    conn.close()
    res = orch("status", "bad", state_dir=tmp_path)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "run 'bad' phase 'a'" in res.output and "table 'phases'" in res.output
    assert orch("status", "good", state_dir=tmp_path).exit_code == 0
    listed = orch("runs", state_dir=tmp_path).output
    assert "good" in listed and "bad" in listed


def test_reading_commands_never_create_a_store(tmp_path):
    missing = tmp_path / "nothing-here"
    assert "no runs recorded yet" in orch("runs", state_dir=missing).output
    res = orch("status", "abc", state_dir=missing)
    assert res.exit_code == 2 and "nothing is recorded in" in res.output
    assert "cleared 0 cached results" in orch("cache", "clear", state_dir=missing).output
    assert not missing.exists()


@pytest.mark.parametrize(
    "args", [["runs"], ["runs", "--json"], ["stats"], ["cache", "clear"], ["status", "abc"]]
)
def test_reading_commands_name_a_state_folder_that_is_missing_and_refuse_a_file(tmp_path, args):
    """A wrong --state-dir is never silent: a missing folder is named with the hint `orch
    status` gives (exit 0: nothing is recorded there; status: the run is unknown, exit 2),
    a file is refused (exit 2), one wording for every reading command."""
    missing = tmp_path / "nowhere" / "x"
    res = orch(*args, state_dir=missing)
    assert res.exit_code == (2 if args[0] == "status" else 0), res.output
    assert f"nothing is recorded in {missing}\n" in res.stderr
    assert "  hint: `orch run` records runs there; --state-dir or ORCH_STATE_DIR" in res.stderr
    afile = tmp_path / "afile"
    afile.write_text("")
    res = orch(*args, state_dir=afile)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.stderr.startswith(
        f"error: cannot use the state folder '{afile}': '{afile}' is a file, not a folder\n"
    ), res.stderr
    assert not missing.parent.exists() and afile.read_text() == ""


RETRYING = """
name: retrying
phases:
  - id: flaky
    agent: fail
    retries: {attempts: 4, backoff: exponential, delay: 100ms, max_delay: 10s}
    with: {message: still down}
"""


def test_retry_attempts_and_backoff_survive_a_crash(tmp_path):
    wf = tmp_path / "retrying.yaml"
    wf.write_text(RETRYING)
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [*ORCH, "run", str(wf), "--state-dir", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def attempt_recorded():
        if not (state / "state.db").exists():
            return 0
        store = open_store(state)
        try:
            runs = store.list_runs()
            return store.phases(runs[0].id)[0].attempts if runs else 0
        finally:
            store.close()

    try:
        _wait_for(lambda: attempt_recorded() >= 3, "the second retry")  # waits 200 ms there
    finally:
        proc.kill()
        proc.wait()
    run_id = stored(state, lambda s: s.list_runs())[0].id
    at = attempt_recorded()
    res = orch("resume", run_id, state_dir=state)
    assert res.exit_code == 1
    assert f"retries go on: flaky at attempt {at}" in res.output
    events = [e for _, e in stored(state, lambda s: s.events(run_id))]
    resumed = events[[e.event for e in events].index("workflow_started", 1) :]
    started = [e.attempt for e in resumed if e.event == "phase_started"]
    retries = [(e.attempt, e.data["delay"]) for e in resumed if e.event == "phase_retry"]
    assert started == [at]  # the interrupted attempt, not attempt 1
    assert retries == [(n, 0.1 * 2 ** (n - 1)) for n in range(at, 5)]  # the backoff goes on
    failed = resumed[-2]
    assert failed.event == "phase_failed" and failed.data["attempts"] == 5  # 1 + 4 retries


def test_resume_refuses_when_only_the_named_agent_of_a_phase_changed(tmp_path):
    text = """
name: named
agents:
  speaker: {type: echo, with: {text: HELLO}}
phases:
  - {id: a, agent: speaker}
  - {id: b, agent: fail, depends_on: [a]}
  - {id: c, agent: echo, with: {text: unrelated}}
"""
    wf = tmp_path / "named.yaml"
    wf.write_text(text)
    assert runner.invoke(app, ["run", str(wf), "--state-dir", str(tmp_path)]).exit_code == 1
    run_id = stored(tmp_path, lambda s: s.list_runs())[0].id
    wf.write_text(text.replace("text: HELLO", "text: BONJOUR"))
    res = orch("resume", run_id, state_dir=tmp_path)
    assert res.exit_code == 2
    assert "phase a changed" in res.output and "phase c" not in res.output


LLM_WORKFLOW = """
name: counted
agents:
  writer:
    type: llm
    with:
      base_url: "{{ inputs.base_url }}"
      model: fake
      api_key: "{{ secrets.OPENAI_API_KEY }}"
inputs:
  base_url: {type: string}
phases:
  - {id: write, agent: writer, with: {prompt: "say four words now"}}
  - {id: plain, agent: echo, with: {text: no tokens}}
"""


def test_status_shows_the_tokens_each_phase_and_the_run_used(tmp_path, monkeypatch):
    wf = tmp_path / "wf.yaml"
    wf.write_text(LLM_WORKFLOW, encoding="utf-8")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-key-for-tests-0042")
    with FakeOpenAI(["one two three"]) as srv:
        res = orch("run", str(wf), "--input", f"base_url={srv.base_url}", state_dir=tmp_path)
    assert res.exit_code == 0, res.output
    run_id = json.loads(orch("runs", "--json", state_dir=tmp_path).output)[0]["id"]
    info = json.loads(orch("status", run_id, "--json", state_dir=tmp_path).output)
    phases = {p["id"]: p for p in info["phases"]}
    used = phases["write"]["tokens"]
    assert used["completion"] == 3 and used["total"] == used["prompt"] + 3 > 3, used
    assert phases["plain"]["tokens"] is None
    assert info["tokens"] == used
    text = orch("status", run_id, state_dir=tmp_path).output
    assert f"tokens: prompt {used['prompt']}, completion 3, total {used['total']}" in text, text
    assert re.search(rf"write\W+completed\W+1\W+\w+\W+{used['total']} tokens\n", text), text

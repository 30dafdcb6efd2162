"""A running phase has no row in the state store: its ``phase_started`` event says it
runs, and its row is made when it ends (state/rows.py, ``Known``; a third fewer row
writes a phase). Every reader must still see it running: ``phases`` (``orch status``,
the web UI, resume), the foreach item count, ``/metrics``; and a run that ends, or
whose process died, must not leave it running. Real SQLite files, real ``orch``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator import events as ev
from orchestrator.events import Event
from orchestrator.state.sqlite import open_store

RUN = "r1"


def _begin(phases=("a", "b"), ts=100.0, **resumed) -> Event:
    return ev.workflow_started(
        RUN,
        ts,
        workflow="wf",
        path="wf.yaml",
        source_hash="h",
        phases=list(phases),
        fingerprints={p: f"fp-{p}" for p in phases},
        inputs={},
        pid=os.getpid(),
        **resumed,
    )


def _end(status: str, ts: float) -> Event:
    return ev.workflow_ended(
        RUN, ts, status, outputs={}, duration=ts - 100.0, error=None, counts={}
    )


def _listed(store) -> list[tuple]:
    return [(p.id, str(p.state), p.attempts, p.started, p.ended) for p in store.phases(RUN)]


def test_a_running_phase_reads_running_with_its_attempt_and_start(tmp_path):
    with open_store(tmp_path) as store:
        store.append(
            [
                _begin(),
                ev.phase_started(RUN, 101.0, "a", 1, agent="echo"),
                ev.phase_retry(RUN, 102.0, "a", 1, error="boom", delay=0.0),
                ev.phase_started(RUN, 103.0, "b", 1, agent="shell"),
            ]
        )
        # another process (`orch status`) reads the same
        with open_store(tmp_path) as other:
            assert _listed(other) == [
                ("a", "running", 2, 101.0, None),
                ("b", "running", 1, 103.0, None),
            ]
        assert store.metrics()["agents"] == [("echo", 1), ("shell", 1)]
        store.append([ev.phase_completed(RUN, 104.0, "a", 2, output=1, duration=3.0, attempts=2)])
        assert _listed(store)[0] == ("a", "completed", 2, 101.0, 104.0)
        assert store.metrics()["agents"] == [("shell", 1)]


@pytest.mark.parametrize("writer", ["same", "other"])
def test_a_run_that_ends_leaves_no_phase_running(tmp_path, writer):
    # the run's own writer ends it, or another process records the end of a run whose
    # owner died (end_interrupted): either way its running phases end cancelled
    with open_store(tmp_path) as store:
        store.append(
            [
                _begin(("a", "b", "c")),
                ev.phase_started(RUN, 101.0, "a", 1, agent="echo"),
                ev.phase_completed(RUN, 102.0, "a", 1, output=1, duration=1.0, attempts=1),
                ev.phase_started(RUN, 103.0, "b", 1, agent="echo"),
                ev.phase_started(RUN, 104.0, "handler", 1, agent="echo"),  # not planned
            ]
        )
        if writer == "same":
            store.append([_end("failed", 110.0)])
        else:
            with open_store(tmp_path) as other:
                conn = other._connect()  # the run's owner is dead: mark it so
                conn.execute("UPDATE runs SET owner_pid=NULL")
                conn.close()
                other.end_interrupted(_end("failed", 110.0))
        assert _listed(store) == [
            ("a", "completed", 1, 101.0, 102.0),
            ("b", "cancelled", 1, 103.0, 110.0),
            ("c", "pending", 0, None, None),
            ("handler", "cancelled", 1, 104.0, 110.0),
        ]


def test_a_resumed_run_reads_its_new_launch_only(tmp_path):
    # b ran without a row when the first launch's process died: it reads running until
    # the resume starts it again (a second kill before that must still say so), then
    # running from its new start; a phase that had failed reads running again
    with open_store(tmp_path) as store:
        store.append(
            [
                _begin(("a", "b")),
                ev.phase_started(RUN, 101.0, "a", 1, agent="echo"),
                ev.phase_failed(RUN, 102.0, "a", 1, error="boom", duration=1.0, attempts=1),
                ev.phase_started(RUN, 103.0, "b", 1, agent="echo"),
            ]
        )
        assert [p[:2] for p in _listed(store)] == [("a", "failed"), ("b", "running")]
        store.claim(RUN)
        store.append([_begin(("a", "b"), ts=200.0, resumed_from=RUN)])
        assert _listed(store) == [
            ("a", "failed", 1, 101.0, 102.0),
            ("b", "running", 1, 103.0, None),
        ]
        store.append(
            [
                ev.phase_started(RUN, 201.0, "a", 1, agent="echo"),
                ev.phase_started(RUN, 202.0, "b", 1, agent="echo"),
            ]
        )
        assert _listed(store) == [
            ("a", "running", 1, 201.0, None),
            ("b", "running", 1, 202.0, None),
        ]


WAITS = """\
name: waits
phases:
  - id: quick
    agent: echo
    with: {text: hi}
  - id: slow
    agent: shell
    with: {command: "test -f go || sleep 60; echo done"}
"""


def _orch(cwd: Path, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


def test_a_phase_killed_while_running_is_reported_and_run_again_on_resume(tmp_path):
    (tmp_path / "wf.yaml").write_text(WAITS)
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", "wf.yaml", "--events", "jsonl"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        run_id = None
        for line in proc.stdout:  # shown once stored: the store has slow's start
            event = json.loads(line)
            run_id = event["run_id"]
            if event["event"] == "phase_started" and event["phase"] == "slow":
                break
        status = _orch(tmp_path, "status", str(run_id))
        assert "running now: slow" in status.stdout, status.stdout
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    listed = json.loads(_orch(tmp_path, "status", str(run_id), "--json").stdout)
    assert listed["status"] == "interrupted"
    assert {p["id"]: p["state"] for p in listed["phases"]} == {
        "quick": "completed",
        "slow": "running",
    }
    (tmp_path / "go").write_text("")
    deadline = time.monotonic() + 60
    while True:  # the killed orch's `sleep 60` is a leftover the resume stops first
        resumed = _orch(tmp_path, "resume", str(run_id))
        if resumed.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert resumed.returncode == 0, resumed.stderr
    assert "running when it stopped, so running again: slow" in resumed.stderr
    done = json.loads(_orch(tmp_path, "status", str(run_id), "--json").stdout)
    assert done["status"] == "completed"
    assert {p["id"]: p["state"] for p in done["phases"]} == {
        "quick": "completed",
        "slow": "completed",
    }

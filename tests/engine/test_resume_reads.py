"""How many reads of the state store preparing a resume costs: one pass over the run's
events, a page at a time, whatever the number of phases (never one read per phase).

A run made by the real `orch run` in a real state.db; ``prepare_resume`` reads it
through a real SqliteStore whose SQLite connections trace every statement they run.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.engine.resume import prepare_resume
from orchestrator.plan import compile_plan
from orchestrator.spec import load_workflow
from orchestrator.state.base import PAGE
from orchestrator.state.sqlite import open_store


def _chain(n: int) -> str:
    """A chain of ``n`` phases whose first fails: each other one is skipped, and none
    completed, so each is one that a resume runs again."""
    lines = [
        "name: chain",
        "phases:",
        "  - id: p0",
        "    agent: shell",
        '    with: {command: ["false"]}',
    ]
    for i in range(1, n):
        lines += [f"  - id: p{i}", "    agent: noop", f"    depends_on: [p{i - 1}]"]
    return "\n".join(lines) + "\n"


def _failed_run(folder: Path, n: int) -> tuple[Path, Path, str]:
    folder.mkdir()
    path = folder / "chain.yaml"
    path.write_text(_chain(n), encoding="utf-8")
    state = folder / ".orch"
    env = {**os.environ, "NO_COLOR": "1", "ORCH_STATE_DIR": str(state)}

    def orch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            capture_output=True,
            text=True,
            cwd=folder,
            env=env,
            timeout=300,
        )

    done = orch("run", str(path))
    assert done.returncode == 1, done.stderr
    return path, state, json.loads(orch("runs", "--json").stdout)[0]["id"]


def _statements(
    monkeypatch: pytest.MonkeyPatch, path: Path, state: Path, run_id: str
) -> tuple[list[str], int]:
    """The SQL statements ``prepare_resume`` runs on the stored run, and its event count."""
    plan = compile_plan(load_workflow(path))
    seen: list[str] = []
    connect = sqlite3.connect

    def traced(*args, **kwargs):  # type: ignore[no-untyped-def]
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(seen.append)
        return conn

    with open_store(state) as store:
        run = store.get_run(run_id)
        events = len(store.events(run_id))
        with monkeypatch.context() as m:
            m.setattr(sqlite3, "connect", traced)
            store.close()  # the next read opens a (traced) connection
            resume = prepare_resume(store, run, plan, claim=False)
    assert len(resume.plan.order) - len(resume.prior) == len(plan.order)  # all run again
    return [s for s in seen if s.lstrip().upper().startswith("SELECT")], events


def test_preparing_a_resume_reads_the_events_once_whatever_the_number_of_phases(
    tmp_path, monkeypatch
):
    small = _statements(monkeypatch, *_failed_run(tmp_path / "small", 20))
    big_path, big_state, big_id = _failed_run(tmp_path / "big", 2_000)
    big = _statements(monkeypatch, big_path, big_state, big_id)
    (small_reads, small_events), (big_reads, big_events) = small, big
    pages = big_events // PAGE + 1
    assert small_events < PAGE < 2 * PAGE < big_events  # one page, then at least three
    # the events: one page read each, in a single pass
    event_reads = [s for s in big_reads if "FROM events" in s]
    assert len(event_reads) == pages, event_reads[:5]
    assert len([s for s in small_reads if "FROM events" in s]) == 1
    # anything else: at most one more read per page (the run's trace id), none per phase
    assert len(big_reads) <= len(small_reads) + 2 * (pages - 1), big_reads[:20]

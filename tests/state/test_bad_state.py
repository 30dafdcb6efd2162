"""A state folder orch cannot write, and rows it cannot read: one clear line, never a traceback.

Every command runs for real (typer's runner in-process, or `orch` as an
unprivileged user for the read-only folder); a corrupt value in any column of a
run's rows breaks only that run: the others stay listed and readable.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.unprivileged import run_unprivileged

runner = CliRunner()

WORKFLOW = """
name: two
phases:
  - {id: a, agent: echo, with: {text: hi}}
  - {id: b, agent: echo, with: {text: "{{ phases.a.output }}"}}
"""


def invoke(*args: str) -> object:
    return runner.invoke(app, list(args))


@contextlib.contextmanager
def _database(state: Path) -> Iterator[sqlite3.Connection]:
    """The state database, committed and closed after (sqlite3's own ``with`` commits but
    leaves the connection open: Python 3.13 reports it as a ResourceWarning)."""
    with contextlib.closing(sqlite3.connect(state / "state.db")) as db, db:
        yield db


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, list[str]]:
    """A state folder with two completed runs (oldest first)."""
    root = tmp_path_factory.mktemp("recorded")
    (root / "wf.yaml").write_text(WORKFLOW)
    state = root / "state"
    for _ in range(2):
        res = invoke("run", str(root / "wf.yaml"), "--state-dir", str(state))
        assert res.exit_code == 0, res.output
    with _database(state) as db:
        ids = [r[0] for r in db.execute("SELECT id FROM runs ORDER BY started")]
    return state, ids


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [c[1] for c in db.execute(f"PRAGMA table_info({table})")]


_BAD = ["abc", None, "{", b"\xff\xfe", "[1]", 1e308 * 10]
_CASES = [
    (table, column, value)
    for table, columns in {
        "runs": [
            "workflow",
            "path",
            "source_hash",
            "status",
            "started",
            "ended",
            "owner_pid",
            "owner_start",
            "resumes",
            "error",
            "outputs",
            "counts",
            "info",
        ],
        "phases": [
            "id",
            "state",
            "attempts",
            "started",
            "ended",
            "output",
            "output_file",
            "error",
            "cached",
            "fallback_used",
            "completed_seq",
            "compensated",
            "compensation_error",
            "metadata",
        ],
        "events": ["ts", "event", "phase", "attempt", "data"],
    }.items()
    for column in columns
    for value in _BAD
]


@pytest.mark.handmade_events  # the rows are corrupted on purpose
@pytest.mark.parametrize(("table", "column", "value"), _CASES, ids=lambda v: repr(v)[:12])
def test_a_corrupt_value_in_any_column_gives_one_clear_line(
    recorded, tmp_path, table, column, value
):
    source, (victim, other) = recorded
    state = tmp_path / "state"
    shutil.copytree(source, state)
    with _database(state) as db:
        key = "id" if table == "runs" else "run_id"
        try:
            db.execute(f"UPDATE {table} SET {column}=? WHERE {key}=?", (value, victim))
        except sqlite3.IntegrityError:
            pytest.skip("the schema refuses this value")
    sd = ("--state-dir", str(state))
    for args in (
        ["runs"],
        ["runs", "--json"],
        ["status", victim],
        ["status", victim, "--json"],
        ["logs", victim],
        ["logs", victim, "--json"],
        ["cancel", victim],
    ):
        res = invoke(*args, *sd)
        assert res.exception is None or isinstance(res.exception, SystemExit), (
            args,
            res.output,
            res.exception,
        )
        assert res.exit_code in (0, 2), (args, res.output)
        assert "Traceback" not in res.output
        if res.exit_code == 2:
            lines = res.stderr.strip().splitlines()
            assert lines[0].startswith("error: "), res.stderr
            assert len(lines) <= 2  # the message, and a hint
        if args[0] == "runs":
            assert other in res.stdout  # the other run is still listed
        if args[-1] == "--json" and res.exit_code == 0:
            json.loads(res.stdout) if args[0] != "logs" else [
                json.loads(line) for line in res.stdout.splitlines()
            ]
    res = invoke("status", other, "--json", *sd)
    assert res.exit_code == 0 and json.loads(res.stdout)["status"] == "completed"


@pytest.mark.handmade_events
def test_orch_runs_lists_a_run_with_an_unreadable_start_as_corrupt(recorded, tmp_path):
    source, (victim, other) = recorded
    state = tmp_path / "state"
    shutil.copytree(source, state)
    with _database(state) as db:
        db.execute("UPDATE runs SET started='abc' WHERE id=?", (victim,))
    res = invoke("runs", "--json", "--state-dir", str(state))
    assert res.exit_code == 0, res.output
    rows = {r["id"]: r for r in json.loads(res.stdout)}
    assert rows[victim]["status"] == "corrupt" and rows[other]["status"] == "completed"
    res = invoke("status", victim, "--state-dir", str(state))
    assert res.exit_code == 2
    assert f"error: run '{victim}': row '{victim}' of table 'runs' cannot be read" in res.stderr
    assert "started is 'abc', not a time" in res.stderr


# -- a state folder this user cannot write ---------------------------------------------------


def test_a_read_only_state_folder_reads_and_refuses_writes_in_one_line(shared_dir):
    wf = shared_dir / "wf.yaml"
    wf.write_text(WORKFLOW)
    state = shared_dir / "state"
    res = invoke("run", str(wf), "--state-dir", str(state))
    assert res.exit_code == 0, res.output
    db = sqlite3.connect(state / "state.db")
    with db:  # its owner died: resumable, and `orch cancel` records a decision
        run_id = db.execute("SELECT id FROM runs").fetchone()[0]
        db.execute("UPDATE runs SET status='running', owner_pid=NULL WHERE id=?", (run_id,))
    db.close()
    for path in [state, *state.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    if os.geteuid() != 0:
        state.chmod(0o555)
        for path in state.iterdir():
            path.chmod(0o444)
    sd = ["--state-dir", "state"]
    files = sorted(p.name for p in state.iterdir())
    res = run_unprivileged(["runs", *sd], shared_dir)
    assert res.returncode == 0 and run_id in res.stdout, res.stderr
    res = run_unprivileged(["status", run_id, "--json", *sd], shared_dir)
    assert res.returncode == 0 and json.loads(res.stdout)["status"] == "interrupted", res.stderr
    res = run_unprivileged(["logs", run_id, *sd], shared_dir)
    assert res.returncode == 0 and "workflow_started" in res.stdout, res.stderr
    refused = "error: the state folder 'state' is read-only: "
    for args in (["run", "wf.yaml"], ["resume", run_id], ["cache", "clear"], ["cancel", run_id]):
        res = run_unprivileged([*args, *sd], shared_dir)
        assert "Traceback" not in res.stderr, (args, res.stderr)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.startswith(refused), (args, res.stderr)
        assert "  hint: make it writable, or record runs elsewhere" in res.stderr
    assert sorted(p.name for p in state.iterdir()) == files  # nothing written


@pytest.mark.parametrize("column", ["output", "metadata", "created", "expires"])
@pytest.mark.parametrize("value", ["abc", "{", b"\xff", "[1]"], ids=repr)
def test_a_corrupt_cache_row_is_a_miss_and_the_phase_runs(tmp_path, column, value):
    if column == "output" and value == "[1]":
        pytest.skip("valid JSON: a (wrong) cached output, not a corrupt one")
    ledger = tmp_path / "ledger"
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "name: c\nphases:\n  - id: a\n    agent: shell\n    cache: true\n"
        f"    with: {{command: \"echo ran >> '{ledger}'; echo hi\"}}\n"
    )
    sd = ("--state-dir", str(tmp_path / "state"))
    assert invoke("run", str(wf), *sd).exit_code == 0
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    with db:
        db.execute(f"UPDATE cache SET {column}=?", (value,))
    db.close()
    res = invoke("run", str(wf), *sd)
    assert res.exit_code == 0, res.output
    assert ledger.read_text() == "ran\nran\n"  # a miss: the phase ran again


def test_a_detached_run_refuses_a_state_folder_it_cannot_use_as_plain_run_does(
    shared_dir, monkeypatch
):
    """`orch run --detach` checks its state folder as `orch run` does: the same line, exit 2,
    no traceback, nothing started (a read-only folder, a file, `.orch` it cannot create)."""
    monkeypatch.delenv("ORCH_STATE_DIR", raising=False)  # no --state-dir: `.orch`
    (shared_dir / "wf.yaml").write_text(WORKFLOW)
    (shared_dir / "rost").mkdir()
    (shared_dir / "rost").chmod(0o755)  # readable, not writable by the unprivileged user
    if os.geteuid() != 0:
        (shared_dir / "rost").chmod(0o555)
        shared_dir.chmod(0o555)  # `.orch` cannot be created
    (shared_dir / "afile").write_text("not a folder\n")
    (shared_dir / "afile").chmod(0o644)
    expected = {
        "rost": "error: the state folder 'rost' is read-only: cannot record runs there\n",
        "afile": "error: cannot use the state folder 'afile': 'afile' is a file, not a folder\n",
        None: "error: cannot create the state directory '.orch': permission denied\n",
    }
    try:
        for folder, first_line in expected.items():
            sd = [] if folder is None else ["--state-dir", folder]
            plain = run_unprivileged(["run", "wf.yaml", *sd], shared_dir)
            detached = run_unprivileged(["run", "wf.yaml", "--detach", *sd], shared_dir)
            assert "Traceback" not in detached.stderr, (folder, detached.stderr)
            assert (detached.returncode, plain.returncode) == (2, 2), (folder, detached.stderr)
            assert detached.stderr == plain.stderr, folder
            assert detached.stderr.startswith(first_line), (folder, detached.stderr)
            assert detached.stdout == "", folder  # no run id: nothing started
    finally:
        shared_dir.chmod(0o755)
    assert not (shared_dir / "rost" / "logs").exists() and not (shared_dir / ".orch").exists()

"""A run id is a plain token that names one run: a new run never takes a recorded run's id
(the real `orch run --run-id`, and `orchestrator.start(run_id=...)`), and `--detach`,
whose parent picks the id its child records, still works."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

import orchestrator
from orchestrator.errors import UsageError

ORCH = [sys.executable, "-m", "orchestrator"]

DEPLOY = "name: deploy\nphases:\n  - {id: ship, agent: echo, with: {text: shipped}}\n"
OTHER = (
    "name: other\ninputs: {n: {type: integer}}\n"
    "phases:\n  - {id: count, agent: echo, with: {text: 'n={{ inputs.n }}'}}\n"
)


def _orch(tmp_path, *args):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(
        [*ORCH, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


def _history(tmp_path, run_id):
    """What `orch status --json` and `orch logs --json` show of a run."""
    status = _orch(tmp_path, "status", run_id, "--json", "--state-dir", "s")
    logs = _orch(tmp_path, "logs", run_id, "--json", "--state-dir", "s")
    assert status.returncode == 0 and logs.returncode == 0, status.stderr + logs.stderr
    return json.loads(status.stdout), [json.loads(line) for line in logs.stdout.splitlines()]


def test_orch_run_under_a_recorded_run_id_exits_2_and_leaves_that_run_alone(tmp_path):
    (tmp_path / "deploy.yaml").write_text(DEPLOY)
    (tmp_path / "other.yaml").write_text(OTHER)
    first = _orch(tmp_path, "run", "deploy.yaml", "--state-dir", "s")
    assert first.returncode == 0, first.stderr
    (run_id,) = [
        r["id"] for r in json.loads(_orch(tmp_path, "runs", "--json", "--state-dir", "s").stdout)
    ]
    before = _history(tmp_path, run_id)

    res = _orch(tmp_path, "run", "other.yaml", "-i", "n=1", "--run-id", run_id, "--state-dir", "s")
    assert res.returncode == 2, res.stderr
    assert f"error: run '{run_id}' already exists in s/state.db (workflow 'deploy', completed)" in (
        res.stderr
    )
    assert "leave out --run-id" in res.stderr and "Traceback" not in res.stderr
    assert _history(tmp_path, run_id) == before  # same workflow, phases, resumes, events
    status, events = before
    assert status["workflow"] == "deploy" and [p["id"] for p in status["phases"]] == ["ship"]
    assert [e["event"] for e in events].count("workflow_started") == 1
    assert len(json.loads(_orch(tmp_path, "runs", "--json", "--state-dir", "s").stdout)) == 1


@pytest.mark.parametrize("bad", ["../x", ".", "..", "a b\nc", "-x", "", "x/y", "a" * 65])
def test_orch_run_refuses_an_id_that_is_not_a_plain_token(tmp_path, bad):
    (tmp_path / "other.yaml").write_text(OTHER)
    res = _orch(tmp_path, "run", "other.yaml", "-i", "n=1", "--run-id", bad, "--state-dir", "s")
    assert res.returncode == 2, res.stderr
    assert f"error: {bad!r} cannot be a run id" in res.stderr
    assert "Traceback" not in res.stderr
    runs = _orch(tmp_path, "runs", "--json", "--state-dir", "s")
    assert runs.returncode != 0 or json.loads(runs.stdout) == []  # nothing was recorded


def test_orch_run_takes_a_new_plain_id(tmp_path):
    (tmp_path / "other.yaml").write_text(OTHER)
    rid = "nightly-2026.12_01"
    res = _orch(tmp_path, "run", "other.yaml", "-i", "n=1", "--run-id", rid, "--state-dir", "s")
    assert res.returncode == 0, res.stderr
    status, _ = _history(tmp_path, rid)
    assert status["id"] == rid and status["status"] == "completed"


def test_python_start_with_a_recorded_id_raises_and_records_nothing(tmp_path):
    state = tmp_path / "s"

    async def main() -> None:
        first = await orchestrator.start(DEPLOY + "\n", state_dir=state)
        await first.wait()
        with pytest.raises(UsageError, match=f"run '{first.run_id}' already exists") as raised:
            await orchestrator.start(OTHER, inputs={"n": 1}, state_dir=state, run_id=first.run_id)
        assert f"orch resume {first.run_id}" in str(raised.value)  # the hint is in its text
        with pytest.raises(UsageError, match="cannot be a run id"):
            await orchestrator.start(OTHER, inputs={"n": 1}, state_dir=state, run_id="../x")

    asyncio.run(main())
    runs = orchestrator.list_runs(state_dir=state)
    assert [(r.workflow, r.status, r.resumes) for r in runs] == [("deploy", "completed", 0)]


def test_a_detached_run_records_the_id_its_parent_picked(tmp_path, processes):
    (tmp_path / "deploy.yaml").write_text(DEPLOY)
    res = _orch(tmp_path, "run", "deploy.yaml", "--detach", "--state-dir", "s")
    assert res.returncode == 0, res.stderr
    run_id = res.stdout.strip()
    processes.adopt(tmp_path / "s", run_id)
    done = _orch(tmp_path, "wait", run_id, "--state-dir", "s")
    assert done.returncode == 0, done.stderr
    status, events = _history(tmp_path, run_id)
    assert status["workflow"] == "deploy" and status["status"] == "completed"
    assert [e["event"] for e in events].count("workflow_started") == 1

"""`orch resume --replay/--record/--executor`, with the real `orch` command and a real store."""

from __future__ import annotations

import json

from tests.cli.test_detach import _orch

TWO = """
name: two
phases:
  - {id: first, agent: shell, with: {command: "cat first.txt"}}
  - id: second
    agent: shell
    depends_on: [first]
    with: {command: "cat second.txt"}
outputs:
  said: "{{ phases.first.output | trim }} {{ phases.second.output | trim }}"
"""


def _failed_run(tmp_path):
    """A recording of the whole workflow in `calls`, then a run whose `second` failed."""
    (tmp_path / "wf.yaml").write_text(TWO)
    (tmp_path / "first.txt").write_text("one\n")
    (tmp_path / "second.txt").write_text("recorded\n")
    rec = _orch(tmp_path, "run", "wf.yaml", "--state-dir", "s", "--record", "calls")
    assert rec.returncode == 0, rec.stderr
    (tmp_path / "second.txt").unlink()
    failed = _orch(tmp_path, "run", "wf.yaml", "--state-dir", "s")
    assert failed.returncode == 1
    runs = json.loads(_orch(tmp_path, "runs", "--json", "--state-dir", "s").stdout)
    return runs[0]["id"]


def test_resume_replays_the_calls_it_is_told_to(tmp_path):
    run_id = _failed_run(tmp_path)
    missing = _orch(tmp_path, "resume", run_id, "--state-dir", "s", "--replay", "nowhere")
    assert missing.returncode == 2
    assert "--replay nowhere: no such folder" in missing.stderr
    # second.txt is gone: only the recording can answer the `second` call
    res = _orch(tmp_path, "resume", run_id, "--state-dir", "s", "--replay", "calls")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"said": "one recorded"}


def test_resume_records_and_runs_on_the_executor_it_is_given(tmp_path):
    run_id = _failed_run(tmp_path)
    (tmp_path / "second.txt").write_text("live\n")
    res = _orch(
        tmp_path,
        "resume",
        run_id,
        "--state-dir",
        "s",
        "--record",
        "again",
        "--executor",
        "dask",
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"said": "one live"}
    assert "agent calls run on a local Dask cluster" in res.stderr
    recorded = [json.loads(p.read_text()) for p in (tmp_path / "again").glob("*.json")]
    assert [c["phase"] for c in recorded] == ["second"]  # only what the resume ran


def test_resume_finds_its_workflow_as_orch_run_does(tmp_path):
    run_id = _failed_run(tmp_path)
    empty = _orch(tmp_path, "resume", run_id, "--state-dir", "s", "--workflow", "")
    assert empty.returncode == 2
    assert empty.stderr.startswith("error: an empty path names no workflow file")
    unknown = _orch(tmp_path, "resume", run_id, "--state-dir", "s", "--workflow", "tow")
    assert unknown.returncode == 2
    assert "no workflow file 'tow', and no 'tow.yaml' in the workflows path" in unknown.stderr
    # a NAME is the workflow of that name in the workflows path (./workflows here)
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "two.yaml").write_text(TWO)
    (tmp_path / "workflows" / "second.txt").write_text("again\n")  # its commands run there
    res = _orch(tmp_path, "resume", run_id, "--state-dir", "s", "--workflow", "two")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"said": "one again"}


def test_resume_of_a_run_whose_workflow_file_is_gone_says_to_pass_it(tmp_path):
    run_id = _failed_run(tmp_path)
    (tmp_path / "wf.yaml").rename(tmp_path / "moved.yaml")
    gone = _orch(tmp_path, "resume", run_id, "--state-dir", "s")
    assert gone.returncode == 2
    assert f"the workflow file run '{run_id}' was started from is gone:" in gone.stderr
    assert f"`orch resume {run_id} --workflow FILE`" in gone.stderr
    (tmp_path / "second.txt").write_text("back\n")
    res = _orch(tmp_path, "resume", run_id, "--state-dir", "s", "--workflow", "moved.yaml")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"said": "one back"}

"""Triggers of `orch serve`: `after:` between workflows (trigger.* in templates), and reloading
edited workflow files (an invalid edit keeps the version in service)."""

from __future__ import annotations

import sys
import time

import pytest

from tests.service.serving import Serve, orch, wait_for

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

IMPORT = """name: nightly-import
triggers:
  - webhook: true
inputs:
  fail: {type: boolean, default: false}
phases:
  - id: load
    agent: shell
    with: {command: "{{ 'false' if inputs.fail else 'true' }} && echo 42 rows"}
outputs:
  rows: "{{ phases.load.output }}"
"""

REPORT = """name: report
triggers:
  - after: {workflow: nightly-import, status: completed}
phases:
  - id: summary
    agent: echo
    with:
      text: >-
        {{ trigger.workflow }} run {{ trigger.run_id }}
        {{ trigger.status }}: {{ trigger.outputs.rows }}
outputs:
  summary: "{{ phases.summary.output }}"
"""

ALERT = """name: alert
triggers:
  - after: {workflow: nightly-import, status: failed}
phases:
  - {id: page, agent: echo, with: {text: "import {{ trigger.run_id }} failed"}}
outputs:
  text: "{{ phases.page.output }}"
"""


def runs_of(srv: Serve, workflow: str) -> list[dict]:
    return srv.runs(workflow=workflow)


def test_an_after_trigger_starts_the_second_workflow_with_the_first_runs_outputs(tmp_path):
    with Serve(tmp_path, {"import": IMPORT, "report": REPORT, "alert": ALERT}) as srv:
        assert "trigger report: after nightly-import completed" in srv.log()
        first = srv.http.post("/api/workflows/import/runs", json={}).json()["id"]
        srv.run_when(first, "completed")
        report = wait_for(lambda: runs_of(srv, "report"), "the report run")[0]
        done = srv.run_when(report["id"], "completed")
        assert done["outputs"] == {"summary": f"nightly-import run {first} completed: 42 rows"}
        assert done["trigger"]["kind"] == "after" and done["trigger"]["run_id"] == first
        assert runs_of(srv, "alert") == []
        # a failed import starts the alert, not the report
        bad = srv.http.post("/api/workflows/import/runs", json={"inputs": {"fail": True}})
        srv.run_when(bad.json()["id"], "failed")
        alert = wait_for(lambda: runs_of(srv, "alert"), "the alert run")[0]
        assert srv.run_when(alert["id"], "completed")["outputs"] == {
            "text": f"import {bad.json()['id']} failed"
        }
        assert len(runs_of(srv, "report")) == 1


def test_a_run_from_the_shell_triggers_too(tmp_path):
    with Serve(tmp_path, {"import": IMPORT, "report": REPORT}) as srv:
        out = orch("run", str(srv.folder / "import.yaml"), state_dir=srv.state_dir)
        assert out.returncode == 0, out.stderr
        report = wait_for(lambda: runs_of(srv, "report"), "the report run")[0]
        assert srv.run_when(report["id"], "completed")["outputs"]["summary"].endswith("42 rows")


def test_an_edited_file_is_reloaded_and_an_invalid_edit_keeps_the_old_version(tmp_path):
    with Serve(tmp_path, {"import": IMPORT}) as srv:
        path = srv.folder / "import.yaml"

        def write(text: str) -> None:
            before = path.stat().st_mtime_ns
            path.write_text(text)
            while path.stat().st_mtime_ns == before:  # coarse file-system clocks
                time.sleep(0.01)
                path.write_text(text)

        write(IMPORT.replace("42 rows", "43 rows"))
        wait_for(lambda: "workflow import: reloaded" in srv.log(), "the reload")
        run = srv.http.post("/api/workflows/import/runs", json={}).json()["id"]
        assert srv.run_when(run, "completed")["outputs"] == {"rows": "43 rows"}
        write(IMPORT.replace("depends_on", "x").replace("agent: shell", "agent: shel"))
        wait_for(
            lambda: "invalid; the previous version stays in service" in srv.log(),
            "the invalid edit reported",
        )
        listed = srv.http.get("/api/workflows").json()[0]
        assert listed["valid"] is False
        assert "import.yaml:" in listed["error"] and "shel" in listed["error"]
        run = srv.http.post("/api/workflows/import/runs", json={}).json()["id"]
        assert srv.run_when(run, "completed")["outputs"] == {"rows": "43 rows"}
        v = srv.http.post("/api/workflows/import/validate")
        assert v.status_code == 422
        assert any(
            "'shel'" in p["text"] and "import.yaml:" in p["text"] for p in v.json()["problems"]
        )
        # a new file is picked up, a removed one is no longer served
        (srv.folder / "report.yaml").write_text(REPORT)
        wait_for(lambda: "workflow report: loaded" in srv.log(), "the new file")
        (srv.folder / "report.yaml").unlink()
        wait_for(lambda: "workflow report: file removed" in srv.log(), "the removal")
        assert srv.http.get("/api/workflows/report").status_code == 404

"""`repeat: {until, max}` through the real `orch run` and `orch resume`: iterations with
iteration.n and iteration.previous, checkpoints that a resumed run goes on from."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.engine.test_routing import HEADER, run

LOOP = """name: loop
phases:
  - id: grow
    agent: echo
    repeat: {until: "output | length >= LIMIT", max: 5}
    with: {text: "{{ (iteration.previous or '') ~ iteration.n }}"}
  - id: after
    agent: echo
    with: {text: "{{ phases.grow.output }}!"}
outputs:
  grown: "{{ phases.after.output }}"
"""


def test_a_phase_repeats_until_its_condition_with_the_previous_output(tmp_path):
    result, events = run(tmp_path, LOOP.replace("LIMIT", "3"))
    assert result.exit_code == 0, result.output
    marks = [e["data"] for e in events if e["event"] == "phase_iteration"]
    assert marks == [
        {"iteration": 1, "output": "1", "done": False},
        {"iteration": 2, "output": "12", "done": False},
        {"iteration": 3, "output": "123", "done": True},
    ]
    assert events[-1]["data"]["outputs"] == {"grown": "123!"}
    done = next(e for e in events if e["event"] == "phase_completed" and e["phase"] == "grow")
    assert done["data"]["metadata"]["iterations"] == 3
    assert "phase grow iteration 3 done (until is true)" in result.stderr


def test_max_ends_the_loop_with_the_last_output(tmp_path):
    result, events = run(tmp_path, LOOP.replace("LIMIT", "99"))
    assert result.exit_code == 0, result.output
    assert [e["data"]["iteration"] for e in events if e["event"] == "phase_iteration"] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert events[-1]["data"]["outputs"] == {"grown": "12345!"}


def test_a_failing_iteration_fails_the_phase_naming_it(tmp_path):
    result, events = run(
        tmp_path,
        """name: loop
phases:
  - id: flaky
    agent: fail
    repeat: {max: 3}
    with: {times: "{{ 1 if iteration.n == 2 else 0 }}", message: "reviewer crashed"}
""",
    )
    assert result.exit_code == 1
    failed = next(e for e in events if e["event"] == "phase_failed")
    assert failed["data"]["error"] == "iteration 2: reviewer crashed"
    assert [e["data"]["iteration"] for e in events if e["event"] == "phase_iteration"] == [1]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_resumed_loop_goes_on_after_its_last_checkpointed_iteration(tmp_path):
    wf = tmp_path / "wf.yaml"
    ledger = tmp_path / "ledger.txt"
    # iteration 2 hangs the first time (until the marker exists): the run is killed there
    wf.write_text(
        HEADER
        + f"""name: loop
phases:
  - id: draft
    agent: shell
    repeat: {{until: "output == 'v3'", max: 5}}
    with:
      command: >-
        echo {{{{ iteration.n }}}} >> {ledger};
        if [ {{{{ iteration.n }}}} = 2 ] && [ ! -e marker ]; then touch marker; sleep 60; fi;
        echo v{{{{ iteration.n }}}}
"""
    )
    env = {**os.environ, "NO_COLOR": "1", "ORCH_STATE_DIR": str(tmp_path / ".orch")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(wf), "--events", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "marker").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "never reached 2"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    run_id = json.loads(
        subprocess.run(
            [sys.executable, "-m", "orchestrator", "runs", "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
        ).stdout
    )[0]["id"]
    resumed = subprocess.run(
        [sys.executable, "-m", "orchestrator", "resume", run_id],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "loops go on: draft after iteration 1" in resumed.stderr
    # iteration 1 ran once; 2 ran again (it had not finished), then 3 ended the loop
    assert ledger.read_text().split() == ["1", "2", "2", "3"]
    logs = subprocess.run(
        [sys.executable, "-m", "orchestrator", "status", run_id, "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    phase = json.loads(logs.stdout)["phases"][0]
    assert phase["state"] == "completed" and phase["iterations"] == 3


def test_a_cached_loop_runs_each_iteration_and_a_rerun_gets_them_from_the_cache(tmp_path):
    ledger = tmp_path / "ledger.txt"
    text = f"""name: rc
phases:
  - id: a
    agent: shell
    cache: true
    repeat: {{until: "output | trim == '3'", max: 5}}
    with: {{command: "echo x >> {ledger}; wc -l < {ledger}"}}
"""
    result, events = run(tmp_path, text)
    assert result.exit_code == 0, result.output
    # every iteration called the agent: iteration 2 was not answered with 1's output
    assert ledger.read_text().split() == ["x", "x", "x"]
    marks = [
        (e["data"]["iteration"], e["data"]["output"].strip())
        for e in events
        if e["event"] == "phase_iteration"
    ]
    assert marks == [(1, "1"), (2, "2"), (3, "3")]
    wf = tmp_path / "wf.yaml"
    preview = CliRunner().invoke(app, ["run", str(wf), "--dry-run"])
    assert "cache: a would be served from the cache" in preview.output
    # the same loop again: each iteration from its own cached call, the agent not run
    result, events = run(tmp_path, text)
    assert result.exit_code == 0, result.output
    assert ledger.read_text().split() == ["x", "x", "x"]
    marks = [
        (e["data"]["iteration"], e["data"]["output"].strip())
        for e in events
        if e["event"] == "phase_iteration"
    ]
    assert marks == [(1, "1"), (2, "2"), (3, "3")]


def test_a_loop_stopped_after_its_last_iteration_completes_on_resume_without_another(tmp_path):
    import sqlite3

    wf = tmp_path / "wf.yaml"
    ledger = tmp_path / "ledger.txt"
    wf.write_text(
        HEADER
        + f"""name: loop
phases:
  - id: draft
    agent: shell
    repeat: {{until: "output | trim == 'v2'", max: 5}}
    with: {{command: "echo {{{{ iteration.n }}}} >> {ledger}; echo v{{{{ iteration.n }}}}"}}
  - id: after
    depends_on: [draft]
    agent: echo
    with: {{text: "{{{{ phases.draft.output | trim }}}}!"}}
"""
    )
    orch = functools.partial(_orch, tmp_path)

    first = orch("run", str(wf))
    assert first.returncode == 0, first.stderr
    assert ledger.read_text().split() == ["1", "2"]
    run_id = json.loads(orch("runs", "--json").stdout)[0]["id"]
    # the state a crash leaves between the last checkpoint (iteration 2, done) and
    # phase_completed: the process is gone, the run still running, the loop unfinished
    db = sqlite3.connect(tmp_path / ".orch" / "state.db")
    with db:
        db.execute(
            "UPDATE runs SET status='running', ended=NULL, outputs=NULL WHERE id=?", (run_id,)
        )
        db.execute(
            "UPDATE phases SET state=?, ended=NULL, output=NULL WHERE run_id=? AND id=?",
            ("running", run_id, "draft"),
        )
        db.execute(
            "UPDATE phases SET state=?, started=NULL, ended=NULL, output=NULL, attempts=0"
            " WHERE run_id=? AND id=?",
            ("pending", run_id, "after"),
        )
        db.execute(
            "DELETE FROM events WHERE run_id=?"
            " AND (event IN ('workflow_completed', 'phase_completed') OR phase='after')",
            (run_id,),
        )
    db.close()
    resumed = orch("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert "loops go on: draft ended at iteration 2" in resumed.stderr
    assert ledger.read_text().split() == ["1", "2"]  # no third iteration
    status = json.loads(orch("status", run_id, "--json").stdout)
    draft = next(p for p in status["phases"] if p["id"] == "draft")
    assert draft["state"] == "completed" and draft["iterations"] == 2
    after = next(p for p in status["phases"] if p["id"] == "after")
    assert after["state"] == "completed"


def test_each_iteration_sends_its_own_idempotency_key(tmp_path):
    # a server that deduplicates by Idempotency-Key must not answer iteration 2 with
    # iteration 1's reply: from the second iteration the key carries "@n"
    from tests.servers import HTTPServer, Reply

    with HTTPServer({("POST", "/review"): Reply(200, json={"ok": False})}) as srv:
        wf = (
            "name: keys\nphases:\n  - id: review\n    agent: http\n"
            '    repeat: {until: "false", max: 3}\n'
            f"    with: {{url: '{srv.url}/review', method: POST,"
            " json: {n: '{{ iteration.n }}'}}\n"
        )
        result, events = run(tmp_path, wf)
        keys = [r.headers["idempotency-key"] for r in srv.requests]
    assert result.exit_code == 0, result.output
    run_id = events[0]["run_id"]
    assert keys == [f"{run_id}/review/1", f"{run_id}/review@2/1", f"{run_id}/review@3/1"]


def test_a_run_time_error_in_until_is_reported_at_its_key(tmp_path):
    result, _ = run(
        tmp_path,
        """name: until
phases:
  - id: loop
    agent: echo
    repeat:
      max: 2
      until: "output.nope.deeper == 1"
    with: {text: hi}
""",
    )
    assert result.exit_code == 1
    assert f"repeat.until: {tmp_path / 'wf.yaml'}:8:14: 'nope' is not defined" in result.stderr


def _orch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `orch` command in ``tmp_path``, with its state there."""
    env = {**os.environ, "NO_COLOR": "1", "ORCH_STATE_DIR": str(tmp_path / ".orch")}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )


GATED = """name: gated
phases:
  - id: draft
    agent: echo
    repeat: {until: "output == 'approved'", max: 3ON_MAX}
    with: {text: "draft {{ iteration.n }}"}
  - id: publish
    agent: echo
    when: "phases.draft.metadata.until_met"
    with: {text: "publish {{ phases.draft.output }}"}
  - id: review
    agent: echo
    when: "not phases.draft.metadata.until_met"
    with: {text: "{{ phases.draft.metadata.iterations }} drafts, none approved"}
"""


def test_a_loop_that_stops_at_max_says_so_and_downstream_can_tell(tmp_path):
    result, events = run(tmp_path, GATED.replace("ON_MAX", ""))
    assert result.exit_code == 0, result.output  # completing at max stays the default
    done = next(e for e in events if e["event"] == "phase_completed" and e["phase"] == "draft")
    assert done["data"]["output"] == "draft 3"
    assert done["data"]["metadata"]["until_met"] is False
    assert done["data"]["metadata"]["iterations"] == 3
    assert "(3 iterations, warning: stopped at max, until never true)" in result.stderr
    skipped = next(e for e in events if e["event"] == "phase_skipped")
    assert skipped["phase"] == "publish"  # the unapproved draft is not published
    outputs = {e["phase"]: e["data"]["output"] for e in events if e["event"] == "phase_completed"}
    assert outputs["review"] == "3 drafts, none approved"
    # until true before max: until_met is true, publish runs
    ok, events = run(tmp_path, GATED.replace("ON_MAX", "").replace("'approved'", "'draft 2'"))
    assert ok.exit_code == 0, ok.output
    done = next(e for e in events if e["event"] == "phase_completed" and e["phase"] == "draft")
    assert done["data"]["metadata"]["until_met"] is True
    assert "warning" not in ok.stderr
    assert [e["phase"] for e in events if e["event"] == "phase_skipped"] == ["review"]


def test_on_max_fail_fails_the_phase_with_its_last_output(tmp_path):
    result, events = run(tmp_path, GATED.replace("ON_MAX", ", on_max: fail"))
    assert result.exit_code == 1
    failed = next(e for e in events if e["event"] == "phase_failed")
    assert failed["phase"] == "draft"
    assert failed["data"]["error"] == (
        "repeat stopped at max (3 iterations) without until being true:"
        " output == 'approved' (on_max: fail)"
    )
    assert failed["data"]["output"] == "draft 3"
    assert [e["data"]["iteration"] for e in events if e["event"] == "phase_iteration"] == [1, 2, 3]


def test_a_loop_failed_by_on_max_loops_again_from_the_first_iteration_on_resume(tmp_path):
    wf = tmp_path / "wf.yaml"
    ledger = tmp_path / "ledger.txt"
    answer = tmp_path / "answer.txt"
    answer.write_text("no\n")
    wf.write_text(
        HEADER
        + f"""name: loop
phases:
  - id: draft
    agent: shell
    repeat: {{until: "output | trim == 'yes'", max: 2, on_max: fail}}
    with: {{command: "echo {{{{ iteration.n }}}} >> {ledger}; cat {answer}"}}
"""
    )
    orch = functools.partial(_orch, tmp_path)

    first = orch("run", str(wf))
    assert first.returncode == 1, first.stderr
    run_id = json.loads(orch("runs", "--json").stdout)[0]["id"]
    assert f"orch resume {run_id}" in first.stderr
    assert ledger.read_text().split() == ["1", "2"]
    answer.write_text("yes\n")  # what the loop waited for comes now
    resumed = orch("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert "loops go on" not in resumed.stderr
    assert ledger.read_text().split() == ["1", "2", "1"]  # a fresh loop, from iteration 1
    events = [json.loads(line) for line in orch("logs", run_id, "--json").stdout.splitlines()]
    draft = [e for e in events if e.get("phase") == "draft"]
    ends = [e for e in draft if e["event"] in ("phase_failed", "phase_completed")]
    assert [e["event"] for e in ends] == ["phase_failed", "phase_completed"]
    # the failed attempt stays in the history, with what its loop did
    assert ends[0]["data"]["metadata"]["until_met"] is False
    assert ends[0]["data"]["metadata"]["iterations"] == 2
    assert ends[1]["data"]["metadata"]["until_met"] is True
    assert ends[1]["data"]["metadata"]["iterations"] == 1
    marks = [e["data"]["iteration"] for e in draft if e["event"] == "phase_iteration"]
    assert marks == [1, 2, 1]


def test_on_max_fail_without_until_is_refused(tmp_path):
    path = tmp_path / "wf.yaml"
    no_until = GATED.replace("until: \"output == 'approved'\", ", "")
    assert "until:" not in no_until
    path.write_text(no_until.replace("ON_MAX", ", on_max: fail"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "phases[0].repeat.on_max: fail needs an until" in result.output
    path.write_text(GATED.replace("ON_MAX", ", on_max: sometimes"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "on_max" in result.output and "sometimes" in result.output

"""Fail-fast and the triggers that tolerate failure: all_done and one_success still run.

The rule: after the first failure, running phases are cancelled and no new phase
starts, except a phase whose trigger is all_done or one_success, once all its own
upstream phases ended (those never started count as skipped). The run stays failed.
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from orchestrator.cli import app

from .conftest import Probe, make_plan


def _status(result) -> dict[str, str]:
    return {pid: o.status for pid, o in result.phases.items()}


def test_one_success_runs_after_a_failure_when_the_backup_completed(go):
    plan = make_plan(
        [
            {"id": "primary", "agent": "probe", "with": {"seconds": 0.05, "fail": "down"}},
            {"id": "backup", "agent": "echo", "with": {"text": "from backup"}},
            {
                "id": "use_any",
                "agent": "echo",
                "depends_on": ["primary", "backup"],
                "trigger": "one_success",
                "with": {"text": "{{ phases.primary.status }}/{{ phases.backup.output }}"},
            },
            # a new all_success phase elsewhere does not start after the failure
            {"id": "then", "agent": "noop", "depends_on": ["use_any"]},
        ]
    )
    result, rec = go(plan)
    assert result.status == "failed"
    assert result.error == "phase 'primary' failed: down"
    assert _status(result) == {
        "primary": "failed",
        "backup": "completed",
        "use_any": "completed",
        "then": "skipped",
    }
    assert result.phases["use_any"].output == "failed/from backup"
    assert rec.index("phase_failed", "primary") < rec.index("phase_started", "use_any")
    assert rec.one("phase_skipped", "then").data["reason"] == "not started: the run failed"
    assert rec.kinds()[-1] == "workflow_failed"


def test_all_done_runs_after_a_failed_foreach(go):
    plan = make_plan(
        [
            {
                "id": "each",
                "agent": "probe",
                "foreach": [None, "broke", None],
                "with": {"seconds": 0, "fail": "{{ item }}", "output": "{{ index }}"},
            },
            {
                "id": "report",
                "agent": "echo",
                "depends_on": ["each"],
                "trigger": "all_done",
                "with": {"text": "{{ phases.each.status }}: {{ phases.each.error }}"},
            },
        ]
    )
    result, rec = go(plan)
    assert result.status == "failed"
    assert result.phases["report"].output == (
        "failed: 1 of 3 items failed; item 2 of 3 (index 1): broke"
    )
    assert rec.index("phase_failed", "each") < rec.index("phase_started", "report")


def test_a_tolerant_phase_waits_for_its_upstream_and_sees_never_started_phases(go):
    # boom fails while long runs: long feeds tolerant phases, so it is left to finish
    # (a tolerant phase never sees a phase cancelled by fail-fast); after_long, an
    # all_success phase, never starts
    plan = make_plan(
        [
            {"id": "long", "agent": "probe", "with": {"seconds": 0.3, "output": "L"}},
            {"id": "after_long", "agent": "noop", "depends_on": ["long"]},
            {"id": "boom", "agent": "probe", "with": {"seconds": 0.02, "fail": "exploded"}},
            {
                "id": "cleanup",
                "agent": "echo",
                "depends_on": ["long", "after_long", "boom"],
                "trigger": "all_done",
                "with": {
                    "text": "long {{ phases.long.status }}, after_long "
                    "{{ phases.after_long.status }}, boom {{ phases.boom.status }}"
                },
            },
            {
                "id": "any",
                "agent": "noop",
                "depends_on": ["after_long"],
                "trigger": "one_success",
            },
            # tolerant phases chain: an all_done phase after one started after the failure
            {"id": "last", "agent": "noop", "depends_on": ["cleanup"], "trigger": "all_done"},
            # an all_success phase anywhere does not start
            {"id": "strict", "agent": "noop", "depends_on": ["cleanup"]},
        ]
    )
    result, rec = go(plan)
    assert result.status == "failed"
    assert result.error == "phase 'boom' failed: exploded"
    assert Probe.cancelled == []
    assert _status(result) == {
        "long": "completed",
        "after_long": "skipped",
        "boom": "failed",
        "cleanup": "completed",
        "any": "skipped",
        "last": "completed",
        "strict": "skipped",
    }
    assert result.phases["cleanup"].output == ("long completed, after_long skipped, boom failed")
    assert rec.one("phase_skipped", "after_long").data["reason"] == "not started: the run failed"
    assert rec.one("phase_skipped", "any").data["reason"] == (
        "trigger one_success: no upstream phase completed"
    )
    assert rec.one("phase_skipped", "strict").data["reason"] == "not started: the run failed"
    # the cleanup starts only once every upstream phase ended (long finished after boom)
    assert rec.index("phase_failed", "boom") < rec.index("phase_completed", "long")
    assert rec.index("phase_completed", "long") < rec.index("phase_started", "cleanup")
    assert rec.started_order() == ["long", "boom", "cleanup", "last"]


def test_a_cancelled_run_starts_no_tolerant_phase(go):
    plan = make_plan(
        [
            {"id": "slow", "agent": "probe", "with": {"seconds": 30}},
            {"id": "always", "agent": "noop", "depends_on": ["slow"], "trigger": "all_done"},
        ],
        timeout=0.05,
    )
    result, rec = go(plan)
    assert result.error == "the run timed out after 50ms"
    assert rec.started_order() == ["slow"]
    assert rec.one("phase_skipped", "always").data["reason"] == "not started: the run timed out"


def test_orch_run_runs_the_one_success_phase_and_exits_1(tmp_path: Path):
    path = tmp_path / "wf.yaml"
    path.write_text(
        """
name: fallback-by-trigger
phases:
  - id: primary
    agent: fail
  - id: backup
    agent: sleep
    with: {seconds: 0.3, output: saved}
  - id: use_any
    agent: echo
    depends_on: [primary, backup]
    trigger: one_success
    with: {text: "{{ phases.backup.output }}"}
outputs:
  got: "{{ phases.use_any.output }}"
"""
    )
    result = CliRunner().invoke(
        app, ["run", str(path), "--events", "jsonl", "--state-dir", str(tmp_path / "state")]
    )
    assert result.exit_code == 1, result.output
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    ended = {
        e["phase"]: e["data"]["status"]
        for e in events
        if e["event"] in ("phase_completed", "phase_failed", "phase_skipped")
    }
    assert ended == {"backup": "completed", "primary": "failed", "use_any": "completed"}
    assert events[-1]["event"] == "workflow_failed"
    assert events[-1]["data"]["outputs"] == {"got": "saved"}


def test_a_failure_lets_the_upstream_of_a_tolerant_phase_finish_and_cancels_the_rest(go):
    # primary fails while backup and unrelated are still running: backup feeds a
    # one_success phase, so it finishes; unrelated feeds nothing tolerant: cancelled
    plan = make_plan(
        [
            {"id": "primary", "agent": "probe", "with": {"seconds": 0.0, "fail": "down"}},
            {"id": "backup", "agent": "probe", "with": {"seconds": 0.3, "output": "B"}},
            {"id": "unrelated", "agent": "probe", "with": {"seconds": 5}},
            {
                "id": "use_any",
                "agent": "echo",
                "depends_on": ["primary", "backup"],
                "trigger": "one_success",
                "with": {"text": "{{ phases.backup.output }}"},
            },
        ]
    )
    result, rec = go(plan)
    assert result.status == "failed"
    assert _status(result) == {
        "primary": "failed",
        "backup": "completed",
        "unrelated": "cancelled",
        "use_any": "completed",
    }
    assert result.phases["use_any"].output == "B"
    assert Probe.cancelled == ["unrelated"]
    assert rec.index("phase_failed", "primary") < rec.index("phase_completed", "backup")


def test_a_later_failure_does_not_cancel_a_phase_started_after_the_first(go):
    plan = make_plan(
        [
            {"id": "boom", "agent": "fail"},
            {
                "id": "slow_cleanup",
                "agent": "probe",
                "depends_on": ["boom"],
                "trigger": "all_done",
                "with": {"seconds": 0.05, "output": "cleaned"},
            },
            {"id": "bad_cleanup", "agent": "fail", "depends_on": ["boom"], "trigger": "all_done"},
        ]
    )
    result, rec = go(plan)
    assert _status(result) == {
        "boom": "failed",
        "slow_cleanup": "completed",
        "bad_cleanup": "failed",
    }
    assert Probe.cancelled == []
    assert rec.index("phase_failed", "bad_cleanup") < rec.index("phase_completed", "slow_cleanup")
    assert result.error == "phase 'boom' failed: failing on purpose (attempt 1) (and 1 more)"

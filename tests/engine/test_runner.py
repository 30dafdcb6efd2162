"""Scheduling: order, overlap, limits, priorities, trigger rules, fail-fast, continue_on_error."""

from __future__ import annotations

from .conftest import Probe, make_plan


def _running_peak(rec) -> int:
    running = peak = 0
    for e in rec.events:
        if e.event == "phase_started":
            running += 1
            peak = max(peak, running)
        elif e.event in ("phase_completed", "phase_failed") and e.phase:
            running -= 1
    return peak


def test_a_phase_starts_as_soon_as_its_own_dependencies_finish_not_its_level(go):
    plan = make_plan(
        [
            {"id": "slow", "agent": "probe", "with": {"seconds": 0.3}},
            {"id": "fast", "agent": "probe", "with": {"seconds": 0.0}},
            {"id": "after_fast", "agent": "probe", "depends_on": ["fast"]},
        ]
    )
    result, rec = go(plan)
    assert result.status == "completed"
    assert rec.index("phase_started", "after_fast") < rec.index("phase_completed", "slow")


def test_independent_branches_overlap(go):
    plan = make_plan(
        [
            {"id": "a", "agent": "probe", "with": {"seconds": 0.05, "key": "k"}},
            {"id": "b", "agent": "probe", "with": {"seconds": 0.05, "key": "k"}},
        ]
    )
    result, rec = go(plan)
    assert result.status == "completed"
    assert rec.index("phase_started", "b") < rec.index("phase_completed", "a")
    assert Probe.peak["k"] == 2


def test_max_parallel_bounds_phases_running_at_once(go):
    phases = [{"id": f"p{i}", "agent": "probe", "with": {"key": "k"}} for i in range(8)]
    result, rec = go(make_plan(phases, max_parallel=3))
    assert result.status == "completed"
    assert _running_peak(rec) == 3
    assert Probe.peak["k"] == 3


def test_run_options_max_parallel_overrides_the_workflow(go):
    from orchestrator.engine import RunOptions

    phases = [{"id": f"p{i}", "agent": "probe", "with": {"key": "k"}} for i in range(5)]
    result, rec = go(make_plan(phases, max_parallel=4), options=RunOptions(max_parallel=1))
    assert _running_peak(rec) == 1
    assert Probe.peak["k"] == 1


def test_priority_then_longest_remaining_path_order_ready_phases(go):
    plan = make_plan(
        [
            {"id": "short", "agent": "noop"},
            {"id": "head", "agent": "noop"},
            {"id": "mid", "agent": "noop", "depends_on": ["head"]},
            {"id": "tail", "agent": "noop", "depends_on": ["mid"]},
            {"id": "bg", "agent": "noop", "priority": "background", "estimated_duration": 99},
            {"id": "urgent", "agent": "noop", "priority": "critical"},
            {"id": "heavy", "agent": "noop", "estimated_duration": 5},
        ],
        max_parallel=1,
    )
    result, rec = go(plan)
    assert result.status == "completed"
    # critical first; then the longest remaining path (heavy 5, head->mid->tail 3, mid 2);
    # ties keep YAML order (short before tail); background last whatever its weight
    assert rec.started_order() == ["urgent", "heavy", "head", "mid", "short", "tail", "bg"]


def test_trigger_rules_and_skip_propagation(go):
    plan = make_plan(
        [
            {"id": "bad", "agent": "fail"},
            {"id": "good", "agent": "noop"},
            {"id": "needs_bad", "agent": "noop", "depends_on": ["bad"]},
            {"id": "needs_skipped", "agent": "noop", "depends_on": ["needs_bad"]},
            {"id": "always", "agent": "noop", "depends_on": ["bad"], "trigger": "all_done"},
            {
                "id": "tolerant",
                "agent": "noop",
                "depends_on": ["needs_bad", "good"],
                "trigger": "none_failed",
            },
            {"id": "strict_nf", "agent": "noop", "depends_on": ["bad"], "trigger": "none_failed"},
            {"id": "any", "agent": "noop", "depends_on": ["bad", "good"], "trigger": "one_success"},
            {"id": "none", "agent": "noop", "depends_on": ["bad"], "trigger": "one_success"},
        ],
        error_handling={"continue_on_error": True},
    )
    result, rec = go(plan)
    status = {pid: o.status for pid, o in result.phases.items()}
    assert status == {
        "bad": "failed",
        "good": "completed",
        "needs_bad": "skipped",
        "needs_skipped": "skipped",
        "always": "completed",
        "tolerant": "completed",
        "strict_nf": "skipped",
        "any": "completed",
        "none": "skipped",
    }
    assert rec.one("phase_skipped", "needs_bad").data["reason"] == "upstream 'bad' failed"
    assert (
        rec.one("phase_skipped", "needs_skipped").data["reason"] == "upstream 'needs_bad' skipped"
    )
    assert result.status == "failed"
    assert result.error.startswith("phase 'bad' failed: ")


def test_fail_fast_cancels_running_phases_and_starts_nothing_new(go):
    plan = make_plan(
        [
            {"id": "long", "agent": "probe", "with": {"seconds": 30}},
            {"id": "boom", "agent": "probe", "with": {"seconds": 0.01, "fail": "exploded"}},
            {"id": "later", "agent": "noop", "depends_on": ["boom"], "trigger": "none_failed"},
            {"id": "after_long", "agent": "noop", "depends_on": ["long"]},
        ]
    )
    result, rec = go(plan)
    assert result.status == "failed"
    assert result.error == "phase 'boom' failed: exploded"
    assert Probe.cancelled == ["long"]
    failed = rec.one("phase_failed", "long")
    assert failed.data["status"] == "cancelled"
    assert result.phases["long"].status == "cancelled"
    assert "later" not in rec.started_order() and "after_long" not in rec.started_order()
    assert rec.one("phase_skipped", "later").data["reason"] == "not started: the run failed"
    assert rec.one("phase_skipped", "after_long").data["reason"] == "not started: the run failed"
    assert rec.kinds()[-1] == "workflow_failed"
    assert rec.events[-1].data["counts"] == {"cancelled": 1, "failed": 1, "skipped": 2}


def test_continue_on_error_phase_lets_dependents_read_its_status(go):
    plan = make_plan(
        [
            {"id": "risky", "agent": "fail", "continue_on_error": True},
            {
                "id": "report",
                "agent": "echo",
                "with": {"text": "risky was {{ phases.risky.status }}: {{ phases.risky.error }}"},
            },
        ]
    )
    result, rec = go(plan)
    assert result.status == "completed"
    assert result.phases["report"].output == "risky was failed: failing on purpose (attempt 1)"
    assert rec.one("phase_failed", "risky").data["continue_on_error"] is True


def test_workflow_continue_on_error_runs_independent_branches_then_fails(go):
    plan = make_plan(
        [
            {"id": "bad", "agent": "probe", "with": {"seconds": 0.0, "fail": "no"}},
            {"id": "slow", "agent": "probe", "with": {"seconds": 0.05}},
            {"id": "after_slow", "agent": "noop", "depends_on": ["slow"]},
            {"id": "after_bad", "agent": "noop", "depends_on": ["bad"]},
        ],
        error_handling={"continue_on_error": True},
    )
    result, rec = go(plan)
    assert result.status == "failed"
    assert result.phases["after_slow"].status == "completed"
    assert result.phases["after_bad"].status == "skipped"
    assert rec.index("phase_failed", "bad") < rec.index("phase_started", "after_slow")


def test_a_plugin_bug_is_a_failed_phase_not_a_crash(go):
    result, rec = go(make_plan([{"id": "x", "agent": "broken"}]))
    assert result.status == "failed"
    assert rec.one("phase_failed", "x").data["error"] == "ValueError: plugin bug"


def test_prior_outcomes_are_not_run_again(go):
    from orchestrator.engine import PhaseOutcome

    plan = make_plan(
        [
            {"id": "a", "agent": "probe", "with": {"output": "fresh"}},
            {"id": "b", "agent": "echo", "with": {"text": "{{ phases.a.output }}"}},
        ]
    )
    prior = {"a": PhaseOutcome("a", "completed", output="stored", attempts=1)}
    result, rec = go(plan, prior=prior)
    assert Probe.calls == []
    assert rec.started_order() == ["b"]
    assert result.phases["b"].output == "stored"
    assert result.completion_order == ("a", "b")


def test_unknown_agent_type_is_refused_before_any_event(go):
    import pytest

    from orchestrator.errors import AgentNotFound

    with pytest.raises(AgentNotFound, match="unknown agent type 'ecko'"):
        go(make_plan([{"id": "x", "agent": "ecko"}]))

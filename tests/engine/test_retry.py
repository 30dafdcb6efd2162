"""Retries: counted, bounded, backoff shapes, retry_after, permanent failures, the run-wide cap."""

from __future__ import annotations

import pytest

from .conftest import make_plan


def test_retries_are_counted_and_the_phase_completes_on_a_later_attempt(go):
    plan = make_plan(
        [{"id": "x", "agent": "fail", "with": {"times": 2}, "retries": {"attempts": 3, "delay": 0}}]
    )
    result, rec = go(plan)
    assert result.status == "completed"
    retries = rec.of("phase_retry", "x")
    assert [(e.attempt, e.data["next_attempt"]) for e in retries] == [(1, 2), (2, 3)]
    assert retries[0].data["error"] == "failing on purpose (attempt 1)"
    done = rec.one("phase_completed", "x")
    assert done.attempt == 3 and done.data["attempts"] == 3
    assert done.data["output"] == "succeeded on attempt 3"


def test_retries_are_bounded_by_attempts(go):
    plan = make_plan([{"id": "x", "agent": "fail", "retries": {"attempts": 2, "delay": 0}}])
    result, rec = go(plan)
    assert result.status == "failed"
    assert len(rec.of("phase_retry", "x")) == 2
    failed = rec.one("phase_failed", "x")
    assert failed.data["attempts"] == 3
    assert failed.data["error"] == "failing on purpose (attempt 3)"


@pytest.mark.parametrize(
    ("backoff", "delays"),
    [
        ("exponential", [0.001, 0.002, 0.004, 0.005]),
        ("linear", [0.001, 0.002, 0.003, 0.004]),
        ("fixed", [0.001, 0.001, 0.001, 0.001]),
    ],
)
def test_backoff_shapes_with_max_delay(go, backoff, delays):
    retries = {"attempts": 4, "backoff": backoff, "delay": 0.001, "max_delay": 0.005}
    plan = make_plan([{"id": "x", "agent": "fail", "retries": retries}])
    _, rec = go(plan)
    assert [e.data["delay"] for e in rec.of("phase_retry")] == pytest.approx(delays)


def test_jitter_adds_at_most_its_bound(go):
    retries = {"attempts": 3, "backoff": "fixed", "delay": 0.001, "jitter": 0.002}
    _, rec = go(make_plan([{"id": "x", "agent": "fail", "retries": retries}]))
    for e in rec.of("phase_retry"):
        assert 0.001 <= e.data["delay"] <= 0.003


def test_retry_after_is_the_minimum_wait(go):
    plan = make_plan(
        [
            {
                "id": "x",
                "agent": "flaky",
                "with": {"times": 1, "retry_after": 0.02},
                "retries": {"attempts": 2, "delay": 0.001},
            }
        ]
    )
    result, rec = go(plan)
    assert result.phases["x"].output == {"attempt": 2}
    assert rec.one("phase_retry", "x").data["delay"] == pytest.approx(0.02)


def test_a_permanent_failure_is_never_retried(go):
    plan = make_plan(
        [
            {
                "id": "x",
                "agent": "fail",
                "with": {"transient": False},
                "retries": {"attempts": 5, "delay": 0},
            }
        ]
    )
    result, rec = go(plan)
    assert rec.of("phase_retry") == []
    assert result.phases["x"].attempts == 1


def test_on_timeout_only_does_not_retry_errors(go):
    retries = {"attempts": 3, "delay": 0, "on": ("timeout",)}
    plan = make_plan(
        [
            {"id": "err", "agent": "fail", "retries": retries},
            {
                "id": "slow",
                "agent": "probe",
                "with": {"seconds": 30},
                "timeout": 0.02,
                "retries": retries,
            },
        ],
        error_handling={"continue_on_error": True},
    )
    result, rec = go(plan)
    assert rec.of("phase_retry", "err") == []
    assert len(rec.of("phase_retry", "slow")) == 3
    assert rec.of("phase_retry", "slow")[0].data["error"] == "timed out after 20ms"
    assert result.phases["slow"].attempts == 4


def test_max_total_retries_caps_the_whole_run(go):
    retries = {"attempts": 5, "delay": 0}
    plan = make_plan(
        [
            {"id": "a", "agent": "fail", "retries": retries},
            {"id": "b", "agent": "fail", "retries": retries},
        ],
        error_handling={"continue_on_error": True, "max_total_retries": 3},
    )
    result, rec = go(plan)
    assert len(rec.of("phase_retry")) == 3
    assert result.phases["a"].attempts + result.phases["b"].attempts == 2 + 3


def test_the_last_attempt_spends_no_retry_budget(go):
    plan = make_plan(
        [
            {"id": "a", "agent": "fail", "retries": {"attempts": 1, "delay": 0}},
            {
                "id": "b",
                "agent": "fail",
                "retries": {"attempts": 2, "delay": 0},
                "trigger": "all_done",
            },
        ],
        mode="sequential",
        error_handling={"continue_on_error": True, "max_total_retries": 3},
    )
    result, rec = go(plan)
    assert [e.phase for e in rec.of("phase_retry")] == ["a", "b", "b"]
    assert (result.phases["a"].attempts, result.phases["b"].attempts) == (2, 3)


def test_the_budget_that_cut_the_retries_is_named_in_the_error(go):
    plan = make_plan(
        [{"id": "x", "agent": "fail", "retries": {"attempts": 5, "delay": 0}}],
        error_handling={"max_total_retries": 1},
    )
    result, rec = go(plan)
    failed = rec.one("phase_failed", "x")
    assert failed.data["attempts"] == 2
    assert failed.data["error"] == (
        "failing on purpose (attempt 2); the run's retry budget (max_total_retries: 1) was used up"
    )
    assert result.error == f"phase 'x' failed: {failed.data['error']}"


def test_retries_cut_by_their_own_attempts_do_not_blame_the_budget(go):
    plan = make_plan(
        [{"id": "x", "agent": "fail", "retries": {"attempts": 1, "delay": 0}}],
        error_handling={"max_total_retries": 1},
    )
    result, rec = go(plan)
    assert rec.one("phase_failed", "x").data["error"] == "failing on purpose (attempt 2)"


def test_a_run_timeout_reports_the_attempts_the_phase_really_made(go):
    retries = {"attempts": 50, "delay": 0, "on": ("timeout",)}
    plan = make_plan(
        [
            {
                "id": "x",
                "agent": "probe",
                "with": {"seconds": 30},
                "timeout": 0.03,
                "retries": retries,
            }
        ],
        timeout=0.3,
    )
    result, rec = go(plan)
    assert result.error == "the run timed out after 300ms"
    retried = rec.of("phase_retry", "x")
    assert len(retried) >= 1
    last = retried[-1].data["next_attempt"]
    failed = rec.one("phase_failed", "x")
    assert failed.data["status"] == "cancelled"
    attempts = failed.data["attempts"]
    # the attempt announced last, or the one before when the run ended in the retry's wait
    assert attempts in (last, last - 1) and attempts >= 2
    assert failed.attempt == attempts == result.phases["x"].attempts


def test_a_cancelled_foreach_reports_the_attempts_of_its_items(go):
    retries = {"attempts": 50, "delay": 0, "on": ("timeout",)}
    plan = make_plan(
        [
            {
                "id": "each",
                "agent": "probe",
                "foreach": [1, 2],
                "with": {"seconds": 30},
                "timeout": 0.03,
                "retries": retries,
            }
        ],
        timeout=0.3,
    )
    result, rec = go(plan)
    last = max(e.data["next_attempt"] for e in rec.of("phase_retry", "each"))
    failed = rec.one("phase_failed", "each")
    assert failed.data["attempts"] in (last, last - 1) and failed.data["attempts"] >= 2
    assert failed.attempt == failed.data["attempts"] == result.phases["each"].attempts

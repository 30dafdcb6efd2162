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
    assert rec.of("phase_retry", "slow")[0].data["error"] == "phase 'slow' timed out after 20ms"
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

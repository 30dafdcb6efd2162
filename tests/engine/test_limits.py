"""Per-agent limits: max_concurrency, rate_limit (token bucket), circuit breaker; and handoff."""

from __future__ import annotations

import asyncio

from orchestrator.engine import RunOptions, RunResult, execute

from .conftest import Probe, make_plan

#: Seconds a test waits for something before failing: a bound on a hang, not a timing.
BOUND = 60.0


def test_max_concurrency_bounds_calls_on_one_agent(go):
    plan = make_plan(
        [{"id": f"p{i}", "agent": "api", "with": {"key": "api"}} for i in range(6)]
        + [{"id": "other", "agent": "probe", "with": {"key": "other"}}],
        agents={"api": {"type": "probe", "max_concurrency": 2}},
    )
    result, rec = go(plan)
    assert result.status == "completed"
    assert Probe.peak["api"] == 2
    # the limit is per agent: the other agent's phase is not held back behind it
    assert rec.index("phase_completed", "other") < rec.index("phase_completed", "p5")


def test_rate_limit_spaces_calls_beyond_the_burst_in_arrival_order(registry):
    # The run's monotonic clock (RunOptions.monotonic, what the token bucket reads) is the
    # test's: it moves only when the test moves it, so each call the bucket lets through
    # is counted against time the test controls, never against the machine's load.
    now = [0.0]
    plan = make_plan(
        [{"id": f"p{i}", "agent": "api", "with": {"seconds": 0}} for i in range(6)],
        agents={"api": {"type": "probe", "rate_limit": (2, 0.5)}},  # a token every 0.25 s
    )

    async def main() -> tuple[RunResult, list[int]]:
        options = RunOptions(monotonic=lambda: now[0])
        run = asyncio.ensure_future(execute(plan, registry=registry, options=options))
        counts = [await _calls_reach(2, run)]  # the bucket starts full: two at once
        await asyncio.sleep(0.5)  # two tokens' worth of wall-clock time: it does not count
        counts.append(len(Probe.calls))
        for _ in range(4):
            now[0] += 0.25  # one more token, so exactly one more call
            counts.append(await _calls_reach(counts[-1] + 1, run))
        return await asyncio.wait_for(run, BOUND), counts

    result, counts = asyncio.run(main())
    assert result.status == "completed"
    assert counts == [2, 2, 3, 4, 5, 6]
    assert [pid for pid, _ in Probe.calls] == [f"p{i}" for i in range(6)]


async def _calls_reach(count: int, run: asyncio.Future[RunResult]) -> int:
    """How many calls were made once there are ``count`` (a bound on a hang, not a timing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    while len(Probe.calls) < count:
        assert not run.done(), f"the run ended after {len(Probe.calls)} calls: {run.result()}"
        assert loop.time() < deadline, f"{len(Probe.calls)} calls, never {count}"
        await asyncio.sleep(0.01)
    return len(Probe.calls)


def test_circuit_breaker_opens_after_consecutive_failures_then_half_opens(go):
    fail = {"seconds": 0, "fail": "down"}
    plan = make_plan(
        [
            {"id": "f1", "agent": "crm", "with": fail, "continue_on_error": True},
            {"id": "f2", "agent": "crm", "with": fail, "continue_on_error": True},
            {"id": "refused", "agent": "crm", "with": {"seconds": 0}, "continue_on_error": True},
            {"id": "pause", "agent": "sleep", "with": {"seconds": 0.08}},
            {"id": "trial", "agent": "crm", "with": {"seconds": 0, "output": "up"}},
            {"id": "closed", "agent": "crm", "with": {"seconds": 0, "output": "up"}},
        ],
        mode="sequential",
        agents={"crm": {"type": "probe", "circuit_breaker": (2, 0.05)}},
    )
    result, rec = go(plan)
    assert result.status == "completed"
    error = rec.one("phase_failed", "refused").data["error"]
    assert error == (  # reset_after 0.05 s, a moment ago
        "circuit breaker of agent 'crm' is open after 2 consecutive failures; calls resume after "
        + error.rsplit(" ", 1)[1]
    )
    assert error.endswith("ms")
    assert [pid for pid, _ in Probe.calls] == ["f1", "f2", "trial", "closed"]
    assert result.phases["closed"].output == "up"


def test_a_failed_half_open_trial_opens_the_breaker_again(go):
    fail = {"seconds": 0, "fail": "down"}
    plan = make_plan(
        [
            {"id": "f1", "agent": "crm", "with": fail, "continue_on_error": True},
            {"id": "pause", "agent": "sleep", "with": {"seconds": 0.08}},
            {"id": "trial", "agent": "crm", "with": fail, "continue_on_error": True},
            {"id": "refused", "agent": "crm", "with": {"seconds": 0}, "retries": 3},
        ],
        mode="sequential",
        agents={"crm": {"type": "probe", "circuit_breaker": (1, 0.05)}},
    )
    result, rec = go(plan)
    assert [pid for pid, _ in Probe.calls] == ["f1", "trial"]
    assert "circuit breaker of agent 'crm' is open" in result.phases["refused"].error
    assert rec.of("phase_retry", "refused") == []  # an open breaker fails at once
    # it opened twice (each time said so); the refused call did not count as a failure
    assert [e.phase for e in rec.of("breaker_opened")] == ["f1", "trial"]


def _handoff_plan(routes, max_turns=10, agents=("a", "b", "c")):
    return make_plan(
        [
            {
                "id": "h",
                "handoff": {"agents": list(agents), "start": agents[0], "max_turns": max_turns},
                "with": {"routes": routes},
            }
        ],
        agents={name: {"type": "router"} for name in ("a", "b", "c")},
    )


def test_handoff_passes_control_and_the_last_output_is_the_phase_output(go):
    result, rec = go(_handoff_plan({"a": "b", "b": "c"}))
    assert result.status == "completed"
    turns = [e.data["turn"] for e in rec.of("phase_stream", "h")]
    assert turns == [
        {"n": 1, "agent": "a", "next": "b"},
        {"n": 2, "agent": "b", "next": "c"},
        {"n": 3, "agent": "c", "next": None},
    ]
    from_a = {"from": "a", "output": {"agent": "a", "saw": None}, "turn": 2}
    assert result.phases["h"].output == {
        "agent": "c",
        "saw": {"from": "b", "output": {"agent": "b", "saw": from_a}, "turn": 3},
    }
    assert rec.one("phase_started", "h").data["agent"] == "a"


def test_handoff_to_an_undeclared_agent_fails_clearly(go):
    result, _ = go(_handoff_plan({"a": "c"}, agents=("a", "b")))
    assert result.status == "failed"
    assert result.phases["h"].error == (
        "agent 'a' handed off to 'c', which is not one of the handoff agents (a, b)"
    )


def test_handoff_beyond_max_turns_fails_clearly(go):
    result, rec = go(_handoff_plan({"a": "b", "b": "a"}, max_turns=3))
    assert result.phases["h"].error == (
        "the handoff did not finish within max_turns=3 (turn 3 by 'a' handed off to 'b')"
    )
    assert len(rec.of("phase_stream", "h")) == 3


def test_a_phase_waiting_for_a_busy_agent_does_not_hold_a_max_parallel_slot(go):
    plan = make_plan(
        [
            {"id": f"api{i}", "agent": "api", "priority": "critical", "with": {"seconds": 0.05}}
            for i in range(3)
        ]
        + [{"id": "other", "agent": "probe", "priority": "low", "with": {"seconds": 0}}],
        agents={"api": {"type": "probe", "max_concurrency": 1}},
        max_parallel=2,
    )
    result, rec = go(plan)
    assert result.status == "completed"
    # the second slot goes to 'other' while api0 holds the agent, not to api1 waiting for it
    assert rec.index("phase_started", "other") < rec.index("phase_completed", "api0")
    assert rec.started_order()[:2] == ["api0", "other"]


def test_an_open_breaker_says_when_calls_resume_in_a_rounded_duration():
    import pytest

    from orchestrator.agents.base import AgentFailure
    from orchestrator.engine.limits import CircuitBreaker
    from orchestrator.spec.model import CircuitBreakerSpec

    now = [100.0]
    breaker = CircuitBreaker("api", CircuitBreakerSpec(2, 2.0), clock=lambda: now[0])
    breaker.record(False)
    breaker.record(False)
    now[0] += 0.00066
    with pytest.raises(AgentFailure) as info:
        breaker.before_call()
    assert str(info.value) == (
        "circuit breaker of agent 'api' is open after 2 consecutive failures; calls resume after 2s"
    )


def test_a_timeout_that_opens_the_breaker_is_recorded_with_its_phase_and_attempt(go):
    plan = make_plan(
        [
            {
                "id": "slow",
                "agent": "crm",
                "with": {"seconds": 30},
                "timeout": 0.05,
                "retries": {"attempts": 2, "backoff": "fixed", "delay": 0.001},
            },
        ],
        agents={"crm": {"type": "probe", "circuit_breaker": (2, 60)}},
    )
    result, rec = go(plan)
    assert result.status == "failed"
    opened = rec.one("breaker_opened", "slow")  # once: the third attempt is refused
    assert opened.attempt == 2
    assert opened.data == {
        "agent": "crm",
        "failures": 2,
        "reset_after": 60,
        "error": "timed out after 50ms",
    }
    assert rec.kinds("slow") == [
        "phase_started",
        "phase_retry",
        "breaker_opened",
        "phase_retry",
        "phase_failed",
    ]
    assert "circuit breaker of agent 'crm' is open" in result.phases["slow"].error

"""Phase semantics: when, templates, timeouts, foreach, sequential mode, outputs, fallback."""

from __future__ import annotations

from orchestrator.engine import RunOptions

from .conftest import Probe, make_plan


def test_when_false_skips_and_true_runs(go):
    plan = make_plan(
        [
            {"id": "a", "agent": "echo", "with": {"text": {"score": 0.7}}},
            {"id": "hi", "agent": "noop", "when": "phases.a.output.score > 0.5"},
            {"id": "lo", "agent": "noop", "when": "phases.a.output.score > 0.9"},
            {"id": "after_lo", "agent": "noop", "depends_on": ["lo"]},
        ]
    )
    result, rec = go(plan)
    assert result.status == "completed"
    assert result.phases["hi"].status == "completed"
    assert rec.one("phase_skipped", "lo").data["reason"] == (
        "when is false: phases.a.output.score > 0.9"
    )
    assert result.phases["after_lo"].status == "skipped"


def test_when_is_strict_an_undefined_name_fails_the_phase(go):
    plan = make_plan([{"id": "x", "agent": "noop", "when": "inputs.typo == 1"}])
    result, rec = go(plan)
    assert result.status == "failed"
    error = rec.one("phase_failed", "x").data["error"]
    assert "'typo' is not defined" in error or "undefined" in error
    assert "phase_started" not in rec.kinds("x")


def test_a_lone_expression_keeps_its_type_and_mixed_text_is_a_string(go):
    plan = make_plan(
        [
            {
                "id": "t",
                "agent": "echo",
                "with": {
                    "text": {
                        "n": "{{ inputs.n }}",
                        "items": "{{ inputs.items }}",
                        "flag": "{{ inputs.n > 2 }}",
                        "mixed": "n={{ inputs.n }}",
                        "plain": "no template",
                    }
                },
            }
        ],
        inputs={"n": {"type": "integer"}, "items": {"type": "array"}},
    )
    result, _ = go(plan, inputs={"n": 3, "items": ["a", "b"]})
    assert result.phases["t"].output == {
        "n": 3,
        "items": ["a", "b"],
        "flag": True,
        "mixed": "n=3",
        "plain": "no template",
    }


def test_outputs_with_template_syntax_pass_three_hops_byte_for_byte(go, registry):
    raw = "{{ 7 * 6 }} {% for x in range(3) %}{{ x }}{% endfor %} {# c #} ${HOME} $(id)"
    plan = make_plan(
        [
            {"id": "src", "agent": "echo", "with": {"text": "{{ inputs.raw }}"}},
            {"id": "hop1", "agent": "echo", "with": {"text": "{{ phases.src.output }}"}},
            {"id": "hop2", "agent": "echo", "with": {"text": {"v": "{{ phases.hop1.output }}"}}},
            {"id": "hop3", "agent": "echo", "with": {"text": "{{ phases.hop2.output.v }}"}},
            {"id": "spliced", "agent": "echo", "with": {"text": "<{{ phases.hop3.output }}>"}},
        ],
        inputs={"raw": {"type": "string"}},
        outputs={"final": "{{ phases.hop3.output }}"},
    )
    result, rec = go(plan, inputs={"raw": raw})
    assert result.phases["hop3"].output == raw
    assert result.phases["spliced"].output == f"<{raw}>"
    assert result.outputs == {"final": raw}
    assert rec.one("phase_completed", "hop3").data["output"] == raw


def test_phase_timeout_cancels_the_agent(go):
    plan = make_plan([{"id": "slow", "agent": "probe", "with": {"seconds": 30}, "timeout": 0.05}])
    result, rec = go(plan)
    assert result.status == "failed"
    assert Probe.cancelled == ["slow"]
    assert rec.one("phase_failed", "slow").data["error"] == "timed out after 50ms"


def test_run_timeout_cancels_running_phases_and_fails_the_run(go):
    plan = make_plan(
        [
            {"id": "slow", "agent": "probe", "with": {"seconds": 30}},
            {"id": "next", "agent": "noop", "depends_on": ["slow"]},
        ],
        timeout=0.05,
    )
    result, rec = go(plan)
    assert result.status == "failed"
    assert result.error == "the run timed out after 50ms"
    assert Probe.cancelled == ["slow"]
    assert rec.one("phase_failed", "slow").data["status"] == "cancelled"
    assert result.phases["next"].status == "skipped"
    assert rec.kinds()[-1] == "workflow_failed"


def test_foreach_keeps_input_order_and_never_exceeds_its_bound(go):
    items = [0.03, 0.0, 0.02, 0.0, 0.01, 0.0, 0.02, 0.0]
    plan = make_plan(
        [
            {
                "id": "each",
                "agent": "probe",
                "foreach": "{{ inputs.items }}",
                "max_parallel": 3,
                "with": {"seconds": "{{ item }}", "output": "{{ index }}:{{ item }}", "key": "f"},
            }
        ],
        inputs={"items": {"type": "array"}},
    )
    result, rec = go(plan, inputs={"items": items})
    assert result.status == "completed"
    assert result.phases["each"].output == [f"{i}:{v}" for i, v in enumerate(items)]
    assert Probe.peak["f"] == 3
    assert rec.one("phase_started", "each").data["items"] == 8
    progress = [e.data["progress"] for e in rec.of("phase_stream", "each")]
    assert progress == [{"done": n, "total": 8} for n in range(1, 9)]


def test_foreach_a_failed_item_keeps_its_error_and_fails_the_phase(go):
    plan = make_plan(
        [
            {
                "id": "each",
                "agent": "probe",
                "foreach": [{"fail": None}, {"fail": "item broke"}, {"fail": None}],
                "with": {"seconds": 0, "fail": "{{ item.fail }}", "output": "{{ index }}"},
            }
        ]
    )
    result, rec = go(plan)
    assert result.status == "failed"
    outcome = result.phases["each"]
    assert outcome.output == [0, {"error": "item broke"}, 2]
    failed = rec.one("phase_failed", "each")
    assert failed.data["error"] == "1 of 3 items failed; item 2 of 3 (index 1): item broke"
    assert failed.data["output"] == [0, {"error": "item broke"}, 2]


def test_foreach_that_is_not_a_list_fails_clearly(go):
    plan = make_plan([{"id": "each", "agent": "noop", "foreach": "{{ 'abc' }}"}])
    result, rec = go(plan)
    assert rec.one("phase_failed", "each").data["error"] == "foreach must give a list, got str"


def test_sequential_mode_gives_previous(go):
    plan = make_plan(
        [
            {"id": "research", "agent": "echo", "with": {"text": "facts"}},
            {"id": "write", "agent": "echo", "with": {"text": "draft of {{ previous.output }}"}},
            {"id": "edit", "agent": "echo", "with": {"text": "{{ previous.output | upper }}"}},
        ],
        mode="sequential",
    )
    result, rec = go(plan)
    assert result.phases["edit"].output == "DRAFT OF FACTS"
    assert rec.started_order() == ["research", "write", "edit"]


def test_fallback_runs_once_after_the_last_attempt(go):
    plan = make_plan(
        [
            {
                "id": "x",
                "agent": "fail",
                "retries": {"attempts": 1, "delay": 0.001},
                "fallback": {"agent": "echo", "with": {"text": "plan B for {{ run.workflow }}"}},
            }
        ]
    )
    result, rec = go(plan)
    assert result.status == "completed"
    done = rec.one("phase_completed", "x")
    assert done.data["output"] == "plan B for test"
    assert done.data["fallback_used"] is True
    assert len(rec.of("phase_retry", "x")) == 1


def test_a_failing_fallback_fails_the_phase_with_both_errors(go):
    plan = make_plan(
        [{"id": "x", "agent": "fail", "fallback": {"agent": "fail", "with": {"message": "B"}}}]
    )
    result, rec = go(plan)
    assert result.phases["x"].error == "failing on purpose (attempt 1); fallback failed: B"


def test_named_agent_with_is_merged_under_the_phase_with(go):
    plan = make_plan(
        [{"id": "x", "agent": "greeter", "with": {"b": "phase", "c": "{{ run.id }}"}}],
        agents={"greeter": {"type": "echo", "with": {"a": "agent", "b": "agent"}}},
    )
    result, _ = go(plan, run_id="r1")
    assert result.phases["x"].output == {"a": "agent", "b": "phase", "c": "r1"}


def test_workflow_outputs_are_rendered_at_the_end(go):
    plan = make_plan(
        [{"id": "a", "agent": "echo", "with": {"text": [1, 2, 3]}}],
        outputs={"total": "{{ phases.a.output | sum }}", "fixed": "x"},
    )
    result, rec = go(plan)
    assert result.outputs == {"total": 6, "fixed": "x"}
    assert rec.events[-1].data["outputs"] == {"total": 6, "fixed": "x"}


def test_an_output_that_cannot_render_fails_the_run(go):
    plan = make_plan([{"id": "a", "agent": "noop"}], outputs={"x": "{{ phases.a.output.nope }}"})
    result, _ = go(plan)
    assert result.status == "failed"
    assert result.error.startswith("output 'x': ")


def test_events_use_the_injected_clock(go):
    ticks = iter(range(1000, 2000))
    plan = make_plan([{"id": "a", "agent": "noop"}])
    result, rec = go(plan, options=RunOptions(clock=lambda: float(next(ticks))))
    assert [e.ts for e in rec.events] == [1001.0, 1003.0, 1005.0, 1007.0]
    assert result.phases["a"].duration == 2.0


def test_a_template_error_in_with_fails_the_phase_without_retrying(go):
    plan = make_plan(
        [{"id": "x", "agent": "echo", "with": {"text": "{{ inputs.nope }}"}, "retries": 3}]
    )
    result, rec = go(plan)
    assert result.status == "failed"
    assert "undefined" in result.phases["x"].error or "nope" in result.phases["x"].error
    assert rec.of("phase_retry") == []
    assert rec.kinds("x") == ["phase_started", "phase_failed"]


class MemoryCache:
    """A ResultCache kept in a dict, keyed by phase id, agent type and input."""

    def __init__(self):
        self.store = {}

    async def get(self, phase, agent_type, input):
        return self.store.get((phase.id, agent_type, repr(sorted(input.items()))))

    async def put(self, phase, agent_type, input, result):
        self.store[(phase.id, agent_type, repr(sorted(input.items())))] = result


def test_a_cached_phase_is_not_called_again_unless_no_cache(go):
    from orchestrator.spec.model import CacheSpec

    plan = make_plan(
        [
            {"id": "c", "agent": "probe", "with": {"output": "v"}, "cache": CacheSpec()},
            {"id": "u", "agent": "probe", "with": {"output": "w"}},
        ]
    )
    cache = MemoryCache()
    go(plan, options=RunOptions(cache=cache))
    assert sorted(pid for pid, _ in Probe.calls) == ["c", "u"]
    Probe.calls.clear()
    result, rec = go(plan, options=RunOptions(cache=cache))
    assert [pid for pid, _ in Probe.calls] == ["u"]
    assert rec.one("phase_completed", "c").data["cached"] is True
    assert result.phases["c"].output == "v"
    Probe.calls.clear()
    go(plan, options=RunOptions(cache=cache, no_cache=True))
    assert sorted(pid for pid, _ in Probe.calls) == ["c", "u"]


def test_the_fallback_has_the_phase_timeout_too(go):
    plan = make_plan(
        [
            {
                "id": "x",
                "agent": "fail",
                "timeout": 0.05,
                "fallback": {"agent": "probe", "with": {"seconds": 30}},
            }
        ]
    )
    result, _ = go(plan)
    assert result.phases["x"].error == (
        "failing on purpose (attempt 1); fallback failed: timed out after 50ms"
    )
    assert Probe.cancelled == ["x"]


def test_token_usage_adds_up_over_foreach_items_and_the_run(go):
    used = {"tokens": {"prompt": 3, "completion": 2, "total": 5}}
    plan = make_plan(
        [
            {
                "id": "each",
                "agent": "probe",
                "foreach": [1, 2, 3],
                "with": {"seconds": 0, "metadata": used},
            },
            {"id": "one", "agent": "probe", "with": {"seconds": 0, "metadata": used}},
        ]
    )
    result, rec = go(plan)
    assert result.phases["each"].metadata == {"tokens": {"prompt": 9, "completion": 6, "total": 15}}
    assert rec.events[-1].data["tokens"] == {"prompt": 12, "completion": 8, "total": 20}


def test_shell_fields_are_rendered_shell_quoted_and_other_keys_keep_types(go, registry):
    from typing import Any, ClassVar

    from orchestrator.agents import Agent

    class ShellLike(Agent):
        name = "shell_like"
        config_schema: ClassVar[dict[str, Any]] = {"type": "object"}
        shell_fields: ClassVar[tuple[str, ...]] = ("command",)

        async def run(self, input, ctx):
            return dict(input)

    registry.register(ShellLike)
    payload = "a b; touch /tmp/x $(id)"
    plan = make_plan(
        [
            {
                "id": "s",
                "agent": "shell_like",
                "with": {"command": "echo {{ inputs.p }}", "env": {"P": "{{ inputs.p }}"}},
            }
        ],
        inputs={"p": {"type": "string"}},
    )
    result, _ = go(plan, inputs={"p": payload})
    assert result.phases["s"].output == {
        "command": "echo 'a b; touch /tmp/x $(id)'",
        "env": {"P": payload},
    }


def test_the_agent_deadline_is_the_nearer_of_phase_and_run_timeouts(go, registry):
    import time
    from typing import Any, ClassVar

    from orchestrator.agents import Agent

    class Deadline(Agent):
        name = "deadline"
        config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

        async def run(self, input, ctx):
            return None if ctx.deadline is None else ctx.deadline - time.monotonic()

    registry.register(Deadline)
    plan = make_plan(
        [
            {"id": "run_bound", "agent": "deadline", "timeout": 100},
            {"id": "phase_bound", "agent": "deadline", "timeout": 2},
        ],
        timeout=30,
    )
    result, _ = go(plan)
    assert 0 < result.phases["run_bound"].output <= 30
    assert 0 < result.phases["phase_bound"].output <= 2
    result, _ = go(make_plan([{"id": "free", "agent": "deadline"}]))
    assert result.phases["free"].output is None

"""The Python API and the event stream: run, run_sync, sinks, secrets, cancellation, agents."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, ClassVar

import pytest

import orchestrator
from orchestrator.agents import Agent, AgentResult
from orchestrator.engine import RunOptions, execute, run, run_sync
from orchestrator.errors import UsageError

from .conftest import Probe, Recorder, make_plan, make_workflow

SECRET = "s3cr3t-Value/42+x"


def test_the_package_exposes_the_engine_lazily():
    assert orchestrator.run_sync is run_sync
    assert orchestrator.run is run
    assert orchestrator.RunOptions is RunOptions


def test_run_sync_returns_the_result(registry):
    plan = make_plan([{"id": "a", "agent": "echo", "with": {"text": "hi"}}], outputs={"o": "x"})
    result = run_sync(plan, registry=registry, run_id="r-1")
    assert (result.run_id, result.status, result.outputs) == ("r-1", "completed", {"o": "x"})
    assert result.phases["a"].output == "hi"


def test_run_is_an_async_iterator_of_the_events(registry):
    plan = make_plan([{"id": "a", "agent": "noop"}, {"id": "b", "agent": "noop"}])

    async def main():
        return [e.event async for e in run(plan, registry=registry)]

    kinds = asyncio.run(main())
    assert kinds[0] == "workflow_started" and kinds[-1] == "workflow_completed"
    assert kinds.count("phase_completed") == 2


def test_leaving_the_event_loop_early_cancels_the_run(registry):
    plan = make_plan([{"id": "long", "agent": "probe", "with": {"seconds": 30}}])

    async def main():
        async for event in run(plan, registry=registry):
            if event.event == "phase_started":
                break

    asyncio.run(main())
    assert Probe.cancelled == ["long"]


def test_an_async_sink_acknowledges_phase_started_before_the_agent_is_called(registry):
    plan = make_plan([{"id": "a", "agent": "probe", "with": {"seconds": 0}}])

    async def store(event):
        if event.event == "phase_started":
            await asyncio.sleep(0.01)
            Probe.calls.append(("ack", event.phase))

    asyncio.run(execute(plan, registry=registry, sinks=[store]))
    assert Probe.calls == [("ack", "a"), ("a", None)]


def test_secrets_are_masked_in_every_event_but_reach_the_agent(registry, monkeypatch):
    monkeypatch.setenv("ORCH_TEST_TOKEN", SECRET)
    wf = make_workflow(
        [
            {"id": "use", "agent": "echo", "with": {"text": "token={{ secrets.ORCH_TEST_TOKEN }}"}},
            {
                "id": "leak",
                "agent": "fail",
                "with": {"message": "bad key {{ secrets.ORCH_TEST_TOKEN }}"},
                "continue_on_error": True,
            },
            {
                "id": "stream",
                "agent": "streamer",
                "with": {"pieces": ["abc " + SECRET[:5], SECRET[5:11], SECRET[11:] + " end"]},
            },
            {
                "id": "b64",
                "agent": "echo",
                "with": {"text": base64.b64encode(SECRET.encode()).decode()},
            },
        ],
        secret_names=frozenset({"ORCH_TEST_TOKEN"}),
        outputs={"t": "{{ phases.use.output }}"},
    )
    from orchestrator.plan import compile_plan

    rec = Recorder()
    result = asyncio.run(execute(compile_plan(wf), registry=registry, sinks=[rec]))
    text = "\n".join(e.to_json() for e in rec.events)
    assert SECRET not in text and base64.b64encode(SECRET.encode()).decode() not in text
    assert SECRET[:5] + SECRET[5:11] not in text
    assert rec.one("phase_completed", "use").data["output"] == "token=***"
    assert rec.one("phase_failed", "leak").data["error"] == "bad key ***"
    streamed = "".join(e.data["text"] for e in rec.of("phase_stream", "stream"))
    assert streamed == "abc *** end"
    assert result.outputs == {"t": "token=***"}
    assert result.phases["use"].output == f"token={SECRET}"  # the real value, for later phases


def test_a_secret_missing_from_the_environment_is_a_usage_error(registry, monkeypatch):
    monkeypatch.delenv("ORCH_TEST_MISSING", raising=False)
    from orchestrator.plan import compile_plan

    wf = make_workflow(
        [{"id": "a", "agent": "noop"}], secret_names=frozenset({"ORCH_TEST_MISSING"})
    )
    with pytest.raises(UsageError, match="secret 'ORCH_TEST_MISSING' not set in the environment"):
        run_sync(compile_plan(wf), registry=registry)


def test_setting_the_cancel_event_cancels_the_run(registry):
    plan = make_plan(
        [
            {"id": "long", "agent": "probe", "with": {"seconds": 30}},
            {"id": "after", "agent": "noop", "depends_on": ["long"]},
        ]
    )
    rec = Recorder()

    async def main():
        cancel = asyncio.Event()

        def sink(event):
            rec(event)
            if event.event == "phase_started":
                cancel.set()

        return await execute(plan, registry=registry, sinks=[sink], cancel=cancel)

    result = asyncio.run(main())
    assert result.status == "cancelled"
    assert Probe.cancelled == ["long"]
    assert rec.one("phase_failed", "long").data["status"] == "cancelled"
    assert rec.one("phase_skipped", "after").data["reason"] == "not started: the run was cancelled"
    assert rec.kinds()[-1] == "workflow_cancelled"
    assert rec.events[-1].data["status"] == "cancelled"


def test_cancelling_the_task_ends_the_run_as_cancelled_then_reraises(registry):
    plan = make_plan([{"id": "long", "agent": "probe", "with": {"seconds": 30}}])
    rec = Recorder()

    async def main():
        started = asyncio.Event()

        def sink(event):
            rec(event)
            if event.event == "phase_started":
                started.set()

        task = asyncio.create_task(execute(plan, registry=registry, sinks=[sink]))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert Probe.cancelled == ["long"]
    assert rec.kinds()[-2:] == ["phase_failed", "workflow_cancelled"]


class Counted(Agent):
    name = "counted"
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    made: ClassVar[list[str]] = []
    closed: ClassVar[list[str]] = []

    def __init__(self, instance_name: str = "") -> None:
        super().__init__(instance_name)
        Counted.made.append(self.instance_name)

    async def run(self, input, ctx):
        return AgentResult(output=ctx.agent_name)

    async def aclose(self) -> None:
        Counted.closed.append(self.instance_name)


def test_one_agent_instance_per_named_agent_and_bare_type_closed_at_the_end(registry):
    registry.register(Counted)
    Counted.made.clear()
    Counted.closed.clear()
    plan = make_plan(
        [
            {"id": "a", "agent": "one"},
            {"id": "b", "agent": "one"},
            {"id": "c", "agent": "two"},
            {"id": "d", "agent": "counted"},
            {"id": "e", "agent": "counted"},
        ],
        agents={"one": {"type": "counted"}, "two": {"type": "counted"}},
    )
    result = run_sync(plan, registry=registry)
    assert result.phases["c"].output == "two"
    assert sorted(Counted.made) == ["counted", "one", "two"]
    assert sorted(Counted.closed) == ["counted", "one", "two"]


def test_the_readme_engine_example_runs(monkeypatch, capsys):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    code = readme.split("From Python, with the same events the CLI shows:\n\n```python\n", 1)[1]
    code = code.split("```", 1)[0]
    monkeypatch.chdir(root)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("completed {'article': ")
    assert '"event":"workflow_started"' in out[1] and '"event":"workflow_completed"' in out[-1]

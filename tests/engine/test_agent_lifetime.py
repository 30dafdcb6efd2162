"""Agent instances live for the whole run: compensations and handlers use them, then they close."""

from __future__ import annotations

from typing import Any, ClassVar

import orchestrator
from orchestrator.agents import Agent, AgentRegistry, AgentResult

LOG: list[str] = []


class Closer(Agent):
    """Records each call and its own closing."""

    name = "closer"
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def run(self, input, ctx):
        LOG.append(f"{self.instance_name}:{ctx.phase_id}")
        return AgentResult(output=input.get("handoff_to") and None, handoff=input.get("to"))

    async def aclose(self):
        LOG.append(f"close {self.instance_name}")


WORKFLOW = """
name: lifetime
agents:
  only_in_handlers: {type: closer}
phases:
  - id: book
    agent: closer
    compensate: {agent: closer}
  - id: boom
    agent: fail
    depends_on: [book]
on_failure:
  - id: notify
    agent: only_in_handlers
finally:
  - id: triage
    handoff: {agents: [only_in_handlers], start: only_in_handlers, max_turns: 2}
"""


def test_compensations_and_handlers_run_on_open_agents_that_close_at_the_end(tmp_path):
    LOG.clear()
    path = tmp_path / "wf.yaml"
    path.write_text(WORKFLOW)
    registry = AgentRegistry.from_entry_points()
    registry.register(Closer)
    plan = orchestrator.compile_plan(orchestrator.load_workflow(path, registry=registry))
    result = orchestrator.run_sync(plan, registry=registry)
    assert result.status == "failed"
    assert result.phases["notify"].status == "completed"
    assert result.phases["triage"].status == "completed", result.phases["triage"].error
    calls = [entry for entry in LOG if not entry.startswith("close ")]
    assert calls == [
        "closer:book",
        "closer:book",  # the compensation of book
        "only_in_handlers:notify",
        "only_in_handlers:triage",
    ]
    closes = [entry for entry in LOG if entry.startswith("close ")]
    assert sorted(closes) == ["close closer", "close only_in_handlers"]
    assert LOG.index(closes[0]) > LOG.index("only_in_handlers:triage")  # closed last


class OddTokens(Agent):
    """Reports token usage a plugin got wrong."""

    name = "odd_tokens"
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def run(self, input, ctx):
        return AgentResult(output=1, metadata={"tokens": {"prompt": "n/a", "total": 7}})


def test_token_counts_that_are_not_numbers_do_not_break_the_end_of_a_run(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text("name: odd\nphases:\n  - {id: a, agent: odd_tokens}\n")
    registry = AgentRegistry.from_entry_points()
    registry.register(OddTokens)
    plan = orchestrator.compile_plan(orchestrator.load_workflow(path, registry=registry))
    events: list[orchestrator.Event] = []
    result = orchestrator.run_sync(plan, registry=registry, sinks=[events.append])
    assert result.status == "completed"
    assert events[-1].event == "workflow_completed"
    assert events[-1].data["tokens"] == {"prompt": 0, "completion": 0, "total": 7}

"""Phase outputs are JSON data: what an agent returns is converted once, when the engine gets it,
so later phases see the same values during the run as after a resume (the store keeps JSON)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

import pytest

from orchestrator.agents import Agent, AgentResult
from orchestrator.engine import execute
from orchestrator.engine.result import json_data
from orchestrator.jsontext import NotJson
from orchestrator.plan import compile_plan
from orchestrator.spec import load_workflow

from .conftest import Recorder, make_plan

MODULE = """
import datetime
from decimal import Decimal


class Point:
    def __str__(self):
        return "Point(1, 2)"


def make():
    return {
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "day": datetime.date(2024, 1, 2),
        "tags": {"b", "c", "a"},
        "pair": (1, (2, 3)),
        "text": b"caf\\xc3\\xa9",
        "blob": b"\\xff\\x00",
        "price": Decimal("1.10"),
        "point": Point(),
        "keys": {1: "one", None: "none", 2.5: "half"},
        "mixed": frozenset({1, "a"}),
    }
"""

EXPECTED = {
    "when": "2024-01-02T03:04:05",
    "day": "2024-01-02",
    "tags": ["a", "b", "c"],
    "pair": [1, [2, 3]],
    "text": "café",
    "blob": "/wA=",
    "price": "1.10",
    "point": "Point(1, 2)",
    "keys": {"1": "one", "null": "none", "2.5": "half"},
}


def test_python_outputs_reach_later_phases_as_json_data(tmp_path, registry):
    (tmp_path / "odd_outputs_r2.py").write_text(MODULE)
    path = tmp_path / "wf.yaml"
    path.write_text(
        """
name: odd-outputs
phases:
  - id: make
    agent: python
    with: {function: "odd_outputs_r2:make"}
  - id: use
    agent: echo
    with:
      text: "{{ phases.make.output }}"
  - id: line
    agent: echo
    with:
      text: "{{ phases.make.output.when[:4] }} {{ phases.make.output.tags | join('+') }}"
"""
    )
    rec = Recorder()
    plan = compile_plan(load_workflow(str(path), registry=registry))
    result = asyncio.run(execute(plan, registry=registry, sinks=[rec]))
    assert result.status == "completed", result.error
    output = dict(result.phases["make"].output)
    mixed = output.pop("mixed")
    assert sorted(mixed, key=str) == [1, "a"]
    assert output == EXPECTED
    # what the store keeps (JSON) is what later phases saw: a resume sees the same
    assert json.loads(json.dumps(result.phases["use"].output))["keys"] == EXPECTED["keys"]
    assert result.phases["use"].output["tags"] == ["a", "b", "c"]
    assert result.phases["line"].output == "2024 a+b+c"
    assert rec.one("phase_completed", "make").data["output"]["when"] == "2024-01-02T03:04:05"


class TupleAgent(Agent):
    """Returns an AgentResult with a tuple output and a set in its metadata."""

    name = "tupler"
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def run(self, input, ctx):
        return AgentResult(output=("a", 1), metadata={"seen": {2, 1}})


def test_agent_results_of_any_agent_are_converted_once(go, registry):
    registry.register(TupleAgent)
    plan = make_plan(
        [
            {"id": "t", "agent": "tupler"},
            {"id": "each", "agent": "tupler", "foreach": [1, 2]},
        ]
    )
    result, rec = go(plan)
    assert result.phases["t"].output == ["a", 1]
    assert result.phases["t"].metadata == {"seen": [1, 2]}
    assert result.phases["each"].output == [["a", 1], ["a", 1]]


def test_plain_values_are_kept_as_they_are():
    value = {"a": [1, 2.5, None, True, "x"]}
    assert json_data(value) == value
    text = "plain"
    assert json_data(text) is text
    with pytest.raises(NotJson, match="Infinity"):  # JSON has none: the phase fails
        json_data(float("inf"))

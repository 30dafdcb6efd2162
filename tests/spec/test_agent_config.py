"""Agent `with:` checks: one code path with the workflow schema, located at the with sub-path."""

from __future__ import annotations

from typing import Any, ClassVar

import orchestrator
from orchestrator.agents import Agent, AgentRegistry, ConfigProblem


class Picky(Agent):
    name = "picky"
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "mode": {"anyOf": [{"type": "integer"}, {"enum": ["fast", "slow"]}]},
            "count": {"type": "integer", "minimum": 1},
            "items": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["count"],
        "additionalProperties": False,
    }

    @classmethod
    def check_static(cls, config, *, workflow_path):
        if config.get("count") == 13:
            return [ConfigProblem(("count",), "13 is unlucky", severity="warning")]
        return []

    async def run(self, input, ctx):
        return None


def _problems(tmp_path, text):
    registry = AgentRegistry()
    registry.register(Picky)
    path = tmp_path / "w.yaml"
    path.write_text(text)
    return orchestrator.validate(path, registry=registry)


def test_any_of_errors_use_the_best_match_and_are_located_in_with(tmp_path):
    problems = _problems(
        tmp_path,
        "name: x\nphases:\n  - id: a\n    agent: picky\n"
        "    with:\n      count: 0\n      mode: fastest\n      items: [ok, 3]\n",
    )
    got = [(p.location.line, p.location.col, p.message) for p in problems]
    assert got == [
        (6, 14, "phases[0].with.count must be at least 1, not 0"),
        (
            7,
            13,
            "phases[0].with.mode: 'fastest' is not one of 'fast', 'slow'; did you mean 'fast'?",
        ),
        (8, 19, "phases[0].with.items[1] must be a string, not the number 3"),
    ]
    assert all(p.code == "agent-config" for p in problems)


def test_templated_values_are_not_type_checked_but_required_keys_are(tmp_path):
    problems = _problems(
        tmp_path,
        "name: x\ninputs: {n: {type: integer}}\nphases:\n"
        "  - id: a\n    agent: picky\n"
        "    with: {count: '{{ inputs.n }}', items: '{{ inputs.n }}'}\n"
        "  - id: b\n    agent: picky\n    with: {mode: 1}\n",
    )
    assert [(p.location.line, p.message) for p in problems] == [
        (9, "the with of phase 'b' (agent type 'picky') is missing the required key 'count'")
    ]


def test_an_agent_types_own_static_check_can_warn(tmp_path):
    problems = _problems(
        tmp_path, "name: x\nphases:\n  - {id: a, agent: picky, with: {count: 13}}\n"
    )
    [p] = problems
    assert p.severity == "warning" and p.message == "13 is unlucky"
    assert (p.location.line, p.location.col) == (3, 41)

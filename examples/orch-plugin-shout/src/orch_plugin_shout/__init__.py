"""An example orch plugin: the ``shout`` agent type upper-cases its text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from orchestrator.agents import Agent, AgentContext, AgentResult

__all__ = ["ShoutAgent"]


class ShoutAgent(Agent):
    """Upper-cases ``text``, adding ``times`` exclamation marks."""

    name = "shout"
    description = "Upper-cases `text` and adds `times` exclamation marks."
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "text": {"type": "string", "description": "What to shout."},
            "times": {
                "type": "integer",
                "minimum": 0,
                "description": "How many '!' to add (default 1).",
            },
        },
        "required": ["text"],
        "additionalProperties": False,
    }

    async def run(self, input: Mapping[str, Any], ctx: AgentContext) -> AgentResult:
        text = str(input["text"]).upper() + "!" * int(input.get("times", 1))
        await ctx.stream(text)
        return AgentResult(output=text, metadata={"length": len(text)})

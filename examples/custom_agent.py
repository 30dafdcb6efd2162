"""An agent type defined in code, registered on an AgentRegistry instance, used by a workflow.

    python examples/custom_agent.py

No entry point and no installation: ``registry.register(Cls)`` adds the type, and
the same registry is given to load_workflow (so ``with:`` is checked against the
type's schema) and to run_sync (so the engine can make the agent).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import orchestrator
from orchestrator import Agent, AgentContext, AgentFailure, AgentRegistry, AgentResult

HERE = Path(__file__).parent


class WordCount(Agent):
    """Counts the words of ``text``; fails (permanently) on an empty text."""

    name = "word_count"
    description = "Counts the words of `text`."
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {"text": {"type": "string", "description": "The text to count."}},
        "required": ["text"],
        "additionalProperties": False,
    }

    async def run(self, input: Mapping[str, Any], ctx: AgentContext) -> AgentResult:
        words = str(input["text"]).split()
        if not words:
            raise AgentFailure("nothing to count", transient=False)
        await ctx.stream(f"{len(words)} words")
        return AgentResult(output=len(words), metadata={"unique": len(set(words))})


def main() -> int:
    registry = AgentRegistry.from_entry_points()  # the installed types (echo, shell, ...)
    registry.register(WordCount)  # plus ours
    workflow = orchestrator.load_workflow(str(HERE / "custom_agent.yaml"), registry=registry)
    result = orchestrator.run_sync(orchestrator.compile_plan(workflow), registry=registry)
    print(json.dumps({"status": result.status, "outputs": result.outputs}, indent=2))
    return 0 if result.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``workflow`` agent: runs another workflow file as a sub-run; its outputs are the output.

``path`` is relative to the calling workflow's folder. Recursion (a workflow that
includes itself, directly or through others) is found by ``orch validate`` when
the paths are not templates, and stopped at run time by the engine's depth limit.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from ...errors import OrchError, WorkflowInvalid
from ...expr import is_template
from ..base import Agent, AgentContext, AgentFailure, AgentResult, ConfigProblem

__all__ = ["WorkflowAgent"]

# The files being checked, outermost first, while validate follows sub-workflows.
_CHECKING: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "orch_workflow_checking", default=()
)


class WorkflowAgent(Agent):
    """Runs a workflow file with ``inputs``; the output is the sub-run's outputs."""

    name = "workflow"
    description = (
        "Runs another workflow file (path relative to this one) as a sub-run with "
        "`inputs`; the output is the sub-run's outputs."
    )
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "path": {
                "description": "The workflow file to run, relative to this workflow's folder.",
                "type": "string",
                "minLength": 1,
            },
            "inputs": {"description": "Inputs of the sub-run.", "type": "object"},
        },
        "required": ["path"],
        "additionalProperties": False,
    }

    @classmethod
    def check_static(cls, config: Mapping[str, Any], *, workflow_path: str) -> list[ConfigProblem]:
        """The sub-workflow must exist, be valid, and not include its caller (recursion)."""
        path = config.get("path")
        if not isinstance(path, str) or is_template(path):
            return []
        here = str(Path(workflow_path).resolve())
        target = str((Path(workflow_path).parent / path).resolve())
        chain = _CHECKING.get() or (here,)
        if target in chain:
            loop = [*chain[chain.index(target) :], target]
            names = " -> ".join(Path(p).name for p in loop)
            return [ConfigProblem(("path",), f"workflow recursion: {names}")]
        if not Path(target).is_file():
            return [ConfigProblem(("path",), f"workflow file '{path}' not found")]
        from ...spec import load_workflow  # the spec package imports agents: import late

        token = _CHECKING.set((*chain, target))
        try:
            load_workflow(target)
        except WorkflowInvalid as exc:
            first = next((p for p in exc.problems if p.severity == "error"), None)
            detail = f"{first.location}: {first.message}" if first else str(exc)
            if first is not None and "workflow recursion: " in first.message:
                found = first.message[first.message.index("workflow recursion: ") :]
                return [ConfigProblem(("path",), found)]
            return [ConfigProblem(("path",), f"sub-workflow '{path}' is invalid: {detail}")]
        except OrchError as exc:
            return [ConfigProblem(("path",), f"sub-workflow '{path}' is invalid: {exc}")]
        finally:
            _CHECKING.reset(token)
        return []

    async def run(self, input: Mapping[str, Any], ctx: AgentContext) -> AgentResult:
        """Run the sub-workflow; a failed sub-run fails this attempt (AgentFailure)."""
        if ctx.run_workflow is None:
            raise AgentFailure("sub-runs are not available here (no run_workflow)", transient=False)
        path = str(Path(ctx.workdir) / str(input["path"]))
        if not Path(path).is_file():
            raise AgentFailure(f"workflow file '{input['path']}' not found", transient=False)
        try:
            outputs = await ctx.run_workflow(path, dict(input.get("inputs") or {}))
        except AgentFailure:
            raise
        except OrchError as exc:
            raise AgentFailure(f"sub-workflow '{input['path']}' failed: {exc}") from exc
        return AgentResult(output=dict(outputs))

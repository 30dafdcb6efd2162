"""The ``workflow`` agent: runs another workflow file as a sub-run; its outputs are the output.

``path`` is relative to the calling workflow's folder. Recursion (a workflow that
includes itself, directly or through others) is found by ``orch validate`` when
the paths are not templates, and stopped at run time by the engine's depth limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from ...errors import OrchError
from ..base import Agent, AgentContext, AgentFailure, AgentResult, ConfigProblem

__all__ = ["WorkflowAgent"]


class WorkflowAgent(Agent):
    """Runs a workflow file with ``inputs``; the output is the sub-run's outputs."""

    name = "workflow"
    runs_in_orch = True  # a sub-run is the engine's work, in the orch process
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
        """The sub-workflow must exist, be valid, not include its caller (recursion), and
        accept the literal ``inputs`` given to it (spec.subflows.check_workflow_ref)."""
        from ...spec.subflows import check_workflow_ref  # the spec package imports agents

        inputs = config.get("inputs")
        found = check_workflow_ref(
            config.get("path"),
            workflow_path,
            label="sub-workflow",
            inputs=inputs if isinstance(inputs, Mapping) else {},
        )
        return [ConfigProblem(p.path or ("path",), p.message, hint=p.hint) for p in found]

    async def run(self, input: Mapping[str, Any], ctx: AgentContext) -> AgentResult:
        """Run the sub-workflow; a failed sub-run fails this attempt (AgentFailure)."""
        if ctx.run_workflow is None:
            raise AgentFailure("sub-runs are not available here (no run_workflow)", transient=False)
        # absolute: run_workflow would join a relative path to the workdir a second time
        path = str((Path(ctx.workdir) / str(input["path"])).absolute())
        if not Path(path).is_file():
            raise AgentFailure(f"workflow file '{input['path']}' not found", transient=False)
        try:
            outputs = await ctx.run_workflow(path, dict(input.get("inputs") or {}))
        except AgentFailure:
            raise
        except OrchError as exc:
            raise AgentFailure(
                f"sub-workflow '{input['path']}' failed: {exc.headline}", hint=exc.hint
            ) from exc
        return AgentResult(output=dict(outputs))

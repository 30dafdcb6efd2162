"""orch: a YAML-driven orchestrator for multi-agent workflows.

The public Python API. Nothing outside ``__all__`` is supported for users or
plugin authors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .agents import Agent, AgentContext, AgentFailure, AgentRegistry, AgentResult
from .errors import Location, OrchError, Problem, WorkflowInvalid
from .plan import Plan, compile_plan
from .spec import load_workflow, validate

if TYPE_CHECKING:
    from .engine import PhaseOutcome, RunOptions, RunResult, run, run_sync

# The engine imports jinja2 and tenacity: load it on first use, not with the package.
_LAZY = {
    "PhaseOutcome": "orchestrator.engine",
    "RunOptions": "orchestrator.engine",
    "RunResult": "orchestrator.engine",
    "run": "orchestrator.engine",
    "run_sync": "orchestrator.engine",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestrator' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Agent",
    "AgentContext",
    "AgentFailure",
    "AgentRegistry",
    "AgentResult",
    "Location",
    "OrchError",
    "PhaseOutcome",
    "Plan",
    "Problem",
    "RunOptions",
    "RunResult",
    "WorkflowInvalid",
    "compile_plan",
    "load_workflow",
    "run",
    "run_sync",
    "validate",
]

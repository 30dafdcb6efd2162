"""orch: a YAML-driven orchestrator for multi-agent workflows.

The public Python API. Nothing outside ``__all__`` is supported for users or
plugin authors.
"""

from __future__ import annotations

from .agents import Agent, AgentContext, AgentFailure, AgentRegistry, AgentResult
from .errors import Location, OrchError, Problem, WorkflowInvalid
from .plan import Plan, compile_plan
from .spec import load_workflow, validate

__all__ = [
    "Agent",
    "AgentContext",
    "AgentFailure",
    "AgentRegistry",
    "AgentResult",
    "Location",
    "OrchError",
    "Plan",
    "Problem",
    "WorkflowInvalid",
    "compile_plan",
    "load_workflow",
    "validate",
]

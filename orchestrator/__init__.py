"""orch: a YAML-driven orchestrator for multi-agent workflows.

The public Python API. Nothing outside ``__all__`` is supported for users or
plugin authors.
"""

from __future__ import annotations

# Nothing is imported here (not even typing): the `orch` command starts by
# importing this package, and a Ctrl-C that early must reach orchestrator.__main__'s
# guard (one line, exit 130), not print a traceback from inside an import.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .agents import Agent, AgentContext, AgentFailure, AgentRegistry, AgentResult
    from .engine import PhaseOutcome, RunOptions, RunResult, execute, run, run_sync
    from .errors import Location, OrchError, Problem, WorkflowInvalid
    from .events import Event
    from .plan import Plan, compile_plan
    from .runs import (
        RunHandle,
        RunStatus,
        approve,
        cancel,
        follow,
        list_runs,
        reject,
        resume,
        start,
        stats,
        status,
        wait,
    )
    from .spec import load_workflow, validate

# Everything loads on first use: the engine imports jinja2 and tenacity, the
# agents importlib.metadata; `import orchestrator` (and with it `orch --help`)
# stays cheap.
_LAZY = {
    "Location": "orchestrator.errors",
    "OrchError": "orchestrator.errors",
    "Problem": "orchestrator.errors",
    "WorkflowInvalid": "orchestrator.errors",
    "Agent": "orchestrator.agents",
    "AgentContext": "orchestrator.agents",
    "AgentFailure": "orchestrator.agents",
    "AgentRegistry": "orchestrator.agents",
    "AgentResult": "orchestrator.agents",
    "Event": "orchestrator.events",
    "PhaseOutcome": "orchestrator.engine",
    "Plan": "orchestrator.plan",
    "RunOptions": "orchestrator.engine",
    "RunResult": "orchestrator.engine",
    "RunHandle": "orchestrator.runs",
    "RunStatus": "orchestrator.runs",
    "approve": "orchestrator.runs",
    "cancel": "orchestrator.runs",
    "compile_plan": "orchestrator.plan",
    "execute": "orchestrator.engine",
    "follow": "orchestrator.runs",
    "list_runs": "orchestrator.runs",
    "reject": "orchestrator.runs",
    "resume": "orchestrator.runs",
    "start": "orchestrator.runs",
    "stats": "orchestrator.runs",
    "status": "orchestrator.runs",
    "wait": "orchestrator.runs",
    "load_workflow": "orchestrator.spec",
    "run": "orchestrator.engine",
    "run_sync": "orchestrator.engine",
    "validate": "orchestrator.spec",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestrator' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "Agent",
    "AgentContext",
    "AgentFailure",
    "AgentRegistry",
    "AgentResult",
    "Event",
    "Location",
    "OrchError",
    "PhaseOutcome",
    "Plan",
    "Problem",
    "RunHandle",
    "RunOptions",
    "RunResult",
    "RunStatus",
    "WorkflowInvalid",
    "approve",
    "cancel",
    "compile_plan",
    "execute",
    "follow",
    "list_runs",
    "load_workflow",
    "reject",
    "resume",
    "run",
    "run_sync",
    "start",
    "stats",
    "status",
    "validate",
    "wait",
]

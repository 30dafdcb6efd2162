"""The engine: runs a Plan and reports it as events (``execute``, ``run``, ``run_sync``).

See docs/internals.md for the API contract and the data of each event.
"""

from __future__ import annotations

from .inputs import resolve_inputs
from .result import PhaseExecutor, PhaseOutcome, ResultCache, RunOptions, RunResult
from .runner import RunState, execute, run, run_sync

__all__ = [
    "PhaseExecutor",
    "PhaseOutcome",
    "ResultCache",
    "RunOptions",
    "RunResult",
    "RunState",
    "execute",
    "resolve_inputs",
    "run",
    "run_sync",
]

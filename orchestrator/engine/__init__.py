"""The engine: runs a Plan and reports it as events (``execute``, ``run``, ``run_sync``).

See docs/internals.md for the API contract and the data of each event.
"""

from __future__ import annotations

from .call import CallMiddleware, CallNext
from .executor import CallChannel, CallSpec, Executor, LocalExecutor
from .inputs import resolve_inputs
from .result import CancelRequest, PhaseOutcome, ResultCache, RunOptions, RunResult
from .runner import execute, run, run_sync

__all__ = [
    "CallChannel",
    "CancelRequest",
    "CallMiddleware",
    "CallNext",
    "CallSpec",
    "Executor",
    "LocalExecutor",
    "PhaseOutcome",
    "ResultCache",
    "RunOptions",
    "RunResult",
    "execute",
    "resolve_inputs",
    "run",
    "run_sync",
]

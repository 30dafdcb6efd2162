"""The runs this process started and that are still going (``start``, ``go_on``).

``cancel`` and ``wait`` of one of them act on it directly instead of through the state
store. The only process-wide state of ``orchestrator.runs``: a run's host is a process,
and a run id names at most one live run in it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .handle import RunHandle

__all__ = ["LiveRuns", "live_runs"]


class LiveRuns:
    """Run id -> the ``RunHandle`` of a run of this process, from its start to its end."""

    __slots__ = ("_handles",)

    def __init__(self) -> None:
        self._handles: dict[str, RunHandle] = {}

    def add(self, handle: RunHandle) -> None:
        """Hold ``handle`` until its run ends (its task's done callback forgets it)."""
        self._handles[handle.run_id] = handle

    def forget(self, run_id: str) -> None:
        """The run ended: nothing of it stays held."""
        self._handles.pop(run_id, None)

    def get(self, run_id: str) -> RunHandle | None:
        """The live run with this (full) id in this process, or None."""
        handle = self._handles.get(run_id)
        return handle if handle is not None and not handle.done else None


#: This process's live runs.
live_runs = LiveRuns()

"""The runs this process started and that are still going (``start``, ``go_on``).

``cancel`` and ``wait`` of one of them act on it directly instead of through the state
store. The only process-wide state of ``orchestrator.runs``: a run's host is a process,
and a run id names at most one live run in it.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["LiveRun", "LiveRuns", "live_runs"]


class LiveRun(Protocol):
    """What the live runs and their users (``recorded.wait``, ``recorded.cancel``) need
    of a run of this process (``handle.LiveRun`` is one)."""

    @property
    def run_id(self) -> str: ...

    @property
    def done(self) -> bool:
        """Whether the run has ended."""
        ...

    async def wait(self, timeout: float | None = None) -> object:
        """Until the run ended; TimeoutError after ``timeout`` seconds (the run goes on)."""
        ...

    def cancel(self, signum: int | None = None) -> None:
        """Stop the run cleanly; ``signum`` is recorded as ``cancelled_by``."""
        ...


class LiveRuns:
    """Run id -> the run (a ``LiveRun``) this process runs, from its start to its end."""

    __slots__ = ("_handles",)

    def __init__(self) -> None:
        self._handles: dict[str, LiveRun] = {}

    def add(self, handle: LiveRun) -> None:
        """Hold ``handle`` until its run ends (its task's done callback forgets it)."""
        self._handles[handle.run_id] = handle

    def forget(self, run_id: str) -> None:
        """The run ended: nothing of it stays held."""
        self._handles.pop(run_id, None)

    def get(self, run_id: str) -> LiveRun | None:
        """The live run with this (full) id in this process, or None."""
        handle = self._handles.get(run_id)
        return handle if handle is not None and not handle.done else None


#: This process's live runs.
live_runs = LiveRuns()

"""``RunHandle``: a run started (or resumed) in this process, and the task that owns it
(``closing``: the store's cancel-request watcher, then the store's release)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .recorded import POLL, RunStatus, status

if TYPE_CHECKING:
    from ..engine import RunResult
    from ..events import Event
    from ..plan import Plan
    from ..state.sqlite import SqliteStore

__all__ = ["RunHandle", "closing"]


class RunHandle:
    """A run started (or resumed) in this process.

    ``events()`` yields every event of the run, from its start, each after the
    state store has it; ``status()`` reads the store; ``await wait()`` gives the
    RunResult; ``cancel()`` stops it cleanly (compensations run, the run is
    recorded as cancelled).
    """

    def __init__(self, run_id: str, plan: Plan, state_dir: Path, store: SqliteStore) -> None:
        self.run_id = run_id
        self.plan = plan
        self.state_dir = state_dir
        self._store = store
        self._events: list[Event] = []
        from ..engine import CancelRequest

        self._changed = asyncio.Event()
        self._cancel = CancelRequest()
        self._started = asyncio.Event()
        self._task: asyncio.Task[RunResult] | None = None

    def _sink(self, event: Event) -> None:
        # a plain sink: the bus calls it only once the store (the one durable sink) has
        # the event; an async one would cost every event a coroutine of its own
        self._events.append(event)
        if event.event == "workflow_started":
            self._started.set()
        self._changed.set()

    @property
    def done(self) -> bool:
        """Whether the run has ended."""
        return self._task is not None and self._task.done()

    async def events(self) -> AsyncIterator[Event]:
        """Every event of the run in order, live, ending with its workflow_* event.

        Several consumers may follow one run; leaving the loop does not stop the run.
        """
        seen = 0
        while True:
            while seen < len(self._events):
                event = self._events[seen]
                seen += 1
                yield event
            if self.done:
                return
            self._changed.clear()
            task = self._task
            assert task is not None
            waiter = asyncio.ensure_future(self._changed.wait())
            await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    def status(self) -> RunStatus:
        """The run and its phases as recorded in the store now."""
        return status(self.run_id, state_dir=self.state_dir)

    async def wait(self, timeout: float | None = None) -> RunResult:
        """The run's result once it ended; TimeoutError after ``timeout`` seconds (the run
        goes on). Raises what stopped the run from starting (UsageError, AgentError)."""
        assert self._task is not None
        return await asyncio.wait_for(asyncio.shield(self._task), timeout)

    def cancel(self, signum: int | None = None, *, force: bool = False) -> None:
        """Stop the run cleanly (as Ctrl-C does); ``signum`` (a signal number) is recorded
        as ``cancelled_by`` in workflow_cancelled. ``force`` (a second Ctrl-C): stop now.
        While phases run, their commands are killed at once, then the saga and handlers
        run as after a plain cancel; while it compensates (or runs handlers), what runs is
        cancelled, the handlers not started are not run and the compensations not started
        are left pending (``orch resume`` runs them); the run records its end. Once it only
        records its end, ``force`` cuts nothing (``CancelRequest.interruptible``)."""
        self._cancel.request(signal.Signals(signum).name if signum else None, force=force)

    @property
    def cancelled_by(self) -> str | None:
        """Who cancelled the run (``SIGINT``, ``SIGTERM``: a signal or ``orch cancel``), if any."""
        return self._cancel.by if self._cancel.is_set() else None

    async def _watch(self, poll: float) -> None:
        """Cancel this run when ``orch cancel`` (any process) records a request for it.

        A cancel reaches the run, never the process: the one hosting it (``orch run``,
        a program using this API, ``orch serve``) may run many and handle no signal.
        """
        while not self._cancel.is_set():
            await asyncio.sleep(poll)
            if self._store.cancel_requested(self.run_id):  # one primary-key read
                self._cancel.request(signal.SIGTERM.name)  # `orch cancel`: as SIGTERM


async def closing(run: Any, store: SqliteStore, handle: RunHandle | None = None) -> RunResult:
    """Await the run (watching the store for a cancel request of ``handle``'s run),
    then release the store (its last writes are committed by then)."""
    watcher = None if handle is None else asyncio.ensure_future(handle._watch(POLL))
    try:
        result: RunResult = await run
        return result
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await store.aclose()

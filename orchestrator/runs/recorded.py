"""Any recorded run, by its id, from any process: ``status``, ``list_runs``, ``follow``,
``wait``, ``cancel`` and the exit code of a run that ended.

A run of this process (``live_runs``) is waited for and cancelled directly; any
other through the state store.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import RunNotFound, UsageError
from ..state.base import PAGE, each_event
from .live import live_runs

if TYPE_CHECKING:
    from ..events import Event
    from ..state.base import Decision, PhaseRecord, RunRecord
    from ..state.sqlite import SqliteStore
    from ..state.stats import Stats

__all__ = [
    "EXIT_CODES",
    "PAGE",
    "POLL",
    "Cancelled",
    "RunStatus",
    "approve",
    "cancel",
    "cancelled_by",
    "check_phase",
    "each_event",
    "exit_code",
    "existing_store",
    "nothing_recorded",
    "follow",
    "list_runs",
    "open_store",
    "reject",
    "stats",
    "status",
    "status_exit_code",
    "wait",
    "wait_sync",
]

#: Seconds between two looks at the store while following or waiting for a run
#: owned by another process.
POLL = 0.2


@dataclass(frozen=True, slots=True)
class RunStatus:
    """A recorded run and its phases, as the store has them now.

    It answers ``run_id``, ``status``, ``ok``, ``outputs``, ``error``, ``started`` and
    ``ended`` as the ``RunResult`` of ``RunHandle.wait`` does, so code reading the end
    of a run works with either (``await orchestrator.wait(run_id)`` gives this one);
    ``phases`` differ: here the stored ``PhaseRecord``s in plan order.
    """

    run: RunRecord
    phases: tuple[PhaseRecord, ...]
    cancelled_by: str | None = None  # a signal name (`orch cancel`: SIGTERM), if cancelled

    @property
    def id(self) -> str:
        """The run id."""
        return self.run.id

    @property
    def run_id(self) -> str:
        """The run id (as ``RunResult.run_id``)."""
        return self.run.id

    @property
    def status(self) -> str:
        """running, completed, failed, cancelled or interrupted (its process died)."""
        return self.run.status

    @property
    def ok(self) -> bool:
        """Whether the run completed (as ``RunResult.ok``)."""
        return self.run.status == "completed"

    @property
    def outputs(self) -> Mapping[str, Any]:
        """The workflow's outputs as recorded at its end ({} while it runs, or none)."""
        outputs = self.run.outputs
        return outputs if isinstance(outputs, Mapping) else {}

    @property
    def error(self) -> str | None:
        """Why the run failed or was cancelled (None when it completed or runs)."""
        return self.run.error

    @property
    def started(self) -> float:
        """When the run started (Unix seconds)."""
        return self.run.started

    @property
    def ended(self) -> float | None:
        """When the run ended (Unix seconds; None while it runs)."""
        return self.run.ended


def open_store(state_dir: str | os.PathLike[str] | None) -> SqliteStore:
    """The state store of ``state_dir`` ($ORCH_STATE_DIR, else ``.orch``), created if missing."""
    from ..state.sqlite import open_store as open_

    return open_(state_dir)


def existing_store(
    state_dir: str | os.PathLike[str] | None, run_id: str | None
) -> SqliteStore | None:
    """The store if one exists (reading never creates one); RunNotFound names ``run_id``.

    Without ``run_id``, None where nothing is recorded (``nothing_recorded`` says so).
    An empty ``run_id`` is a UsageError (it would name no run, or match any as a prefix).
    Raises StateError when the state folder cannot be one (``check_state_folder``).
    """
    from ..state.sqlite import check_state_folder, resolve_state_dir

    if run_id is not None and not run_id.strip():
        raise UsageError(
            f"the run id {run_id!r} is empty: it names no run (an unset variable in a script?)",
            hint="`orch runs` lists the recorded runs",
        )
    if not check_state_folder(resolve_state_dir(state_dir)):
        if run_id is None:
            return None
        raise RunNotFound(f"no run '{run_id}': {nothing_recorded(state_dir)}", hint=_ELSEWHERE)
    return open_store(state_dir)


_ELSEWHERE = "`orch run` records runs there; --state-dir or ORCH_STATE_DIR look elsewhere"


def nothing_recorded(state_dir: str | os.PathLike[str] | None, *, hint: bool = False) -> str:
    """What a reading command says of a state folder without a store (``existing_store``
    returned None): ``nothing is recorded in FOLDER`` (as `orch status` says of a run),
    with the hint on a second line when ``hint``."""
    from ..state.sqlite import resolve_state_dir

    line = f"nothing is recorded in {resolve_state_dir(state_dir)}"
    return line + (f"\n  hint: {_ELSEWHERE}" if hint else "")


def status(run_id: str, *, state_dir: str | os.PathLike[str] | None = None) -> RunStatus:
    """A recorded run and its phases. Raises RunNotFound, StateCorrupted."""
    store = existing_store(state_dir, run_id)
    assert store is not None
    try:
        run = store.get_run(run_id)
        return RunStatus(run, tuple(store.phases(run.id)), cancelled_by(store, run))
    finally:
        store.close()


def cancelled_by(store: SqliteStore, run: RunRecord) -> str | None:
    """Who cancelled a cancelled run (``SIGINT``, ``SIGTERM``: its workflow_cancelled's
    ``cancelled_by``), None for any other run or when it is not known. One read: the
    run's last event."""
    if run.status != "cancelled":
        return None
    last = store.last_event(run.id)
    by = None if last is None else last[1].data.get("cancelled_by")
    return by if isinstance(by, str) else None


def list_runs(
    *, state_dir: str | os.PathLike[str] | None = None, limit: int | None = None
) -> list[RunRecord]:
    """Recorded runs, newest first (empty when nothing is recorded)."""
    store = existing_store(state_dir, None)
    if store is None:
        return []
    try:
        return list(store.list_runs(limit))
    finally:
        store.close()


async def follow(
    run_id: str,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    phase: str | None = None,
    poll: float = POLL,
    live: bool = True,
) -> AsyncIterator[Event]:
    """The events of any recorded run (or of its ``phase``), oldest first, then live until
    the run ends (``live=False``: only those stored now).

    Raises RunNotFound, and UsageError for a phase the run does not have.
    """
    store = existing_store(state_dir, run_id)
    assert store is not None
    try:
        run = store.get_run(run_id)
        if phase is not None:
            check_phase(store, run, phase)
        last = 0
        while True:
            # the status first: once it is final, the events read next include the last ones
            running = live and store.get_run(run.id).status == "running"
            batch = store.events(run.id, phase=phase, after=last, limit=PAGE)
            # Nothing stays open while the caller holds an event: a caller that stops early
            # leaves this generator's finally to whenever it is closed (at garbage collection
            # if nobody closes it). The next read opens a new connection.
            store.close()
            for seq, event in batch:
                last = seq
                yield event
            if len(batch) == PAGE:  # a full page: more may be stored, read on now
                continue
            if not running:
                return
            await asyncio.sleep(poll)
    finally:
        store.close()


def check_phase(store: SqliteStore, run: RunRecord, phase: str) -> None:
    """UsageError (with the closest name) when ``run`` has no phase ``phase``."""
    if not run.phase_ids or phase in run.phase_ids:
        return
    known = {p.id for p in store.phases(run.id)}  # handler phases are not in phase_ids
    if phase not in known:
        import difflib

        close = difflib.get_close_matches(phase, sorted(known), n=1)
        if close:
            hint = f"did you mean '{close[0]}'?"
        else:
            names = [p.id for p in store.phases(run.id)]
            more = f" and {len(names) - 10} more" if len(names) > 10 else ""
            hint = f"its phases: {', '.join(names[:10])}{more}"
        raise UsageError(f"run '{run.id}' has no phase '{phase}'", hint=hint)


def _final(run_id: str, state_dir: Any, timeout: float | None, poll: float) -> RunStatus | None:
    """Poll until the run is no longer running: its status, or None after ``timeout``."""
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        found = status(run_id, state_dir=state_dir)
        if found.status != "running":
            return found
        if end is not None and time.monotonic() >= end:
            return None
        time.sleep(poll if end is None else max(0.0, min(poll, end - time.monotonic())))


#: The exit code of a run's final status (contract section 6); 143 when SIGTERM cancelled it.
EXIT_CODES: Mapping[str, int] = {"completed": 0, "failed": 1, "cancelled": 130}


def status_exit_code(status: str, cancelled_by: str | None = None) -> int:
    """The exit code of a run that ended with ``status``: 0, 1, 130, or 143 when it was
    cancelled by SIGTERM (``cancelled_by``: a signal name; `orch cancel` counts as SIGTERM).

    Any other status (``interrupted``: its process died) is a failed run: 1.
    """
    if status == "cancelled" and cancelled_by == signal.SIGTERM.name:
        return 143
    return EXIT_CODES.get(status, 1)


def exit_code(found: RunStatus) -> int:
    """The exit code ``orch`` gives for a run that ended: 0, 1, 130 or 143 (SIGTERM)."""
    return status_exit_code(found.run.status, found.cancelled_by)


def wait_sync(
    run_id: str,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    poll: float = POLL,
) -> RunStatus | None:
    """Block until a recorded run ends (any process); its final status, or None when
    ``timeout`` seconds passed first. ``interrupted`` means its process died."""
    return _final(run_id, state_dir, timeout, poll)


async def wait(
    run_id: str,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    poll: float = POLL,
) -> RunStatus | None:
    """``wait_sync`` without blocking the event loop."""
    live = live_runs.get(run_id)
    if live is not None:
        try:
            await live.wait(timeout)
        except asyncio.TimeoutError:
            return None
        return status(run_id, state_dir=state_dir)
    return await asyncio.to_thread(_final, run_id, state_dir, timeout, poll)


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What ``cancel`` did: ``how`` is ``in-process``, ``requested`` (a cancel request
    stored for the run, which its owner ``pid`` picks up) or ``recorded`` (its process
    was gone: recorded as cancelled)."""

    run_id: str
    how: str
    pid: int | None = None


def cancel(run_id: str, *, state_dir: str | os.PathLike[str] | None = None) -> Cancelled:
    """Stop a running run: directly when this process runs it, else through the store.

    Another process's run gets a cancel request in the state store; whoever runs it
    (``orch run``, a detached run, a program using this API, ``orch serve``) polls
    for it and cancels that run only, as SIGTERM would (``cancelled_by`` SIGTERM,
    exit 143). No signal is sent: the owner may host other runs and handle none.
    Raises RunNotFound, and UsageError when the run has ended.
    """
    from ..events import workflow_ended

    store = existing_store(state_dir, run_id)
    assert store is not None
    try:
        run = store.get_run(run_id)
        live = live_runs.get(run.id)
        if live is not None:
            live.cancel(signal.SIGTERM)
            return Cancelled(run.id, "in-process", os.getpid())
        if run.finished:
            raise UsageError(f"run {run.id} has already ended ({run.status}); nothing to cancel")
        if run.status == "interrupted":
            error = "cancelled by `orch cancel` after its process had died"
            # one transaction: a resume that claimed the run meanwhile wins (RunLocked)
            store.end_interrupted(
                workflow_ended(
                    run.id,
                    time.time(),
                    "cancelled",
                    outputs={},
                    duration=None,
                    error=error,
                    counts={},
                    cancelled_by=signal.SIGTERM.name,  # `orch cancel`: as SIGTERM
                )
            )
            return Cancelled(run.id, "recorded")
        owner = run.owner
        if owner is None or not owner.alive():
            raise UsageError(f"run {run.id} is no longer running")
        store.request_cancel(run.id, now=time.time())
        return Cancelled(run.id, "requested", owner.pid)
    finally:
        store.close()


def approve(
    run_id: str,
    phase: str,
    *,
    comment: str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
) -> Decision:
    """Approve ``phase`` of a run waiting for approval (``orch approve``): it runs.

    Recorded in the state store with who (the OS user) and when; the run waiting for
    it (any process), or ``orch resume`` later, goes on from there. Raises RunNotFound,
    and UsageError when the phase is unknown or not waiting, the run has ended, or a
    decision was already made (naming who made it and when).
    """
    return _decide(run_id, phase, approve=True, comment=comment, state_dir=state_dir)


def reject(
    run_id: str,
    phase: str,
    *,
    comment: str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
) -> Decision:
    """Reject ``phase`` of a run waiting for approval (``orch reject``): it fails. Raises
    as ``approve``."""
    return _decide(run_id, phase, approve=False, comment=comment, state_dir=state_dir)


def _decide(
    run_id: str, phase: str, *, approve: bool, comment: str | None, state_dir: Any
) -> Decision:
    from ..approvals import decide

    store = existing_store(state_dir, run_id)
    assert store is not None
    try:
        return decide(store, run_id, phase, approve=approve, comment=comment)
    finally:
        store.close()


def stats(
    workflow: str | None = None,
    *,
    since: str | float | None = None,
    state_dir: str | os.PathLike[str] | None = None,
) -> Stats:
    """The numbers ``orch stats`` prints, across recorded runs (of ``workflow`` only, by
    its name): per workflow, phase and agent. ``since``: a duration back from now
    (``7d``, ``12h``, ``30m``) or an epoch time; only runs started then or later.
    ``.as_dict()`` is ``orch stats --json``. Raises UsageError for a ``since`` that is
    not a duration.
    """
    from ..state.stats import Stats, compute_stats, parse_since

    start = parse_since(since) if isinstance(since, str) else since
    store = existing_store(state_dir, None)
    if store is None:
        return Stats(since=start, workflow=workflow)
    try:
        return compute_stats(store, since=start, workflow=workflow)
    finally:
        store.close()

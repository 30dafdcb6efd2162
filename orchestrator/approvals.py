"""Deciding a phase that waits for approval: the one function the CLI and the service call.

A phase with ``approval:`` waits (state ``waiting``, event ``phase_waiting``)
until a decision is recorded in the state store. The decision is durable: it is
a row, written by whichever process decides (``orch approve`` in another shell,
the service's API), while the run waits or while no orch process runs it at all;
the waiting run (or ``orch resume`` later) reads it from there.
"""

from __future__ import annotations

import getpass
import os
import time
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
    from .state.base import Decision
    from .state.sqlite import SqliteStore

__all__ = ["current_user", "decide"]


def current_user() -> str:
    """The OS user running this process (who decided, when the CLI decides)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (a bare container)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def decide(
    store: SqliteStore,
    run_id: str,
    phase: str,
    *,
    approve: bool,
    who: str | None = None,
    comment: str | None = None,
    now: float | None = None,
) -> Decision:
    """Approve or reject ``phase`` of run ``run_id`` (an id or a unique prefix).

    ``who`` defaults to the OS user; the service passes its API token's name.
    Raises RunNotFound for an unknown run, UsageError when the run has ended,
    the phase is unknown or not waiting, or a decision was already made (it
    names who made it and when); the first decision always wins.
    """
    from .state.base import Decision, PhaseState

    run = store.get_run(run_id)
    verb = "approve" if approve else "reject"
    records = {p.id: p for p in store.phases(run.id)}
    record = records.get(phase)
    if record is None:
        known = ", ".join(sorted(records)) or "none"
        raise UsageError(f"run {run.id} has no phase '{phase}' (its phases: {known})")
    earlier = store.decision(run.id, phase)
    if earlier is not None:
        again = None if earlier.approved else f"`orch resume {run.id}` asks again"
        raise UsageError(_already(earlier), hint=again)
    if run.finished:
        raise UsageError(
            f"run {run.id} has already ended ({run.status}); nothing waits for a decision"
        )
    if record.state is not PhaseState.WAITING:
        raise UsageError(
            f"phase '{phase}' of run {run.id} is not waiting for approval (it is"
            f" {record.state.value}); nothing to {verb}",
            hint=f"`orch status {run.id}` shows what waits",
        )
    wanted = Decision(
        run.id,
        phase,
        approve,
        who or current_user(),
        time.time() if now is None else now,
        comment or None,
    )
    stored = store.decide(wanted)
    if stored != wanted:  # another process decided between the check and the write
        raise UsageError(_already(stored))
    return stored


def _already(decision: Decision) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(decision.at))
    return (
        f"phase '{decision.phase}' of run {decision.run_id} was already {decision.verb}"
        f" by {decision.who} at {when}"
    )

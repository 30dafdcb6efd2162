"""A phase with ``approval:`` waits for a person's decision before it runs.

The engine emits ``phase_waiting`` (durable before anything else happens), then
polls an ``ApprovalDesk`` (the state store) until a decision is recorded there
or the approval's timeout decides. The desk keeps the decision and the time the
wait began, so a run killed while waiting and resumed later goes on waiting for
the time that was left, and honours a decision made while no orch process ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import events as ev
from ..errors import ExpressionError, format_duration
from ..expr import render
from .result import ApprovalDesk

if TYPE_CHECKING:
    from ..spec.model import Phase
    from .context import RunContext

__all__ = ["ApprovalDesk", "wait_for_approval"]

#: Seconds between two looks at the desk while a phase waits.
POLL = 0.2


async def wait_for_approval(
    run: RunContext, phase: Phase, ctx: Mapping[str, Any]
) -> tuple[str | None, dict[str, Any]]:
    """Wait for the phase's decision. Returns (error, record): error is None when the phase
    may run, else why it fails (rejected, timed out); record describes the decision
    (``decision``, ``who``, ``at``, ``comment``) for the phase's events."""
    spec = phase.approval
    assert spec is not None
    desk = run.options.approvals
    if desk is None:
        return (
            "this phase needs an approval, but the run has no state store to receive one"
            " (run it with `orch run`)",
            {},
        )
    details: dict[str, Any] = {}
    if spec.message:
        try:
            details["message"] = str(render(spec.message, ctx, where=phase.location))
        except ExpressionError as exc:
            return f"approval.message: {exc}", {}
    if spec.timeout is not None:
        details["timeout"] = spec.timeout
    start: float | None = None
    while True:
        found = await asyncio.to_thread(desk.decision, run.run_id, phase.id)
        if found is None and start is None:  # waits (a resumed run decided meanwhile does not)
            await run.bus.emit(
                ev.phase_waiting(
                    run.run_id, run.now(), phase.id, reason="approval", details=details
                )
            )
            since = await asyncio.to_thread(desk.waiting_since, run.run_id, phase.id)
            start = since if since is not None else run.now()
            continue
        if found is not None:
            record = {
                "decision": "approved" if found.approved else "rejected",
                "who": found.who,
                "at": found.at,
                "comment": found.comment,
            }
            if found.approved:
                return None, record
            why = f": {found.comment}" if found.comment else ""
            return f"rejected by {found.who}{why}", record
        if spec.timeout is not None and start is not None and run.now() - start >= spec.timeout:
            after = format_duration(spec.timeout)
            record = {"decision": f"timed out ({spec.on_timeout})", "who": "timeout"}
            if spec.on_timeout == "approve":
                return None, record
            return (
                f"no decision within {after}: the approval timed out (on_timeout: reject)",
                record,
            )
        await asyncio.sleep(POLL)

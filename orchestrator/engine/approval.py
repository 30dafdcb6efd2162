"""A phase with ``approval:`` waits for a person's decision before it runs.

The engine emits ``phase_waiting`` (durable before anything else happens), then
polls an ``ApprovalDesk`` (the state store) until a decision is recorded there
or the approval's timeout decides. The desk keeps the decision and the time the
wait began, so a run killed while waiting and resumed later goes on waiting for
the time that was left, and honours a decision made while no orch process ran.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .. import events as ev
from ..errors import ExpressionError, format_duration
from ..expr import render
from .result import ApprovalDesk

if TYPE_CHECKING:
    from ..events import Event
    from ..spec.model import Phase
    from .result import RunOptions, Slots

__all__ = ["ApprovalDesk", "ApprovingRun", "SubRunDesk", "wait_for_approval"]

#: Seconds between two looks at the desk while a phase waits.
POLL = 0.2


class _Emitter(Protocol):
    def emit(self, event: Event) -> Awaitable[None]: ...


class ApprovingRun(Protocol):
    """What an approval needs of the run it belongs to (``context.RunContext`` is one):
    its id, its options (``approvals``: the desk), its event bus and its clock."""

    @property
    def run_id(self) -> str: ...

    @property
    def options(self) -> RunOptions: ...

    @property
    def bus(self) -> _Emitter: ...

    @property
    def now(self) -> Callable[[], float]: ...

    @property
    def slots(self) -> Slots: ...


class SubRunDesk:
    """The approvals of a sub-run: its phases are decided on the top run, at an address.

    ``desk`` is the top run's (the state store), ``run_id`` the top run's id,
    ``prefix`` the address of the sub-run (``write/``), ``emit`` the top run's event
    bus. ``forward`` is the sub-run's event sink: the events of its phases with
    ``approval:`` go to the top run as ``<prefix><phase>``.
    """

    __slots__ = ("desk", "run_id", "prefix", "emit", "phases")

    def __init__(
        self,
        desk: ApprovalDesk,
        run_id: str,
        prefix: str,
        emit: Callable[[Event], Awaitable[None]],
        phases: frozenset[str] = frozenset(),
    ) -> None:
        self.desk = desk
        self.run_id = run_id
        self.prefix = prefix
        self.emit = emit
        self.phases = phases

    @classmethod
    def below(cls, run: ApprovingRun, at: str, phases: frozenset[str]) -> SubRunDesk | None:
        """The desk of a sub-run started by ``run`` at address ``at`` (None: no desk)."""
        desk = run.options.approvals
        if desk is None:
            return None
        if isinstance(desk, SubRunDesk):  # a sub-run's sub-run: still the top run's desk
            return cls(desk.desk, desk.run_id, f"{desk.prefix}{at}/", desk.emit, phases)
        return cls(desk, run.run_id, f"{at}/", run.bus.emit, phases)

    def decision(self, run_id: str, phase: str) -> Any:
        """The top run's decision for this sub-run's ``phase``."""
        return self.desk.decision(self.run_id, self.prefix + phase)

    def waiting_since(self, run_id: str, phase: str) -> float | None:
        """When the top run first recorded this sub-run's ``phase`` waiting."""
        return self.desk.waiting_since(self.run_id, self.prefix + phase)

    def reopen(self, run_id: str, phase: str) -> bool:
        """Ask again for this sub-run's ``phase`` on the top run, when it was refused."""
        return self.desk.reopen(self.run_id, self.prefix + phase)

    async def forward(self, event: Event) -> None:
        """Record an event of a phase with ``approval:`` in the top run, at its address."""
        if event.phase in self.phases:
            moved = dataclasses.replace(event, run_id=self.run_id, phase=self.prefix + event.phase)
            await self.emit(moved)


async def wait_for_approval(
    run: ApprovingRun, phase: Phase, ctx: Mapping[str, Any]
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
            " (run it with `orch run`, or from Python with `orchestrator.start(...)`,"
            " which records the run in the state store)",
            {},
        )
    details: dict[str, Any] = {}
    if spec.message:
        try:
            details["message"] = str(
                render(
                    spec.message, ctx, where=phase.locations.get("approval.message", phase.location)
                )
            )
        except ExpressionError as exc:
            return f"approval.message: {exc.headline}", {}
    if spec.timeout is not None:
        details["timeout"] = spec.timeout
    # resumed after a refusal (a rejection, a timeout that rejects): ask again, anew
    again = await asyncio.to_thread(desk.reopen, run.run_id, phase.id)
    waited: list[bool] = []
    refused, record = await _decided(run, phase, desk, details, again, waited)
    if waited and refused is None:  # it gave its max_parallel slot back while it waited
        await run.slots.take()
    return refused, record


async def _decided(
    run: ApprovingRun,
    phase: Phase,
    desk: ApprovalDesk,
    details: Mapping[str, Any],
    again: bool,
    waited: list[bool],
) -> tuple[str | None, dict[str, Any]]:
    """The wait of ``wait_for_approval`` until a decision or the timeout; ``waited`` gets
    an entry when the phase waited (its slot given back meanwhile)."""
    spec = phase.approval
    assert spec is not None
    start: float | None = None
    while True:
        found = await asyncio.to_thread(desk.decision, run.run_id, phase.id)
        if found is None and start is None:  # waits (a resumed run decided meanwhile does not)
            # the timeout counts from when this wait began (a resumed wait goes on)
            since = None
            if not again:
                since = await asyncio.to_thread(desk.waiting_since, run.run_id, phase.id)
            start = since if since is not None else run.now()
            await run.bus.emit(
                ev.phase_waiting(
                    run.run_id,
                    run.now(),
                    phase.id,
                    reason="approval",
                    details={**details, "since": start},
                )
            )
            run.slots.release()  # a phase waiting for a person holds no max_parallel slot
            waited.append(True)
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

"""Budgets (``budget: {tokens, cost}``): what the run's agent calls used, checked before each call.

``Spend`` is kept by the run context; the call path (``call.py``) asks
``check(phase)`` before every call of the workflow's phases and ``add(phase,
metadata)`` after it (also for a failed call that reports usage). Once what is
already spent reaches the run's budget, or the phase's own, the call is refused
with ``BudgetExceeded`` (permanent: the phase fails, fail-fast stops the run,
compensations and handlers still run). The check is before the call, so the
call that crosses the limit completes and the next one is refused.

A sub-run (the ``workflow`` agent) spends from its caller's budget too: its
``Spend`` has a ``parent`` (``RunOptions.budget_parent``, the call that started
it), to which every ``add`` is passed on as it happens (so the calling phase,
and the run above, count it at once) and whose ``check`` runs before each of
the sub-run's calls: a sub-run stops as soon as a budget above is used up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..agents.base import AgentFailure
from ..events import format_cost
from ..spec.model import Budget, Workflow
from .result import SpendParent, Usage

__all__ = ["BudgetExceeded", "Spend"]


class BudgetExceeded(AgentFailure):
    """A call refused because a budget is used up (permanent: never retried)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


class Spend:
    """What the run's calls used, in all and per phase, against the workflow's budgets."""

    __slots__ = ("workflow", "total", "by_phase", "_budgets", "enforcing", "parent")

    def __init__(self, workflow: Workflow, parent: SpendParent | None = None) -> None:
        self.workflow = workflow
        self.parent = parent  # a sub-run's: the call that started it
        self.total = Usage()
        self.by_phase: dict[str, Usage] = {}
        self._budgets: dict[str, Budget] = {
            p.id: p.budget for p in workflow.phases if p.budget is not None
        }
        #: off once the phases are over: compensations and handlers clean up regardless
        self.enforcing = workflow.budget is not None or bool(self._budgets) or parent is not None

    def add(self, phase_id: str, metadata: Mapping[str, Any] | None) -> None:
        """Count one call's reported ``tokens`` and ``cost``."""
        if not metadata:
            return
        self.total.add(metadata)
        self.by_phase.setdefault(phase_id, Usage()).add(metadata)
        if self.parent is not None:
            self.parent.spent(metadata)

    def check(self, phase_id: str, *, sub_run: bool = False) -> None:
        """Raise BudgetExceeded when the run's or ``phase_id``'s budget is used up, or a
        budget of the runs above (a sub-run's); ``sub_run``: a sub-run of ``phase_id`` asks."""
        if not self.enforcing:
            return
        run_budget = self.workflow.budget
        if run_budget is not None:
            why = _over(self.total, run_budget)
            if why is not None:
                whose = (
                    f"the budget of workflow '{self.workflow.name}' (the run that started this "
                    "sub-run)"
                    if sub_run
                    else "the run's budget"
                )
                raise BudgetExceeded(
                    f"{whose} is used up: {why} (used by {self._users()}); no more agent calls"
                )
        own = self._budgets.get(phase_id)
        used = self.by_phase.get(phase_id)
        if own is not None and used is not None:
            why = _over(used, own)
            if why is not None:
                whose = (
                    f"the budget of phase '{phase_id}' (the phase that started this sub-run)"
                    if sub_run
                    else "the phase's budget"
                )
                raise BudgetExceeded(f"{whose} is used up: {why}; no more agent calls")
        if self.parent is not None:
            self.parent.check()

    def _users(self) -> str:
        """The phases that spent, biggest first: ``ask 90 tokens $0.0012, sum 30 tokens``."""
        ranked = sorted(
            self.by_phase.items(),
            key=lambda kv: (kv[1].cost or 0.0, kv[1].total_tokens),
            reverse=True,
        )
        parts = []
        for pid, usage in ranked[:5]:
            bits = [f"{usage.total_tokens:,} tokens"] if usage.total_tokens else []
            if usage.cost is not None:
                bits.append(format_cost(usage.cost))
            parts.append(f"{pid} {' '.join(bits)}")
        more = len(ranked) - 5
        return ", ".join(parts) + (f" and {more} more phases" if more > 0 else "")


def _over(used: Usage, budget: Budget) -> str | None:
    """Why ``used`` has reached ``budget`` (``120 of 100 tokens``), or None."""
    if budget.tokens is not None and used.total_tokens >= budget.tokens:
        return f"{used.total_tokens:,} of {budget.tokens:,} tokens spent (budget.tokens)"
    if budget.cost is not None and used.cost is not None and used.cost >= budget.cost:
        return f"{format_cost(used.cost)} of {format_cost(budget.cost)} spent (budget.cost)"
    return None

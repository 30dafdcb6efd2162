"""What a run did, and what it would do: the end-of-run summary and the ``--dry-run`` plan.

The summary reads a RunView (folded from the run's events) and the Plan: a
table of phases (status, duration, attempts), the success rate, the total time,
the critical path measured with the real durations, and token totals.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..events import format_cost
from ..plan import Plan
from .graph import agent_text, approval_text, phase_facts, repeat_text
from .progress import STATE_STYLES, PhaseView, RunView, format_seconds, format_tokens

__all__ = [
    "measured_critical_path",
    "next_commands",
    "print_summary",
    "render_plan_preview",
    "summary_lines",
    "summary_table",
]

_MAX_ROWS = 30


def measured_critical_path(plan: Plan, view: RunView) -> tuple[list[str], float]:
    """The dependency chain with the longest measured duration, and that duration.

    Phases that did not run weigh 0. Ties go to the phase listed first in the plan.
    """
    finish: dict[str, float] = {}
    best_pred: dict[str, str | None] = {}
    for pid in plan.order:
        phase = view.phases.get(pid)
        own = phase.duration if phase is not None and phase.duration is not None else 0.0
        pred = max(plan.predecessors.get(pid, ()), key=finish.__getitem__, default=None)
        finish[pid] = own + (finish[pred] if pred is not None else 0.0)
        best_pred[pid] = pred
    if not finish:
        return [], 0.0
    end: str | None = max(plan.order, key=finish.__getitem__)
    total = finish[end] if end is not None else 0.0
    path: list[str] = []
    while end is not None:
        path.append(end)
        end = best_pred[end]
    return list(reversed(path)), total


def print_summary(
    console: Console, view: RunView, plan: Plan | None = None, state_dir: str | None = None
) -> None:
    """Print the end-of-run summary: the phase table, then one unwrapped line per total."""
    console.print(summary_table(view))
    shown = len(_rows(view))
    if shown < len(view.phases):
        more = len(view.phases) - shown
        console.print(f"({more} more phase{'s' if more != 1 else ''} not shown)", soft_wrap=True)
    for line in summary_lines(view, plan, state_dir):
        console.print(line, soft_wrap=True)


def summary_table(view: RunView) -> Table:
    """One row per phase: status, duration, attempts, and a note (error, fallback, retries).

    Runs with more than 30 phases list the failed and cancelled phases first,
    then the slowest.
    """
    table = Table(title=None, show_edge=True, header_style="bold", expand=False)
    table.add_column("phase", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("note", overflow="fold", max_width=60)
    for phase in _rows(view):
        table.add_row(
            phase.id,
            Text(phase.state, style=STATE_STYLES.get(phase.state, "")),
            format_seconds(phase.duration) if phase.duration is not None else "-",
            str(phase.attempts) if phase.attempts else "-",
            _note(phase),
        )
    return table


def _rows(view: RunView) -> list[PhaseView]:
    phases = [view.phases[pid] for pid in view.order]
    if len(phases) <= _MAX_ROWS:
        return phases
    bad = [p for p in phases if p.state in ("failed", "cancelled", "running")]
    slow = sorted(
        (p for p in phases if p.state not in ("failed", "cancelled", "running")),
        key=lambda p: -(p.duration or 0.0),
    )
    chosen = {p.id for p in (bad + slow)[:_MAX_ROWS]}
    return [p for p in phases if p.id in chosen]


def _note(phase: PhaseView) -> str:
    if phase.state in ("failed", "cancelled") and phase.error and phase.error != phase.state:
        lines = phase.error.strip().splitlines()
        first = lines[0] if lines else phase.error
        return f"{first} ({phase.note})" if phase.note else first
    return phase.note


def summary_lines(
    view: RunView, plan: Plan | None = None, state_dir: str | None = None
) -> list[str]:
    """The totals under the table: status and time, success rate, critical path, tokens;
    after a failed or cancelled run, the commands that resume it and read its logs
    (``state_dir``: the --state-dir the run used, repeated in them)."""
    if plan is not None:
        view.expect(plan.order)  # the rate counts the workflow's phases, not its handlers
    counts = {state: n for state, n in view.workflow_counts.items() if n > 0}
    ran = sum(counts.get(s, 0) for s in ("completed", "failed", "cancelled"))
    done = counts.get("completed", 0)
    rate = f"{100 * done / ran:.0f}%" if ran else "n/a"
    states = ", ".join(f"{counts[state]} {state}" for state in STATE_STYLES if counts.get(state))
    status = view.status or "unfinished"
    took = format_seconds(view.duration) if view.duration is not None else "?"
    detail = f"{done} of {ran} phase{'s' if ran != 1 else ''} that ran completed"
    if states and done != sum(counts.values()):  # say the other states only when there are any
        detail += f"; {states}"
    lines = [
        f"run {view.run_id or '?'}: {status} in {took}",
        f"success rate: {rate} ({detail})",
    ]
    if plan is not None and plan.order:
        path, length = measured_critical_path(plan, view)
        lines.append(f"critical path: {' -> '.join(path)} ({format_seconds(length)})")
    tokens = view.token_totals()
    if any(tokens.values()):
        lines.append("tokens: " + format_tokens(tokens))
    cost = view.cost_total()
    if cost is not None:
        lines.append("cost: " + format_cost(cost))
    ended = [p for p in view.handlers if p.state != "pending"]
    # `write/approve`: a sub-run's phase with approval, recorded in this run (ids have no /)
    handlers = [p for p in ended if "/" not in p.id]
    if handlers:
        lines.append("handlers: " + ", ".join(f"{p.id} {p.state}" for p in handlers))
    nested = [p for p in ended if "/" in p.id]
    if nested:
        lines.append("sub-run approvals: " + ", ".join(f"{p.id} {p.state}" for p in nested))
    if view.breaker_opens:
        lines.append(
            "circuit breakers opened: "
            + ", ".join(
                f"{agent} ({n} time{'s' if n != 1 else ''})"
                for agent, n in sorted(view.breaker_opens.items())
            )
        )
    if view.compensated:
        ok = [pid for pid, good in view.compensated if good]
        failed = [pid for pid, good in view.compensated if not good]
        parts = [f"{len(ok)} ok ({', '.join(ok)})"] if ok else []
        parts += [f"{len(failed)} failed ({', '.join(failed)})"] if failed else []
        lines.append("compensations: " + ", ".join(parts))
    if view.error and status != "completed":
        lines.append(f"error: {view.error}")
    if status in ("failed", "cancelled") and view.run_id:
        lines.extend(next_commands(view, state_dir))
    return lines


def next_commands(view: RunView, state_dir: str | None = None) -> list[str]:
    """What to type after a failed or cancelled run: resume it, read its (failed phase's) logs."""
    where = f" --state-dir {shlex.quote(state_dir)}" if state_dir else ""
    failed = [p.id for p in (view.phases[pid] for pid in view.order) if p.state == "failed"]
    phase = f" --phase {failed[0]}" if failed else ""
    return [
        f"resume it: orch resume {view.run_id}{where}",
        f"its logs:  orch logs {view.run_id}{phase}{where}",
    ]


def render_plan_preview(plan: Plan, resolve: Callable[[Any], Any] = lambda value: value) -> str:
    """The ``--dry-run`` text: the plan's order by level, each phase with its settings.

    ``resolve`` gives a value as it can be known before the run (``with``,
    ``foreach``, fallback input): templates that need only the inputs rendered,
    the others left as they are. Nothing is run to produce this.
    """
    wf = plan.workflow
    levels = len(plan.levels)
    lines = [
        f"plan for workflow {wf.name} ({wf.path}): {len(plan.order)} "
        f"phase{'s' if len(plan.order) != 1 else ''} in {levels} "
        f"level{'s' if levels != 1 else ''}, mode {wf.mode}"
        + (f", max_parallel {wf.max_parallel}" if wf.max_parallel else ""),
    ]
    if plan.critical_path:
        lines.append(
            f"critical path (estimated): {' -> '.join(plan.critical_path)} "
            f"({format_seconds(plan.critical_length)})"  # as `orch graph` says it
        )
    position = {pid: i + 1 for i, pid in enumerate(plan.order)}
    for n, level in enumerate(plan.levels, start=1):
        lines.append("")
        lines.append(f"level {n}:")
        for pid in level:
            lines.extend(_phase_lines(plan, pid, position[pid], resolve))
    for title, hooks in (
        ("on_success", wf.on_success),
        ("on_failure", wf.on_failure),
        ("finally", wf.finally_),
    ):
        if hooks:
            lines.append("")
            lines.append(f"{title}: " + ", ".join(f"{h.id} (agent {agent_text(h)})" for h in hooks))
    if wf.outputs:
        lines.append("")
        lines.append("outputs:")
        lines.extend(f"  {key}: {_json(value)}" for key, value in wf.outputs.items())
    return "\n".join(lines)


def _phase_lines(plan: Plan, pid: str, position: int, resolve: Callable[[Any], Any]) -> list[str]:
    phase = plan.phases[pid]
    facts = phase_facts(phase)  # what orch graph shows of the phase, the same words
    head = f"  {position}. {pid}  agent {agent_text(phase)}"
    deps = sorted(plan.predecessors.get(pid, ()), key=plan.order.index)
    if deps:
        head += f"  after {', '.join(deps)}"
    out = [head]
    settings = []
    if phase.trigger != "all_success":
        settings.append(f"trigger {phase.trigger}")
    if phase.timeout is not None:
        settings.append(f"timeout {format_seconds(phase.timeout)}")
    if phase.retries.attempts:
        r = phase.retries
        settings.append(f"retries {r.attempts} ({r.backoff}, delay {format_seconds(r.delay)})")
    if phase.continue_on_error:
        settings.append("continue_on_error")
    if phase.cache is not None:
        settings.append("cache")
    if phase.priority != "medium":
        settings.append(f"priority {phase.priority}")
    if settings:
        out.append("     " + "; ".join(settings))
    if phase.when:
        out.append(f"     when: {phase.when}")
    if phase.foreach is not None:
        out.append(f"     foreach: {_json(resolve(phase.foreach))}")
    if facts["select"] is not None:
        out.append(f"     select: {facts['select']}")
    approval, repeat = approval_text(phase), repeat_text(phase)
    if approval is not None:
        message = facts["approval"]["message"]
        out.append(f"     {approval}" + (f": {_json(message)}" if message else ""))
    if repeat is not None:
        out.append(f"     {repeat}")
    if phase.with_:
        out.append(f"     with: {_json(resolve(dict(phase.with_)))}")
    if phase.fallback is not None:
        fallback = _json(resolve(dict(phase.fallback.with_)))
        out.append(f"     fallback: agent {phase.fallback.agent} with {fallback}")
    if phase.compensate is not None:
        out.append(f"     compensate: agent {phase.compensate.agent}")
    return out


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)

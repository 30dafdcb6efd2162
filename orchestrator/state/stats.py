"""``orch stats``: what recorded runs say across runs, per workflow, phase and agent.

``compute_stats(store, since=, workflow=)`` folds the store's rows (one query
for runs, one for phases, one for the circuit breakers that opened:
``SqliteStore.stats_rows``) into a ``Stats`` value;
``parse_since`` reads ``since`` (``--since``). Rendering (table, JSON, OpenMetrics) is the
edge's business (render/stats.py).

Definitions: a workflow's *success rate* is completed runs over finished runs
(running and interrupted runs are counted but not rated); durations are of
finished runs, and of phases that ran (cache hits included, skipped phases
not). A phase's *calls* are its attempts (agent calls; none for a cache hit), *retries* the attempts
after the first, *failures* the executions that ended failed; *busy* is the
summed duration of its executions; *breaker opens* the times a call of the
phase (or of the agent) opened the agent's circuit breaker (``breaker_opened``
events). Percentiles are nearest-rank. Tokens and cost are read as the engine reads them
(``orchestrator.usage``: a phase's tokens are its ``total``, else prompt + completion, as
``budget:`` counts them; a cost only when it is a finite, non-negative number).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ..errors import UsageError
from ..spec.values import parse_duration
from ..usage import Usage

__all__ = [
    "AgentStats",
    "PhaseStats",
    "Stats",
    "WorkflowStats",
    "compute_stats",
    "parse_since",
    "percentile",
]


class _Rows(Protocol):
    def stats_rows(
        self, since: float | None = None, workflow: str | None = None
    ) -> tuple[Sequence[tuple[Any, ...]], Sequence[tuple[Any, ...]], Sequence[tuple[Any, ...]]]: ...


_DAYS = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(d|w)\s*$")


def parse_since(text: str, now: float | None = None, *, option: str = "since") -> float:
    """The epoch time ``text`` ago: ``7d``, ``2w``, ``12h``, ``30m``, ``1h30m``...

    Raises UsageError (exit 2) naming the value when it is not a duration, and the
    setting as the caller's user writes it (``option``: ``since`` for the Python API's
    argument, ``--since`` for the command line's).
    """
    now = time.time() if now is None else now
    m = _DAYS.match(text)
    try:
        seconds = (
            float(m.group(1)) * (86400 if m.group(2) == "d" else 604800)
            if m
            else parse_duration(text)
        )
    except ValueError:
        raise UsageError(
            f"{option} '{text}' is not a duration",
            hint="write a duration back from now, e.g. 7d, 12h or 30m",
        ) from None
    return now - seconds


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _usage(tokens: Any, cost: Any) -> Usage:
    """A phase row's tokens and cost, read as the engine reads a call's (``Usage``)."""
    if isinstance(tokens, str):  # an object comes out of SQLite as its JSON text
        try:
            tokens = json.loads(tokens)
        except ValueError:
            tokens = None
    usage = Usage()
    usage.add({"tokens": tokens, "cost": cost})
    return usage


@dataclass(frozen=True, slots=True)
class WorkflowStats:
    """One workflow across its runs."""

    workflow: str
    runs: int
    statuses: dict[str, int]
    success_rate: float | None
    p50: float | None
    p95: float | None
    tokens: int
    cost: float | None


@dataclass(frozen=True, slots=True)
class PhaseStats:
    """One phase (of one workflow) across the runs that reached it."""

    workflow: str
    phase: str
    runs: int
    calls: int
    failures: int
    retries: int
    cached: int
    skipped: int
    p50: float | None
    p95: float | None
    busy: float
    tokens: int
    cost: float | None
    breaker_opens: int = 0


@dataclass(frozen=True, slots=True)
class AgentStats:
    """One agent (a named instance or a bare type) across every phase that used it."""

    agent: str
    phases: int
    calls: int
    failures: int
    retries: int
    p50: float | None
    p95: float | None
    busy: float
    tokens: int
    cost: float | None
    breaker_opens: int = 0


@dataclass(frozen=True, slots=True)
class Stats:
    """What ``orch stats`` shows; ``since`` is the window's start (None: everything)."""

    since: float | None
    workflow: str | None
    workflows: list[WorkflowStats] = field(default_factory=list)
    phases: list[PhaseStats] = field(default_factory=list)
    agents: list[AgentStats] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``orch stats --json``)."""
        return asdict(self)


_FINISHED = ("completed", "failed", "cancelled")


def compute_stats(
    store: _Rows, *, since: float | None = None, workflow: str | None = None
) -> Stats:
    """Fold the store's runs (started at or after ``since``) into per-workflow, per-phase and
    per-agent statistics, each list sorted by name."""
    run_rows, phase_rows, breaker_rows = store.stats_rows(since, workflow)
    by_phase: dict[tuple[str, str], int] = {}
    by_agent: dict[str, int] = {}
    for wf, pid, agent, n in breaker_rows:
        by_phase[(str(wf), str(pid))] = by_phase.get((str(wf), str(pid)), 0) + int(n)
        by_agent[str(agent)] = by_agent.get(str(agent), 0) + int(n)
    return Stats(
        since=since,
        workflow=workflow,
        workflows=_workflows(run_rows, phase_rows),
        phases=_phases(phase_rows, by_phase),
        agents=_agents(phase_rows, by_agent),
    )


def _workflows(
    rows: Iterable[tuple[Any, ...]], phase_rows: Sequence[tuple[Any, ...]]
) -> list[WorkflowStats]:
    groups: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        groups.setdefault(str(row[0]), []).append(row)
    used: dict[str, _Spent] = {}
    for row in phase_rows:
        used.setdefault(str(row[0]), _Spent()).add(row[8], row[9])
    out = []
    for name in sorted(groups):
        statuses: dict[str, int] = {}
        durations: list[float] = []
        for _, status, started, ended in groups[name]:
            statuses[status] = statuses.get(status, 0) + 1
            if status in _FINISHED and ended is not None and started is not None:
                durations.append(max(0.0, float(ended) - float(started)))
        finished = sum(statuses.get(s, 0) for s in _FINISHED)
        spent = used.get(name, _Spent())
        out.append(
            WorkflowStats(
                workflow=name,
                runs=len(groups[name]),
                statuses=dict(sorted(statuses.items())),
                success_rate=statuses.get("completed", 0) / finished if finished else None,
                p50=percentile(durations, 50),
                p95=percentile(durations, 95),
                tokens=spent.tokens,
                cost=spent.cost,
            )
        )
    return out


@dataclass(slots=True)
class _Spent:
    """Tokens (each phase's total, as ``Usage.total_tokens`` counts it) and cost summed."""

    tokens: int = 0
    cost: float | None = None

    def add(self, tokens: Any, cost: Any) -> None:
        usage = _usage(tokens, cost)
        self.tokens += usage.total_tokens
        if usage.cost is not None:
            self.cost = (self.cost or 0.0) + usage.cost


@dataclass(slots=True)
class _Acc:
    runs: int = 0
    calls: int = 0
    failures: int = 0
    retries: int = 0
    cached: int = 0
    skipped: int = 0
    durations: list[float] = field(default_factory=list)
    usage: _Spent = field(default_factory=_Spent)

    def add(self, row: tuple[Any, ...]) -> None:
        _, _, state, attempts, started, ended, cached, _, tokens, cost = row
        if state == "skipped":
            self.skipped += 1
            return
        if state == "pending":
            return
        self.runs += 1
        tries = 0 if cached else int(attempts or 0)  # a cache hit called no agent
        self.calls += tries
        self.retries += max(0, tries - 1)
        self.failures += state == "failed"
        self.cached += bool(cached)
        if started is not None and ended is not None:
            self.durations.append(max(0.0, float(ended) - float(started)))
        self.usage.add(tokens, cost)

    def figures(self) -> dict[str, Any]:
        """What phases and agents share: calls, failures, retries, p50, p95, busy, tokens, cost."""
        return {
            "calls": self.calls,
            "failures": self.failures,
            "retries": self.retries,
            "p50": percentile(self.durations, 50),
            "p95": percentile(self.durations, 95),
            "busy": sum(self.durations),
            "tokens": self.usage.tokens,
            "cost": self.usage.cost,
        }


def _phases(rows: Iterable[tuple[Any, ...]], opens: dict[tuple[str, str], int]) -> list[PhaseStats]:
    accs: dict[tuple[str, str], _Acc] = {}
    for row in rows:
        accs.setdefault((str(row[0]), str(row[1])), _Acc()).add(row)
    return [
        PhaseStats(
            workflow=wf,
            phase=pid,
            runs=a.runs,
            cached=a.cached,
            skipped=a.skipped,
            breaker_opens=opens.get((wf, pid), 0),
            **a.figures(),
        )
        for (wf, pid), a in sorted(accs.items())
    ]


def _agents(rows: Iterable[tuple[Any, ...]], opens: dict[str, int]) -> list[AgentStats]:
    accs: dict[str, _Acc] = {}
    for row in rows:
        if row[7] is not None:  # phases that never started have no agent
            accs.setdefault(str(row[7]), _Acc()).add(row)
    for name in opens:  # a breaker opened by a compensation or a chosen agent
        accs.setdefault(name, _Acc())
    return [
        AgentStats(agent=name, phases=a.runs, breaker_opens=opens.get(name, 0), **a.figures())
        for name, a in sorted(accs.items())
    ]

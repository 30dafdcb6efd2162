"""``orch stats`` shown: three tables for people, or OpenMetrics text for a scraper."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..events import format_cost as _format_cost
from ..state.stats import Stats
from .progress import format_seconds

__all__ = ["format_cost", "openmetrics", "stats_view"]


def format_cost(cost: float | None) -> str:
    """A cost as ``$0.0123`` (4 decimals under a dollar, 2 above); ``-`` when unknown."""
    return "-" if cost is None else _format_cost(cost)


def _secs(value: float | None) -> str:
    return "-" if value is None else format_seconds(value)


def _table(title: str, columns: Iterable[str]) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    return table


def stats_view(stats: Stats) -> RenderableType:
    """Workflows, phases and agents as tables (or one line when there is nothing)."""
    if not stats.workflows:
        of = f" of workflow '{stats.workflow}'" if stats.workflow else ""
        return Text(f"no runs{of} recorded" + (" in that window" if stats.since else ""))
    wf = _table(
        "workflows",
        ["workflow", "runs", "completed", "failed", "success", "p50", "p95", "tokens", "cost"],
    )
    for w in stats.workflows:
        rate = "-" if w.success_rate is None else f"{w.success_rate:.0%}"
        wf.add_row(
            w.workflow,
            str(w.runs),
            str(w.statuses.get("completed", 0)),
            str(w.statuses.get("failed", 0)),
            rate,
            _secs(w.p50),
            _secs(w.p95),
            str(w.tokens or "-"),
            format_cost(w.cost),
        )
    # the phases table names breaker opens only when some phase opened a breaker (width)
    breakers = any(p.breaker_opens for p in stats.phases)
    ph = _table(
        "phases",
        ["phase", "runs", "calls", "failures", "retries", "cached", "p50", "p95", "busy", "cost"]
        + (["breaker opens"] if breakers else []),
    )
    many = len({p.workflow for p in stats.phases}) > 1
    for p in stats.phases:
        ph.add_row(
            f"{p.workflow}/{p.phase}" if many else p.phase,
            str(p.runs),
            str(p.calls),
            str(p.failures),
            str(p.retries),
            str(p.cached),
            _secs(p.p50),
            _secs(p.p95),
            _secs(p.busy),
            format_cost(p.cost),
            *([str(p.breaker_opens)] if breakers else []),
        )
    ag = _table(
        "agents",
        [
            "agent",
            "phases",
            "calls",
            "failures",
            "retries",
            "p50",
            "p95",
            "busy",
            "cost",
            "breaker opens",
        ],
    )
    for a in stats.agents:
        ag.add_row(
            a.agent,
            str(a.phases),
            str(a.calls),
            str(a.failures),
            str(a.retries),
            _secs(a.p50),
            _secs(a.p95),
            _secs(a.busy),
            format_cost(a.cost),
            str(a.breaker_opens),
        )
    return Group(wf, Text(""), ph, Text(""), ag)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def openmetrics(stats: Stats) -> str:
    """The statistics in the OpenMetrics text format (ends with ``# EOF``).

    Counts over the window are gauges (they are not monotonic across windows);
    durations are summaries with the 0.5 and 0.95 quantiles.
    """
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, unit: str = "") -> None:
        out.append(f"# TYPE {name} {kind}")
        if unit:
            out.append(f"# UNIT {name} {unit}")
        out.append(f"# HELP {name} {help_text}")

    def sample(name: str, labels: dict[str, str], value: float | None) -> None:
        if value is None:
            return
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        out.append(f"{name}{{{text}}} {_num(value)}")

    family("orch_workflow_runs", "gauge", "Runs recorded in the window, by final status.")
    for w in stats.workflows:
        for status, n in w.statuses.items():
            sample("orch_workflow_runs", {"workflow": w.workflow, "status": status}, n)
    family("orch_workflow_success_ratio", "gauge", "Completed runs over finished runs.")
    for w in stats.workflows:
        sample("orch_workflow_success_ratio", {"workflow": w.workflow}, w.success_rate)
    family("orch_workflow_duration_seconds", "summary", "Duration of finished runs.", "seconds")
    for w in stats.workflows:
        for q, v in (("0.5", w.p50), ("0.95", w.p95)):
            sample("orch_workflow_duration_seconds", {"workflow": w.workflow, "quantile": q}, v)
    family("orch_workflow_tokens", "gauge", "LLM tokens used by the window's runs.")
    for w in stats.workflows:
        sample("orch_workflow_tokens", {"workflow": w.workflow}, w.tokens)
    family("orch_workflow_cost", "gauge", "What the window's runs cost (the prices' currency).")
    for w in stats.workflows:
        sample("orch_workflow_cost", {"workflow": w.workflow}, w.cost)
    phase_metrics = (
        ("orch_phase_calls", "Agent calls (attempts) of the phase.", "calls"),
        ("orch_phase_failures", "Executions of the phase that failed.", "failures"),
        ("orch_phase_retries", "Attempts after the first.", "retries"),
        ("orch_phase_cache_hits", "Executions served from the cache.", "cached"),
        (
            "orch_phase_breaker_opens",
            "Times a call of the phase opened its agent's circuit breaker.",
            "breaker_opens",
        ),
    )
    for name, help_text, attr in phase_metrics:
        family(name, "gauge", help_text)
        for p in stats.phases:
            sample(name, {"workflow": p.workflow, "phase": p.phase}, getattr(p, attr))
    family(
        "orch_phase_duration_seconds", "summary", "Duration of the phase's executions.", "seconds"
    )
    for p in stats.phases:
        labels = {"workflow": p.workflow, "phase": p.phase}
        for q, v in (("0.5", p.p50), ("0.95", p.p95)):
            sample("orch_phase_duration_seconds", {**labels, "quantile": q}, v)
    agent_metrics = (
        ("orch_agent_calls", "Calls (attempts) made to the agent.", "calls"),
        ("orch_agent_failures", "Phase executions on the agent that failed.", "failures"),
        ("orch_agent_retries", "Attempts after the first.", "retries"),
        ("orch_agent_busy_seconds", "Summed duration of the agent's phases.", "busy"),
        ("orch_agent_tokens", "LLM tokens the agent used.", "tokens"),
        ("orch_agent_cost", "What the agent's calls cost.", "cost"),
        ("orch_agent_breaker_opens", "Times the agent's circuit breaker opened.", "breaker_opens"),
    )
    for name, help_text, attr in agent_metrics:
        family(name, "gauge", help_text, "seconds" if name.endswith("_seconds") else "")
        for a in stats.agents:
            sample(name, {"agent": a.agent}, getattr(a, attr))
    family("orch_agent_duration_seconds", "summary", "Duration of the agent's phases.", "seconds")
    for a in stats.agents:
        for q, v in (("0.5", a.p50), ("0.95", a.p95)):
            sample("orch_agent_duration_seconds", {"agent": a.agent, "quantile": q}, v)
    return "\n".join(out) + "\n# EOF\n"

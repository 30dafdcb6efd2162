"""``/metrics``: the OpenMetrics text of runs, phases, agents and the queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..state.sqlite import SqliteStore
    from .runs import RunManager

__all__ = ["openmetrics"]


def _label(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def openmetrics(store: SqliteStore, runs: RunManager) -> str:
    """Runs by workflow and status, phase durations (summary) and retries, running phases per
    agent, and the queue length, in the OpenMetrics text format (ends with ``# EOF``)."""
    data = store.metrics()
    out = [
        "# TYPE orch_runs gauge",
        "# HELP orch_runs Recorded runs by workflow and status.",
    ]
    for workflow, status, count in data["runs"]:
        out.append(f"orch_runs{{workflow={_label(workflow)},status={_label(status)}}} {count}")
    out += [
        "# TYPE orch_phase_duration_seconds summary",
        "# HELP orch_phase_duration_seconds Time phases took, by workflow and phase.",
    ]
    retries = [
        "# TYPE orch_phase_retries counter",
        "# HELP orch_phase_retries Retries of phases, by workflow and phase.",
    ]
    for workflow, phase, count, seconds, retried in data["phases"]:
        labels = f"workflow={_label(workflow)},phase={_label(phase)}"
        out.append(f"orch_phase_duration_seconds_count{{{labels}}} {count}")
        out.append(f"orch_phase_duration_seconds_sum{{{labels}}} {float(seconds or 0):.6f}")
        retries.append(f"orch_phase_retries_total{{{labels}}} {int(retried or 0)}")
    out += retries
    out += [
        "# TYPE orch_agent_running_phases gauge",
        "# HELP orch_agent_running_phases Phases running now, by agent.",
    ]
    for agent, count in data["agents"]:
        out.append(f"orch_agent_running_phases{{agent={_label(agent)}}} {count}")
    out += [
        "# TYPE orch_queue_length gauge",
        "# HELP orch_queue_length Runs waiting for a slot (--max-runs).",
        f"orch_queue_length {runs.queue_length}",
        "# TYPE orch_runs_started counter",
        "# HELP orch_runs_started Runs this service started since it began.",
        f"orch_runs_started_total {runs.started_total}",
        "# EOF",
    ]
    return "\n".join(out) + "\n"

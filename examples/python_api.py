"""Run a workflow from Python: load_workflow -> compile_plan -> run_sync.

    python examples/python_api.py [WORKFLOW]

Events arrive at the sinks as they happen (here: the phase events are printed);
the RunResult holds the status, every phase's outcome and the outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import orchestrator
from orchestrator import Event

HERE = Path(__file__).parent


def show(event: Event) -> None:
    """An event sink: any callable taking an Event (async ones are awaited)."""
    if event.phase is not None and event.event != "phase_stream":
        print(f"{event.event:16} {event.phase}", file=sys.stderr)


def main(path: str) -> int:
    try:
        workflow = orchestrator.load_workflow(path)  # raises WorkflowInvalid with every problem
    except orchestrator.WorkflowInvalid as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    plan = orchestrator.compile_plan(workflow)
    result = orchestrator.run_sync(plan, inputs={"topic": "tide pools"}, sinks=[show])
    print(json.dumps({"status": result.status, "outputs": result.outputs}, indent=2))
    return 0 if result.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(HERE / "python_api.yaml")))

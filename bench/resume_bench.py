"""What preparing ``orch resume`` of a large stopped run costs, against reading its events once.

Run: ``.venv/bin/python bench/resume_bench.py [--phases N] [--repeat R]``. A chain of
N phases whose first fails (each other one skipped, none completed: all run again) is
run through ``orchestrator.engine.execute`` into a fresh ``state.db``; then
``prepare_resume`` (what ``orch resume`` does before running anything: the run's
phases, what changed, masked outputs, foreach items, loop checkpoints, what each phase
spent) is timed against the baseline, one read of the run's events a page at a time.
Prints both (best of R, CPU seconds) and the ratio; the target is at most 8x: the
events are read once, not once per phase (which was 200x at 10,000 phases).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.agents.registry import AgentRegistry  # noqa: E402
from orchestrator.engine.resume import prepare_resume  # noqa: E402
from orchestrator.engine.runner import execute  # noqa: E402
from orchestrator.plan import compile_plan  # noqa: E402
from orchestrator.spec.model import Phase, Workflow  # noqa: E402
from orchestrator.state.base import each_event  # noqa: E402
from orchestrator.state.sqlite import open_store  # noqa: E402

TARGET = 8.0


def _plan(n: int):
    first = Phase(id="p0", agent="shell", with_={"command": ["false"]})
    rest = tuple(Phase(id=f"p{i}", agent="noop", depends_on=(f"p{i - 1}",)) for i in range(1, n))
    return compile_plan(Workflow(name="bench", phases=(first, *rest)))


def _best(repeat: int, work) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        work()
        times.append(time.process_time() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--strict", action="store_true", help=f"exit 1 when the target ({TARGET:.0f}x) is missed"
    )
    args = parser.parse_args()
    plan = _plan(args.phases)
    registry = AgentRegistry.from_entry_points()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp))

        async def failed_run() -> str:
            result = await execute(plan, registry=registry, sinks=[store.record])
            await store.aclose()
            assert result.status == "failed", result.status
            return result.run_id

        run_id = asyncio.run(failed_run())
        run = store.get_run(run_id)
        events = sum(1 for _ in each_event(store, run_id))
        read = _best(args.repeat, lambda: sum(1 for _ in each_event(store, run_id)))

        def prepare() -> None:
            resume = prepare_resume(store, run, plan, claim=False)
            assert not resume.prior and not resume.finished

        prepared = _best(args.repeat, prepare)
        store.close()
    ratio = prepared / read
    met = ratio <= TARGET
    print(f"a failed chain of {args.phases} phases ({events} events), best of {args.repeat}")
    print(
        f"  read its events once {read:6.3f}s CPU, prepare_resume {prepared:6.3f}s CPU: "
        f"{ratio:.1f}x (target: at most {TARGET:.0f}x: {'met' if met else 'MISSED'})"
    )
    if args.strict and not met:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Per-phase overhead of the durable state store: 10,000 noop phases with the store on and off.

Run: ``.venv/bin/python bench/state_bench.py [--phases N] [--repeat R]``. Each
configuration runs the same plan through ``orchestrator.engine.execute`` in this
process; the store run writes every event to a fresh ``state.db`` (WAL,
synchronous=FULL, group commit). Prints microseconds per phase (best of R) and
the difference, which is what durability costs; the target is at most 70 us.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.agents.registry import AgentRegistry  # noqa: E402
from orchestrator.engine.runner import execute  # noqa: E402
from orchestrator.plan import compile_plan  # noqa: E402
from orchestrator.spec.model import Phase, Workflow  # noqa: E402
from orchestrator.state.sqlite import open_store  # noqa: E402

TARGET_US = 70.0


def _plan(n: int, chain: bool):
    phases = tuple(
        Phase(id=f"p{i}", agent="noop", depends_on=(f"p{i - 1}",) if chain and i else ())
        for i in range(n)
    )
    return compile_plan(Workflow(name="bench", phases=phases))


async def _once(plan, registry, store_dir: Path | None) -> tuple[float, int]:
    store = open_store(store_dir) if store_dir is not None else None
    sinks = [store.record] if store is not None else []
    t0 = time.perf_counter()
    result = await execute(plan, registry=registry, sinks=sinks)
    elapsed = time.perf_counter() - t0
    commits = 0
    if store is not None:
        await store.aclose()
        conn = sqlite3.connect(store.path)
        assert conn.execute("SELECT COUNT(*) FROM phases WHERE state='completed'").fetchone()[
            0
        ] == len(plan.order)
        conn.close()
        commits = store.commits
    assert result.status == "completed", result.error
    return elapsed, commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when the target (70 us/phase) is missed"
    )
    args = parser.parse_args()
    missed = False
    registry = AgentRegistry.from_entry_points()
    print(f"{args.phases} noop phases, best of {args.repeat}")
    for shape, chain in (("independent", False), ("chain", True)):
        n = args.phases if not chain else min(args.phases, 2000)
        plan = _plan(n, chain)
        off, on, commits = [], [], 0
        for _ in range(args.repeat):
            off.append(asyncio.run(_once(plan, registry, None))[0])
            with tempfile.TemporaryDirectory() as tmp:
                elapsed, commits = asyncio.run(_once(plan, registry, Path(tmp)))
                on.append(elapsed)
        us_off = min(off) / n * 1e6
        us_on = min(on) / n * 1e6
        print(
            f"  {shape:<12} {n:>6} phases: store off {us_off:7.1f} us/phase, "
            f"store on {us_on:7.1f} us/phase, overhead {us_on - us_off:6.1f} us/phase "
            f"({commits} commits, {2 * n / max(commits, 1):.1f} events per commit)"
        )
        if not chain:
            target = us_on - us_off <= TARGET_US
            missed = missed or not target
            verdict = "met" if target else "MISSED"
            print(f"  target: at most {TARGET_US:.0f} us/phase overhead: {verdict}")
    if args.strict and missed:
        sys.exit(1)


if __name__ == "__main__":
    main()

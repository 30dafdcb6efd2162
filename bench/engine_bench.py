"""Engine speed: orch's scheduler against a plain asyncio + graphlib loop doing the same work.

    python bench/engine_bench.py [--strict] [--quick]

Per-phase microseconds for 10,000 independent noop phases, a chain of 2,000 and
a 1,000-wide fan-out with fan-in; then makespan against the critical path on a
seeded random layered DAG of 500 phases sleeping 5-50 ms, unlimited and with 8
at a time (critical-path priority against plain FIFO). ``--strict`` exits 1
when a target is missed. Both loops run in this process, taking turns (engine, plain
loop, engine, ...): each figure is the best of ``--quick`` 1 or 7 runs, and the
run-by-run ratios show how much the machine moved meanwhile. Seven, not three: on a
shared VM one run of either loop can take half as long again as the next (measured:
the same engine 18 and 27 us a phase, the plain loop 11 and 18, minutes apart), and
the best of three of each was then often not the machine's speed for both.
"""

from __future__ import annotations

import asyncio
import gc
import graphlib
import random
import sys
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from orchestrator.agents import AgentContext, AgentRegistry
from orchestrator.agents.builtin.testing import NoopAgent, SleepAgent
from orchestrator.engine import RunOptions, execute
from orchestrator.plan import Plan, compile_plan
from orchestrator.spec.model import Phase, Workflow

TARGET_US = 35.0  # per noop phase at 10,000 phases
TARGET_RATIO = 5.0  # engine / plain loop
TARGET_MAKESPAN = 0.02  # within 2% of the bound


def _workflow(deps: Mapping[str, tuple[str, ...]], agent: str, **extra: Any) -> Workflow:
    phases = []
    for pid, d in deps.items():
        kw = extra.get(pid, {})
        phases.append(Phase(id=pid, agent=agent, depends_on=d, **kw))
    return Workflow(name="bench", phases=tuple(phases))


def independent(n: int) -> dict[str, tuple[str, ...]]:
    return {f"p{i}": () for i in range(n)}


def chain(n: int) -> dict[str, tuple[str, ...]]:
    return {f"p{i}": ((f"p{i - 1}",) if i else ()) for i in range(n)}


def fan(n: int) -> dict[str, tuple[str, ...]]:
    deps: dict[str, tuple[str, ...]] = {"root": ()}
    for i in range(n):
        deps[f"p{i}"] = ("root",)
    deps["sink"] = tuple(f"p{i}" for i in range(n))
    return deps


def layered(
    seed: int, n: int = 500, layers: int = 20
) -> tuple[dict[str, tuple[str, ...]], dict[str, float]]:
    rng = random.Random(seed)
    per = n // layers
    deps: dict[str, tuple[str, ...]] = {}
    secs: dict[str, float] = {}
    previous: list[str] = []
    for layer in range(layers):
        current = []
        for j in range(per):
            pid = f"l{layer}_{j}"
            k = min(len(previous), rng.randint(1, 3))
            deps[pid] = tuple(rng.sample(previous, k)) if previous else ()
            secs[pid] = rng.uniform(0.005, 0.050)
            current.append(pid)
        previous = current
    return deps, secs


async def plain_loop(
    deps: Mapping[str, tuple[str, ...]],
    agent: Any,
    inputs: Mapping[str, Mapping[str, Any]] | None = None,
    limit: int | None = None,
) -> None:
    """The baseline: graphlib + one task per phase + asyncio.wait; FIFO when limited."""
    sorter = graphlib.TopologicalSorter(deps)
    sorter.prepare()
    running: dict[asyncio.Task[Any], str] = {}
    ready: deque[str] = deque()
    empty: Mapping[str, Any] = {}
    while True:
        ready.extend(sorter.get_ready())
        while ready and (limit is None or len(running) < limit):
            pid = ready.popleft()
            inp = inputs[pid] if inputs else empty
            task = asyncio.ensure_future(agent.run(inp, AgentContext("bench", pid)))
            running[task] = pid
        if not running:
            break
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            sorter.done(running.pop(task))


def _registry() -> AgentRegistry:
    reg = AgentRegistry()
    reg.register(NoopAgent)
    reg.register(SleepAgent)
    return reg


def _timed(fn: Any) -> tuple[float, float]:
    """Wall time and CPU time of one run (CPU time is steadier on a shared machine: the
    loops are CPU-bound; it counts every thread of the process, the store's writer too)."""
    gc.collect()
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def _best_pair(
    engine: Any, baseline: Any, repeat: int
) -> tuple[tuple[float, float], tuple[float, float], list[float]]:
    """Best (wall, CPU) of ``repeat`` runs of each, the two alternating (engine, baseline,
    engine, ...): a shared machine's speed drifts by tens of percent from one minute to
    the next, and both bests then come from the same minutes. Also the CPU ratio of each
    engine run to the baseline run right after it."""
    best_e = best_b = (float("inf"), float("inf"))
    ratios = []
    for _ in range(repeat):
        e, b = _timed(engine), _timed(baseline)
        best_e = (min(best_e[0], e[0]), min(best_e[1], e[1]))
        best_b = (min(best_b[0], b[0]), min(best_b[1], b[1]))
        ratios.append(e[1] / b[1])
    return best_e, best_b, ratios


def bench_overhead(
    name: str,
    deps: dict[str, tuple[str, ...]],
    repeat: int,
    *,
    sink: bool = False,
    store: bool = False,
) -> tuple[float, float]:
    """Per-phase CPU of the engine and of the plain loop on the same DAG. ``store``: the
    engine records every event in a real SQLite state store (a fresh temp folder)."""
    plan = compile_plan(_workflow(deps, "noop"))
    reg = _registry()
    agent = NoopAgent()

    async def run_engine() -> None:  # returns None like the plain loop: asyncio.run reprs results
        events: list[Any] = []
        sinks: list[Any] = [events.append] if sink else []
        opened = None
        if store:
            import tempfile

            from orchestrator.state.sqlite import open_store

            opened = open_store(tempfile.mkdtemp(prefix="orch-bench-"))
            sinks.insert(0, opened.submit)  # the sink orch run uses (runs.py)
        try:
            result = await execute(plan, registry=reg, sinks=sinks)
        finally:
            if opened is not None:
                await opened.aclose()
        assert result.status == "completed", result.error

    def engine() -> None:
        asyncio.run(run_engine())

    def baseline() -> None:
        asyncio.run(plain_loop(deps, agent))

    n = len(deps)
    best_e, best_b, ratios = _best_pair(engine, baseline, repeat)
    wall_e, cpu_e = (t / n * 1e6 for t in best_e)
    wall_b, cpu_b = (t / n * 1e6 for t in best_b)
    pairs = " ".join(f"{r:.1f}" for r in ratios)
    print(
        f"{name:<28} engine {cpu_e:6.1f} us/phase CPU ({wall_e:6.1f} wall)   "
        f"plain loop {cpu_b:5.1f} us CPU ({wall_b:5.1f} wall)   ratio {cpu_e / cpu_b:4.1f}x"
        f"   (run by run: {pairs})"
    )
    return cpu_e, cpu_b


def critical_path(deps: Mapping[str, tuple[str, ...]], secs: Mapping[str, float]) -> float:
    finish: dict[str, float] = {}
    for pid in graphlib.TopologicalSorter(deps).static_order():
        finish[pid] = secs[pid] + max((finish[d] for d in deps[pid]), default=0.0)
    return max(finish.values())


def bench_makespan(seed: int) -> list[tuple[str, float, float]]:
    """Makespan against the critical path, nominal (the sleeps asked for) and realized (each
    phase's measured start-to-end: asyncio.sleep overshoots by up to a millisecond a hop, which
    no scheduler can win back; the realized bound isolates the scheduler's own delay)."""
    deps, secs = layered(seed)
    extra = {pid: {"with_": {"seconds": s}, "estimated_duration": s} for pid, s in secs.items()}
    plan: Plan = compile_plan(_workflow(deps, "sleep", **extra))
    reg = _registry()
    cp = critical_path(deps, secs)
    work = sum(secs.values())
    rows = []
    inputs = {pid: {"seconds": s} for pid, s in secs.items()}
    for limit in (None, 8):
        bound = cp if limit is None else max(cp, work / limit)
        opts = RunOptions(max_parallel=limit, clock=time.perf_counter)
        result = asyncio.run(execute(plan, registry=reg, options=opts))
        outcomes = result.phases.values()
        started = min(o.started or 0.0 for o in outcomes)
        makespan = max(o.ended or 0.0 for o in outcomes) - started
        real = {o.id: (o.ended or 0.0) - (o.started or 0.0) for o in outcomes}
        real_cp = critical_path(deps, real)
        real_bound = real_cp if limit is None else max(real_cp, sum(real.values()) / limit)
        begin = time.perf_counter()
        asyncio.run(plain_loop(deps, SleepAgent(), inputs, limit))
        fifo = time.perf_counter() - begin
        label = "unlimited" if limit is None else f"max_parallel {limit}"
        print(
            f"DAG 500 {label:<15} bound {bound:5.3f}s  engine {makespan:5.3f}s "
            f"(+{(makespan / bound - 1) * 100:4.1f}% nominal, "
            f"+{(makespan / real_bound - 1) * 100:4.1f}% of realized {real_bound:5.3f}s)  "
            f"plain FIFO {fifo:5.3f}s (+{(fifo / bound - 1) * 100:4.1f}%)"
        )
        rows.append((label, makespan, real_bound))
    print(f"  critical path {cp:.3f}s, total work {work:.3f}s, seed {seed}")
    return rows


def main(argv: list[str]) -> int:
    strict = "--strict" in argv
    repeat = 1 if "--quick" in argv else 7
    print(f"python {sys.version.split()[0]}, best of {repeat}")
    missed: list[str] = []
    t_engine, t_base = bench_overhead("10,000 independent noop", independent(10_000), repeat)
    if t_engine > TARGET_US:
        missed.append(f"noop phase {t_engine:.1f} us > {TARGET_US} us")
    if t_engine > TARGET_RATIO * t_base:
        missed.append(f"noop ratio {t_engine / t_base:.1f}x > {TARGET_RATIO}x")
    bench_overhead("same, events to a list sink", independent(10_000), repeat, sink=True)
    t_store, t_plain = bench_overhead(
        "same, SQLite store attached", independent(10_000), repeat, store=True
    )
    if t_store > 4 * t_plain:
        missed.append(f"noop ratio with the store {t_store / t_plain:.1f}x > 4x")
    bench_overhead("chain of 2,000", chain(2_000), repeat)
    bench_overhead("fan-out 1,000 + fan-in", fan(1_000), repeat)
    for label, took, bound in bench_makespan(seed=7):
        if took > bound * (1 + TARGET_MAKESPAN):
            missed.append(f"makespan {label}: {took:.3f}s > realized bound {bound:.3f}s + 2%")
    for line in missed:
        print("MISSED:", line)
    return 1 if (strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""orch on Dask: one graph run locally, with `--executor dask` and with plain client.submit.

    python bench/dask_bench.py [--strict] [--quick] [--runs N]

One LocalCluster of 2 worker processes serves both Dask columns, in one run:
10,000 independent noop phases, a 1,000-wide fan-out with fan-in, the seeded
500-phase layered DAG of 5-50 ms sleeps, and 200 CPU-bound python phases of
about 50 ms each. For each: the makespan locally (the orch engine in this
process), with orch on Dask, and with the same graph submitted to Dask directly
(``client.submit``, dependencies as futures); per-phase overhead in ms for the
noop graphs; and the ratios. Targets: orch on Dask adds at most 1.5x the
per-task overhead of plain ``client.submit``; the CPU-bound phases finish in
about half the local time (2 workers, 2 cores). ``--strict`` exits 1 when one
is missed. ``--quick`` runs smaller graphs. ``--runs N`` measures each workload
N times (the three columns in turn) and shows the medians, then the spread
(lowest-highest) of each ratio: on a shared machine one run says little. The
``submit/local`` column is what Dask itself achieved at that moment: the bound
for ``dask/local`` on a machine whose cores other processes also use. ``CPU
orch/submit`` compares the CPU seconds both Dask columns cost (this process,
which hosts the local cluster's scheduler, plus the workers): unlike makespans,
other processes on the machine do not change it.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]  # `bench.dask_bench:spin` imports on the workers too

from bench.engine_bench import fan, independent, layered  # noqa: E402
from orchestrator.agents import AgentRegistry  # noqa: E402
from orchestrator.engine import RunOptions, execute  # noqa: E402
from orchestrator.engine.dask_executor import ExecutorChoice, open_executor  # noqa: E402
from orchestrator.plan import compile_plan  # noqa: E402
from orchestrator.spec.model import Phase, Workflow  # noqa: E402

TARGET_OVERHEAD = 1.5  # orch-on-dask overhead per task / plain client.submit's
TARGET_CPU = 0.65  # dask / local makespan for CPU-bound phases ("about half")
CPU_MS = 50.0


def spin(n: int) -> int:
    """CPU-bound work: ``n`` rounds of integer arithmetic (holds the GIL throughout)."""
    x = 0
    for i in range(n):
        x = (x * 31 + i) % 1_000_003
    return x


def _calibrate(ms: float) -> int:
    """Rounds of ``spin`` that take ``ms`` of CPU time (not wall time: on a busy machine
    the wall clock counts the time other processes had the core)."""
    n = 200_000
    while True:
        start = time.thread_time()
        spin(n)
        took = time.thread_time() - start
        if took > 0.02:
            return max(1, int(n * ms / 1000 / took))
        n *= 2


def _noop(*_: Any) -> None:
    return None


def _sleep(seconds: float, *_: Any) -> None:
    time.sleep(seconds)


def _spin(n: int, *_: Any) -> int:
    return spin(n)


Graph = Mapping[str, tuple[str, ...]]


def _plan(deps: Graph, agent: str, withs: Mapping[str, Mapping[str, Any]]) -> Any:
    phases = tuple(
        Phase(id=p, agent=agent, depends_on=d, with_=dict(withs.get(p, {})))
        for p, d in deps.items()
    )
    return compile_plan(Workflow(name="bench", phases=phases))


async def _orch(plan: Any, registry: AgentRegistry, executor: Any) -> float:
    start = time.perf_counter()
    result = await execute(plan, registry=registry, options=RunOptions(executor=executor))
    took = time.perf_counter() - start
    assert result.status == "completed", result.error
    return took


async def _plain(
    client: Any, deps: Graph, fn: Callable[..., Any], args: Mapping[str, tuple]
) -> float:
    """The same graph submitted to Dask directly: one task per phase, deps as futures."""
    import graphlib

    start = time.perf_counter()
    futures: dict[str, Any] = {}
    for pid in graphlib.TopologicalSorter(deps).static_order():
        futures[pid] = client.submit(
            fn, *args.get(pid, ()), *(futures[d] for d in deps[pid]), key=f"plain-{pid}-{start}"
        )
    await client.gather(list(futures.values()))
    took = time.perf_counter() - start
    for f in futures.values():
        f.release()
    return took


def _cpu_seconds() -> float:
    return time.process_time()


async def _cpu(client: Any) -> float:
    """CPU seconds used so far by this process (orch, the client and the local cluster's
    scheduler) and by every worker: what a measurement cost, whatever else the machine runs."""
    workers = await client.run(_cpu_seconds)
    return time.process_time() + sum(workers.values())


# name, local, ours, plain (makespans), ours, plain (CPU seconds), phases
Row = tuple[str, list[float], list[float], list[float], list[float], list[float], int]


async def bench(quick: bool, runs: int = 1) -> tuple[list[Row], int]:
    registry = AgentRegistry.from_entry_points()
    executor = await open_executor(ExecutorChoice(workers=2))
    client = executor.client
    try:
        await client.submit(_noop, pure=False)  # warm the workers (imports, first task)
        n_noop, n_fan, n_layer, n_cpu = (1000, 200, 100, 40) if quick else (10_000, 1000, 500, 200)
        rows: list[Row] = []

        deps, secs = layered(7, n_layer)
        rounds = _calibrate(CPU_MS)
        cpu = independent(n_cpu)
        call = {"function": "bench.dask_bench:spin", "kwargs": {"n": rounds}}
        # name, graph, agent, each phase's `with`, the plain task function, its arguments
        workloads: list[tuple[str, Graph, str, Mapping[str, Any], Callable[..., Any], Any]] = [
            (f"{n_noop} noop phases", independent(n_noop), "noop", {}, _noop, {}),
            (f"{n_fan}-wide fan-out", fan(n_fan), "noop", {}, _noop, {}),
            (
                f"layered DAG of {len(deps)}, 5-50 ms",
                deps,
                "sleep",
                {p: {"seconds": s} for p, s in secs.items()},
                _sleep,
                {p: (s,) for p, s in secs.items()},
            ),
            (
                f"{n_cpu} CPU-bound python, ~{CPU_MS:.0f} ms",
                cpu,
                "python",
                dict.fromkeys(cpu, call),
                _spin,
                dict.fromkeys(cpu, (rounds,)),
            ),
        ]
        for name, graph, agent, withs, fn, args in workloads:
            plan = _plan(graph, agent, withs)
            row: Row = (name, [], [], [], [], [], len(graph))
            for _ in range(runs):
                local = await _orch(plan, registry, None)
                cpu_start = await _cpu(client)
                ours = await _orch(plan, registry, executor)
                cpu_ours = await _cpu(client)
                plain = await _plain(client, graph, fn, args)
                cpu_plain = await _cpu(client)
                measured = (local, ours, plain, cpu_ours - cpu_start, cpu_plain - cpu_ours)
                for column, value in zip(row[1:6], measured, strict=True):
                    column.append(value)
                print(
                    f"{name}: local {local:.2f}s, orch+dask {ours:.2f}s, submit {plain:.2f}s"
                    f" (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
            rows.append(row)
        return rows, rounds
    finally:
        await executor.aclose()


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    runs = int(argv[argv.index("--runs") + 1]) if "--runs" in argv else 1
    rows, rounds = asyncio.run(bench(quick, runs))
    median = statistics.median
    print(
        f"2 Dask worker processes, {os.cpu_count()} cores; makespans in seconds"
        + (f", medians of {runs} runs" if runs > 1 else "")
    )
    print(
        f"{'workload':34} {'local':>7} {'orch+dask':>9} {'submit':>7} {'dask/local':>10} "
        f"{'submit/local':>12} {'orch/submit':>11} {'ms/phase orch+dask':>18} "
        f"{'ms/task submit':>14} {'CPU orch/submit':>15}"
    )
    missed = []
    spreads = []
    for name, locals_, ourses, plains, cpu_ourses, cpu_plains, n in rows:
        local, ours, plain = median(locals_), median(ourses), median(plains)
        cpu = median(o / p for o, p in zip(cpu_ourses, cpu_plains, strict=True))
        print(
            f"{name:34} {local:7.2f} {ours:9.2f} {plain:7.2f} {ours / local:10.2f} "
            f"{plain / local:12.2f} {ours / plain:11.2f} {ours / n * 1000:18.3f} "
            f"{plain / n * 1000:14.3f} {cpu:15.2f}"
        )
        ratios = list(zip(locals_, ourses, plains, strict=True))
        spreads.append(
            f"{name:34} dask/local {_spread([o / lo for lo, o, _ in ratios])}, "
            f"submit/local {_spread([p / lo for lo, _, p in ratios])}, "
            f"orch/submit {_spread([o / p for _, o, p in ratios])}, CPU orch/submit "
            f"{_spread([o / p for o, p in zip(cpu_ourses, cpu_plains, strict=True)])}"
        )
        if ("noop" in name or "fan-out" in name) and ours / plain > TARGET_OVERHEAD:
            missed.append(
                f"{name}: orch on Dask {ours / plain:.2f}x plain submit (target {TARGET_OVERHEAD}x)"
            )
        if "CPU" in name and ours / local > TARGET_CPU:
            missed.append(f"{name}: Dask {ours / local:.2f}x the local time (target {TARGET_CPU}x)")
    if runs > 1:
        print(f"spread (lowest-highest) over {runs} runs:")
        print("\n".join(spreads))
    for line in missed:
        print("missed: " + line)
    return 1 if missed and "--strict" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

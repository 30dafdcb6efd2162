"""``orch stats`` on a store of 10,000 runs: how long compute_stats takes.

Run: ``.venv/bin/python bench/stats_bench.py [--runs N] [--repeat R] [--strict]``.
Fills a fresh store with N runs of a 5-phase workflow (retries, a failure in
one run of ten, cache hits, token counts and costs, a breaker now and then) through the store's own
writer, then times ``compute_stats`` (best of R) against a baseline in the same
process: reading every run's row (``list_runs()``, what ``orch runs`` does
without a limit). Prints both in ms and their ratio; the target is a ratio of at
most 10 (stats reads every phase of every run, and each phase's agent).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator import events as ev  # noqa: E402
from orchestrator.state.sqlite import open_store  # noqa: E402
from orchestrator.state.stats import compute_stats  # noqa: E402

TARGET_RATIO = 10.0
PHASES = ("fetch", "analyze", "enrich", "report", "notify")


def _run_events(i: int, rng: random.Random) -> list[ev.Event]:
    run, t = f"run-{i:06d}", 1_700_000_000.0 + i * 60
    out = [
        ev.workflow_started(
            run,
            t,
            workflow=f"wf{i % 3}",
            path="wf.yaml",
            source_hash="x",
            phases=PHASES,
            fingerprints={},
            inputs={},
            pid=1,
        )
    ]
    failed = i % 10 == 0
    for n, pid in enumerate(PHASES):
        t += 0.01
        out.append(ev.phase_started(run, t, pid, 1, agent="llm" if n % 2 else "http"))
        attempts = 1
        if rng.random() < 0.2:
            out.append(ev.phase_retry(run, t + 0.1, pid, 1, error="busy", delay=0.1))
            if i % 50 == 0:  # now and then the failure opens the agent's circuit breaker
                out.append(
                    ev.breaker_opened(
                        run, t + 0.1, pid, 1, agent="http", failures=1, reset_after=60, error="busy"
                    )
                )
            out.append(ev.phase_started(run, t + 0.2, pid, 2, agent="llm" if n % 2 else "http"))
            attempts = 2
        t += rng.uniform(0.05, 2.0)
        if failed and pid == "report":
            out.append(
                ev.phase_failed(
                    run, t, pid, attempts, error="boom", duration=1.0, attempts=attempts
                )
            )
            break
        meta = {"tokens": {"prompt": 100, "completion": 50, "total": 150}, "cost": 0.0012}
        out.append(
            ev.phase_completed(
                run,
                t,
                pid,
                attempts,
                output={"n": i},
                duration=1.0,
                attempts=attempts,
                cached=rng.random() < 0.1,
                metadata=meta if n % 2 else {},
            )
        )
    out.append(
        ev.workflow_ended(
            run,
            t + 0.01,
            "failed" if failed else "completed",
            outputs={},
            duration=t - 1_700_000_000.0,
            error=None,
            counts={},
        )
    )
    return out


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args(argv)
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp))
        t0 = time.perf_counter()
        batch: list[ev.Event] = []
        for i in range(args.runs):
            batch += _run_events(i, rng)
            if len(batch) > 5000:
                store.append(batch)
                batch = []
        store.append(batch)
        print(f"filled {args.runs} runs in {time.perf_counter() - t0:.1f}s")
        stats = compute_stats(store)
        assert sum(w.runs for w in stats.workflows) == args.runs
        base = _best(lambda: store.list_runs(), args.repeat)
        took = _best(lambda: compute_stats(store), args.repeat)
        week = _best(
            lambda: compute_stats(store, since=1_700_000_000.0 + args.runs * 60 - 86400),
            args.repeat,
        )
        store.close()
    ratio = took / base
    print(f"list_runs (baseline): {base * 1000:.0f} ms")
    print(
        f"compute_stats, all {args.runs} runs: {took * 1000:.0f} ms (ratio {ratio:.1f}, "
        f"target <= {TARGET_RATIO:.0f})"
    )
    print(f"compute_stats --since 1d ({min(args.runs, 24 * 60)} runs): {week * 1000:.0f} ms")
    if args.strict and ratio > TARGET_RATIO:
        print("missed the target")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Bench: start-up of whole `orch` processes as a ratio of `python -c pass`, in one run.

    python bench/startup_bench.py [--runs N] [--strict]

Runs each command ``N`` times, interleaved (so a busy moment of a shared machine
hits every command alike), and prints for each its best and median time with their
ratios to the baseline, the same interpreter starting and doing nothing, and the
spread of the per-round ratios (10th-90th percentile; each round's time divided by
that round's baseline). The verdict is on the median ratio. Targets
(issue 13): ``orch --help`` at most 5x, ``orch validate workflows/demo.yaml`` at
most 10x (a pre-commit hook runs it on every commit), ``orch --version`` at most 5x
(answered without typer or importlib.metadata). Exit 1 on a miss only with ``--strict``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "workflows" / "demo.yaml"


def commands() -> dict[str, tuple[list[str], float | None]]:
    """Label -> (argv, target ratio or None) for the baseline and each measured command."""
    orch = shutil.which("orch", path=str(Path(sys.executable).parent)) or "orch"
    return {
        "python -c pass": ([sys.executable, "-c", "pass"], None),
        "orch --help": ([orch, "--help"], 5.0),
        "orch validate workflows/demo.yaml": ([orch, "validate", str(DEMO)], 10.0),
        "orch --version": ([orch, "--version"], 5.0),
        "orch schema": ([orch, "schema"], None),
    }


def measure(argvs: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    """Wall times (seconds) of each argv over ``runs`` interleaved rounds, in round order.

    Byte-code caching is on, as for a user (pip compiles an installed package; a
    checkout writes __pycache__ on its first run): PYTHONDONTWRITEBYTECODE is dropped
    and a first, unmeasured round warms the cache.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times: dict[str, list[float]] = {label: [] for label in argvs}
    for argv in argvs.values():
        subprocess.run(argv, capture_output=True, cwd=ROOT, env=env)
    for _ in range(runs):
        for label, argv in argvs.items():
            start = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, cwd=ROOT, env=env)
            took = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(
                    f"{label} exited {done.returncode}:\n{done.stderr.decode()[-2000:]}"
                )
            times[label].append(took)
    return times


def _percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linearly interpolated."""
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print one line per command with its ratios and verdict; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="interleaved rounds")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    table = commands()
    times = measure({label: a for label, (a, _) in table.items()}, max(1, args.runs))
    base = times["python -c pass"]
    missed = 0
    print(
        f"{'command':<36} {'best':>8} {'ratio':>6} {'median':>8} {'ratio':>6}"
        f"  {'spread (p10-p90)':<16}  target"
    )
    for label, (_, target) in table.items():
        mine = times[label]
        rounds = [t / b for t, b in zip(mine, base, strict=True)]
        best = min(mine) / min(base)
        median = statistics.median(mine) / statistics.median(base)
        spread = f"{_percentile(rounds, 0.1):.1f}-{_percentile(rounds, 0.9):.1f}x"
        verdict = ""
        if target is not None:
            ok = median <= target
            missed += not ok
            verdict = f"{'ok' if ok else 'MISSED'} (<= {target:g}x)"
        print(
            f"{label:<36} {min(mine) * 1000:6.1f}ms {best:5.1f}x"
            f" {statistics.median(mine) * 1000:6.1f}ms {median:5.1f}x  {spread:<16}  {verdict}"
        )
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())

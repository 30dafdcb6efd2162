"""Bench: start-up of whole `orch` processes as a ratio of `python -c pass`, in one run.

    python bench/startup_bench.py [--runs N] [--strict]

Runs each command ``N`` times, interleaved (so a busy moment of a shared machine
hits every command alike), keeps the best time of each and prints it with its
ratio to the baseline, the same interpreter starting and doing nothing. Targets
(issue 13): ``orch --help`` at most 5x, ``orch validate workflows/demo.yaml`` at
most 10x (a pre-commit hook runs it on every commit). Exit 1 on a miss only with
``--strict``.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
        "orch --version": ([orch, "--version"], None),
        "orch schema": ([orch, "schema"], None),
    }


def measure(argvs: dict[str, list[str]], runs: int) -> dict[str, float]:
    """Best wall time (seconds) of each argv over ``runs`` interleaved rounds.

    Byte-code caching is on, as for a user (pip compiles an installed package; a
    checkout writes __pycache__ on its first run): PYTHONDONTWRITEBYTECODE is dropped
    and a first, unmeasured round warms the cache.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    best = dict.fromkeys(argvs, float("inf"))
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
            best[label] = min(best[label], took)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print one line per command with its ratio and verdict; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="rounds (the best time is kept)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    table = commands()
    best = measure({label: a for label, (a, _) in table.items()}, max(1, args.runs))
    base = best["python -c pass"]
    missed = 0
    print(f"{'command':<36} {'best':>8} {'ratio':>7}  target")
    for label, (_, target) in table.items():
        ratio = best[label] / base
        verdict = ""
        if target is not None:
            ok = ratio <= target
            missed += not ok
            verdict = f"{'ok' if ok else 'MISSED'} (<= {target:g}x)"
        print(f"{label:<36} {best[label] * 1000:6.1f}ms {ratio:6.1f}x  {verdict}")
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())

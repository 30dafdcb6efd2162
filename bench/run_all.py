"""Run every bench script in bench/ (``*_bench.py``), one process each, and report how each ended.

    python bench/run_all.py [--strict]

``--strict`` is passed on to each script (exit 1 on a missed target). The exit
code is 1 when any script failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    """Run the scripts in name order; return 1 if any of them failed."""
    scripts = sorted(HERE.glob("*_bench.py"))
    failed: list[str] = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        start = time.perf_counter()
        code = subprocess.run([sys.executable, str(script), *argv], cwd=HERE.parent).returncode
        took = time.perf_counter() - start
        print(f"== {script.name}: {'ok' if code == 0 else f'exit {code}'} in {took:.1f}s\n")
        if code != 0:
            failed.append(script.name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

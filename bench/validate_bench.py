"""Bench: validate + compile of generated 1,000 and 10,000-phase workflows, and `orch --help`.

Times whole processes (`orch validate`, `orch graph --format json`, `orch --help`,
best of N) and, separately, load_workflow and compile_plan in this process. Prints
the figures and compares them with the targets of issue 2: 10,000 phases validated
in under 2 s, `orch --help` under 150 ms. Exit 1 on a miss only with ``--strict``
(shared, noisy machines make a single miss weak evidence).

    python bench/validate_bench.py [--runs N] [--strict]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

TARGETS = {"validate 10000 (process)": 2.0, "orch --help (process)": 0.150}


def generate(shape: str, count: int) -> str:
    """Workflow text with ``count`` phases: ``chain`` (each needs the previous one)
    or ``fanout`` (a root, then groups of 100 parallel phases each joined by one phase
    that the next group waits for). One phase in three reads an upstream output, so
    implied dependencies and template checks are exercised too."""
    lines = [
        "# yaml-language-server: $schema=../schemas/workflow.schema.json",
        "version: 1",
        f"name: bench-{shape}-{count}",
        "defaults:",
        "  timeout: 30s",
        "phases:",
    ]
    previous = None
    join = None
    for i in range(count):
        pid = f"p{i:05d}"
        lines += [f"  - id: {pid}", "    agent: echo"]
        deps: list[str] = []
        if shape == "chain" and previous is not None:
            deps = [previous]
        elif shape == "fanout" and i > 0:
            if i % 100 == 0:
                deps = [f"p{j:05d}" for j in range(max(1, i - 99), i)]
            else:
                deps = [join or "p00000"]
        if deps:
            lines.append(f"    depends_on: [{', '.join(deps)}]")
        if deps and i % 3 == 0:
            lines.append(f'    with: {{text: "after {{{{ phases.{deps[0]}.output }}}}"}}')
        else:
            lines.append(f"    with: {{text: phase {i}}}")
        if i % 7 == 0:
            lines.append("    estimated_duration: 2")
        if shape == "fanout" and i % 100 == 0:
            join = pid
        previous = pid
    return "\n".join(lines) + "\n"


def best_of(runs: int, action: Callable[[], object]) -> float:
    """The fastest of ``runs`` timed calls, in seconds."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def process(argv: Sequence[str], ok: Sequence[int] = (0,)) -> Callable[[], object]:
    """A callable that runs ``argv`` and fails loudly on an unexpected exit code."""

    def run() -> None:
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode not in ok:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")

    return run


def in_process(path: Path, runs: int) -> tuple[float, float]:
    """Best load_workflow and best compile_plan times in this interpreter (imports warm)."""
    from orchestrator import compile_plan, load_workflow

    workflow = load_workflow(path)
    return (
        best_of(runs, lambda: load_workflow(path)),
        best_of(runs, lambda: compile_plan(workflow)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench and print one line per figure; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (best is kept)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    orch = shutil.which("orch", path=str(Path(sys.executable).parent)) or "orch"
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        files: dict[str, Path] = {}
        for shape in ("chain", "fanout"):
            for count in (1_000, 10_000):
                path = Path(tmp) / f"{shape}-{count}.yaml"
                path.write_text(generate(shape, count))
                files[f"{shape} {count}"] = path

        figures["orch --help (process)"] = best_of(args.runs * 2, process([orch, "--help"]))
        for label, path in files.items():
            count = label.split()[1]
            runs = args.runs if count == "1000" else max(2, args.runs // 2)
            figures[f"validate {label} (process)"] = best_of(
                runs, process([orch, "validate", str(path)])
            )
            figures[f"graph json {label} (process)"] = best_of(
                runs, process([orch, "graph", str(path), "--format", "json"])
            )
            load, compile_ = in_process(path, runs)
            figures[f"load {label} (in-process)"] = load
            figures[f"compile {label} (in-process)"] = compile_
        figures["graph ascii chain 1000 (process)"] = best_of(
            args.runs, process([orch, "graph", str(files["chain 1000"])])
        )

    # The target "10,000 phases validated in under 2 s" holds for every shape: take the worst.
    figures["validate 10000 (process)"] = max(
        v for k, v in figures.items() if k.startswith("validate") and "10000" in k
    )
    missed = 0
    print(f"{'figure':<44} {'best':>9}  target")
    for name, seconds in figures.items():
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            ok = seconds <= target
            missed += not ok
            verdict = f"{'ok' if ok else 'MISSED'} (< {target * 1000:.0f} ms)"
        print(f"{name:<44} {seconds * 1000:7.0f} ms  {verdict}")
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())

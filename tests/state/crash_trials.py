"""Crash trials (reliability.md D1 and D2): kill `orch run` at random moments, resume, check.

As a script: ``.venv/bin/python tests/state/crash_trials.py --trials 50 [--seed 1]``
runs D1 trials on a 200-phase workflow and prints the counts. The test suite
runs a few of the same trials (tests/state/test_crash.py).

Each phase appends ``run phase attempt`` to a ledger file when it starts (the
testing agents' ``ledger`` key, O_APPEND + fsync), so executions can be counted.
A trial kills the process (SIGKILL) once the ledger holds a random number of
lines, notes which phases the store had recorded as completed, resumes, maybe
kills again, and finally resumes to the end. It then checks:

* no phase recorded as completed before a kill was executed after it;
* every phase ran, and the run completed with the outputs of a crash-free run;
* ``PRAGMA integrity_check`` is ``ok`` after every kill.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ORCH = [sys.executable, "-m", "orchestrator"]


def workflow_text(ledger: Path, phases: int = 200, width: int = 10, seed: int = 7) -> str:
    """A DAG of ``width`` chains; each phase sleeps 5-25 ms and outputs its own name."""
    rnd = random.Random(seed)
    lines = [
        "name: crash-trial",
        "max_parallel: 8",
        "phases:",
    ]
    for i in range(phases):
        deps = f", depends_on: [p{i - width}]" if i >= width else ""
        secs = rnd.choice([0.005, 0.01, 0.015, 0.02, 0.025])
        lines.append(
            f"  - {{id: p{i}, agent: sleep{deps}, "
            f'with: {{seconds: {secs}, output: "out-{i}", ledger: "{ledger}"}}}}'
        )
    last = ", ".join(f"phases.p{i}.output" for i in range(phases - width, phases))
    lines += ["outputs:", f"  last: \"{{{{ [{last}] | join(',') }}}}\""]
    return "\n".join(lines) + "\n"


def ledger_lines(ledger: Path) -> list[tuple[str, str, int]]:
    """The ledger as (run, phase, attempt) tuples; a torn last line is ignored."""
    if not ledger.exists():
        return []
    out = []
    for line in ledger.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            out.append((parts[0], parts[1], int(parts[2])))
    return out


def _kill_when(proc: subprocess.Popen[bytes], ledger: Path, lines: int, timeout: float) -> bool:
    """SIGKILL ``proc`` once the ledger has ``lines`` lines; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ledger.exists() and ledger.stat().st_size and len(ledger_lines(ledger)) >= lines:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.003)
    proc.kill()
    proc.wait()
    raise AssertionError(f"no progress within {timeout}s")


@dataclass
class TrialResult:
    """What one trial saw."""

    kills: int = 0
    reran_completed: list[str] = field(default_factory=list)
    repeated_in_flight: int = 0
    status: str = ""
    outputs: object = None
    phase_outputs: dict[str, object] = field(default_factory=dict)
    integrity: list[str] = field(default_factory=list)


def _store_view(state: Path) -> tuple[str | None, set[str], str]:
    from orchestrator.state.base import PhaseState
    from orchestrator.state.sqlite import open_store

    store = open_store(state)
    try:
        runs = store.list_runs()
        if not runs:
            return None, set(), store.integrity_check()
        run = runs[0]
        done = {p.id for p in store.phases(run.id) if p.state is PhaseState.COMPLETED}
        return run.id, done, store.integrity_check()
    finally:
        store.close()


def run_trial(
    folder: Path, *, seed: int, kills: int = 1, phases: int = 200, timeout: float = 60.0
) -> TrialResult:
    """One D1 trial in ``folder``: run, kill ``kills`` times at random progress, then finish."""
    rnd = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ledger = folder / "ledger"
    state = folder / "state"
    wf = folder / "wf.yaml"
    wf.write_text(workflow_text(ledger, phases))
    env = {**os.environ, "ORCH_STATE_DIR": str(state)}
    result = TrialResult()
    run_id: str | None = None
    for attempt in range(kills + 1):
        before = len(ledger_lines(ledger))
        run_id_now, completed, _ = _store_view(state)
        run_id = run_id or run_id_now
        cmd = [*ORCH, "resume", run_id] if run_id else [*ORCH, "run", str(wf)]
        with open(folder / f"stderr-{attempt}.txt", "wb") as err:  # kept for post-mortems
            proc = subprocess.Popen(cmd, env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=err)
        if attempt < kills:
            target = before + rnd.randint(1, max(1, phases - len(completed) - 1))
            killed = _kill_when(proc, ledger, target, timeout)
            result.kills += killed
        else:
            proc.wait(timeout=timeout)
        after = ledger_lines(ledger)[before:]
        executed = [phase for _, phase, _ in after]
        result.reran_completed += sorted(set(executed) & completed)
        _, _, integrity = _store_view(state)
        result.integrity.append(integrity)
    from orchestrator.state.sqlite import open_store

    store = open_store(state)
    try:
        run = store.list_runs()[0]
        result.status = run.status
        result.outputs = run.outputs
        result.phase_outputs = {p.id: p.output for p in store.phases(run.id)}
    finally:
        store.close()
    counts: dict[str, int] = {}
    for _, phase, _ in ledger_lines(ledger):
        counts[phase] = counts.get(phase, 0) + 1
    result.repeated_in_flight = sum(n - 1 for n in counts.values())
    missing = [f"p{i}" for i in range(phases) if f"p{i}" not in counts]
    assert not missing, f"phases never executed: {missing[:5]}"
    return result


def reference_outputs(phases: int = 200) -> tuple[object, dict[str, object]]:
    """The run outputs and phase outputs of a crash-free run (known from the workflow)."""
    width = 10
    last = ",".join(f"out-{i}" for i in range(phases - width, phases))
    return {"last": last}, {f"p{i}": f"out-{i}" for i in range(phases)}


def main() -> None:
    parser = argparse.ArgumentParser(description="D1 crash trials: kill -9 and resume")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--kills", type=int, default=2, help="kills per trial")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    import tempfile

    base = args.dir or Path(tempfile.mkdtemp(prefix="orch-crash-"))
    want_outputs, want_phases = reference_outputs()
    totals = {"trials": 0, "kills": 0, "reran_completed": 0, "repeated_in_flight": 0, "bad": 0}
    for t in range(args.trials):
        res = run_trial(base / f"t{t}", seed=args.seed * 1000 + t, kills=args.kills)
        ok = (
            res.status == "completed"
            and res.outputs == want_outputs
            and res.phase_outputs == want_phases
            and all(i == "ok" for i in res.integrity)
            and not res.reran_completed
        )
        totals["trials"] += 1
        totals["kills"] += res.kills
        totals["reran_completed"] += len(res.reran_completed)
        totals["repeated_in_flight"] += res.repeated_in_flight
        totals["bad"] += not ok
        print(
            f"trial {t}: kills {res.kills}, completed phases re-run {len(res.reran_completed)},"
            f" in-flight repeats {res.repeated_in_flight}, status {res.status},"
            f" outputs {'equal' if res.outputs == want_outputs else 'DIFFERENT'},"
            f" integrity {set(res.integrity)}",
            flush=True,
        )
    print(totals)
    sys.exit(1 if totals["bad"] else 0)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()

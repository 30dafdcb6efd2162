"""Crash safety: kill -9 at random moments (D1) and a crash at every store boundary (D2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from crash_trials import ledger_lines, reference_outputs, run_trial
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.state.base import PhaseState
from orchestrator.state.sqlite import open_store

PHASES = 10
SEQUENTIAL = (
    "name: ten\nmode: sequential\nphases:\n"
    + "".join(
        f'  - {{id: p{i}, agent: echo, with: {{text: "v{i}", ledger: "LEDGER"}}}}\n'
        for i in range(PHASES)
    )
    + 'outputs:\n  last: "{{ phases.p9.output }}"\n'
)


def _start(args, env_extra=None):
    """Start the real `orch` CLI in a child process (forked when that is safe: fast)."""
    env_extra = env_extra or {}
    if threading.active_count() > 1 or not hasattr(os, "fork"):
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *args],
            env={**os.environ, **env_extra},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    pid = os.fork()
    if pid == 0:  # the child: the same CLI code a user runs, without the start-up cost
        code = 70
        try:
            os.environ.update(env_extra)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            try:
                app(args, prog_name="orch")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        finally:
            os._exit(code)
    return pid


#: Seconds a child may take before the test fails: a bound on a hang, not a timing.
BOUND = 120.0


def _exit_code(child) -> int:
    """Wait for a child from _start; its exit code (137 when it crashed). A child still
    running after BOUND seconds is killed and the test fails (it never hangs)."""
    if isinstance(child, subprocess.Popen):
        try:
            return child.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise AssertionError(f"orch (pid {child.pid}) still ran after {BOUND:g}s") from None
    deadline = time.monotonic() + BOUND
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            raise AssertionError(f"orch (pid {child}) still ran after {BOUND:g}s")
        time.sleep(0.01)


def _orch(args, env_extra=None) -> int:
    """Run the real `orch` CLI in a child process; its exit code."""
    return _exit_code(_start(args, env_extra))


def _view(state):
    store = open_store(state)
    try:
        runs = store.list_runs()
        if not runs:
            return None, set(), store.integrity_check()
        done = {p.id for p in store.phases(runs[0].id) if p.state is PhaseState.COMPLETED}
        return runs[0].id, done, store.integrity_check()
    finally:
        store.close()


def test_d2_a_crash_at_every_store_boundary_then_resume(tmp_path):
    # Import everything a run needs once in this process, so forked children start fast.
    warm = tmp_path / "warm.yaml"
    warm.write_text(SEQUENTIAL.replace("LEDGER", str(tmp_path / "warm-ledger")))
    assert (
        CliRunner().invoke(app, ["run", str(warm), "--state-dir", str(tmp_path / "w")]).exit_code
        == 0
    )
    crashed = 0
    batch = 3  # crash points tried at once (independent state folders)
    for first in range(1, 200, batch):
        trials = []
        for k in range(first, first + batch):
            folder = tmp_path / f"k{k}"
            folder.mkdir()
            wf = folder / "wf.yaml"
            wf.write_text(SEQUENTIAL.replace("LEDGER", str(folder / "ledger")))
            cmd = ["run", str(wf), "--state-dir", str(folder / "state")]
            trials.append((k, folder, wf, _start(cmd, {"ORCH_CRASH_AT": str(k)})))
        codes = {k: _exit_code(child) for k, _, _, child in trials}
        resumed = []
        for k, folder, wf, _ in trials:
            if codes[k] == 0:  # the run had fewer than k boundaries
                continue
            assert codes[k] == 137, f"boundary {k}: exit {codes[k]}"
            crashed = k
            state = str(folder / "state")
            run_id, completed, integrity = _view(state)
            assert integrity == "ok"
            before = len(ledger_lines(folder / "ledger"))
            if run_id is None:  # died before the run was recorded: nothing to resume
                assert before == 0
                child = _start(["run", str(wf), "--state-dir", state])
            else:
                child = _start(["resume", run_id, "--state-dir", state])
            resumed.append((k, folder, completed, before, child))
        for k, folder, completed, before, child in resumed:
            assert _exit_code(child) == 0, f"boundary {k}"
            executed = ledger_lines(folder / "ledger")
            again = [phase for _, phase, _ in executed[before:]]
            assert not set(again) & completed, f"boundary {k}: completed phases ran again"
            counts = {}
            for _, phase, _ in executed:
                counts[phase] = counts.get(phase, 0) + 1
            assert sorted(counts) == sorted(f"p{i}" for i in range(PHASES))
            assert sum(counts.values()) <= PHASES + 1, f"boundary {k}: {counts}"  # 1 in flight
            store = open_store(folder / "state")
            run = store.list_runs()[0]
            assert (run.status, run.outputs) == ("completed", {"last": "v9"})
            assert [p.output for p in store.phases(run.id)] == [f"v{i}" for i in range(PHASES)]
            store.close()
        if all(code == 0 for code in codes.values()):
            break
    # Each awaited event (workflow_started, 10 phase_started, workflow_completed) ends a
    # transaction of its own (completions ride along), with a boundary before and after
    # each commit: every one of them was crashed at, and resumed from.
    assert crashed >= 2 * (1 + PHASES + 1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_d1_kill_9_at_a_random_moment_then_resume(tmp_path, seed):
    res = run_trial(tmp_path, seed=seed, kills=1)
    want_outputs, want_phases = reference_outputs()
    assert res.kills == 1
    assert res.reran_completed == []
    assert res.repeated_in_flight <= 8  # at most the phases in flight (max_parallel 8), once
    assert res.integrity == ["ok", "ok"]
    assert (res.status, res.outputs) == ("completed", want_outputs)
    assert res.phase_outputs == want_phases

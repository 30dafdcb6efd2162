"""`orch cancel` reaches a run, never the process hosting it (a program using the Python
API, `orch serve`): the host goes on, the run ends ``cancelled`` with its compensations,
and the other runs of that process are untouched."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import orchestrator

ORCH = [sys.executable, "-m", "orchestrator"]

HOST = textwrap.dedent(
    """
    import asyncio, sys
    import orchestrator

    STATE, LEDGER, GO = sys.argv[1:4]
    nap = {
        "name": "nap",
        "phases": [
            {"id": "booked", "agent": "shell",
             "with": {"command": f"echo booked >> {LEDGER}"},
             "compensate": {"agent": "shell", "with": {"command": f"echo unbooked >> {LEDGER}"}}},
            {"id": "nap", "agent": "sleep", "depends_on": ["booked"], "with": {"seconds": 600}},
        ],
    }
    gate = {
        "name": "gate",
        "phases": [
            {"id": "gate", "agent": "shell",
             "with": {"command": f"while [ ! -f {GO} ]; do sleep 0.05; done; echo passed"}},
        ],
    }

    async def main():
        napping = await orchestrator.start(nap, state_dir=STATE)
        other = await orchestrator.start(gate, state_dir=STATE) if GO != "-" else None
        print(napping.run_id, other.run_id if other else "-", flush=True)
        print("nap", (await napping.wait()).status, flush=True)
        if other is not None:
            print("gate", (await other.wait()).status, flush=True)

    asyncio.run(main())
    print("host still alive", flush=True)
    """
)


def _orch(*args: str, state_dir) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ORCH, *args, "--state-dir", str(state_dir)], capture_output=True, text=True, timeout=120
    )


def _host(tmp_path, go: str) -> subprocess.Popen[str]:
    script = tmp_path / "host.py"
    script.write_text(HOST)
    state, ledger = tmp_path / "state", tmp_path / "ledger"
    return subprocess.Popen(
        [sys.executable, str(script), str(state), str(ledger), go],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _until_running(state, run_id: str, phase: str) -> None:
    for _ in range(1200):
        found = orchestrator.status(run_id, state_dir=state)
        if any(p.id == phase and p.state == "running" for p in found.phases):
            return
        time.sleep(0.05)
    raise AssertionError(f"{phase} never started")


def test_orch_cancel_of_an_api_run_cancels_the_run_and_the_host_program_survives(tmp_path):
    proc = _host(tmp_path, "-")
    state = tmp_path / "state"
    try:
        run_id = proc.stdout.readline().split()[0]
        _until_running(state, run_id, "nap")
        res = _orch("cancel", run_id, state_dir=state)
        assert res.returncode == 0, res.stderr
        assert f"asked process {proc.pid} to cancel run {run_id}" in res.stderr
        assert f"run {run_id} cancelled" in res.stderr
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err  # the host was not killed by the cancel
    assert out.splitlines() == ["nap cancelled", "host still alive"]
    info = json.loads(_orch("status", run_id, "--json", state_dir=state).stdout)
    assert info["status"] == "cancelled"
    assert {p["id"]: p["state"] for p in info["phases"]} == {
        "booked": "completed",
        "nap": "cancelled",
    }
    assert (tmp_path / "ledger").read_text().split() == ["booked", "unbooked"]  # compensated
    # `orch cancel` is a terminate request: `orch wait` gives the SIGTERM exit code
    assert _orch("wait", run_id, state_dir=state).returncode == 143


def test_cancelling_one_of_two_api_runs_in_one_process_leaves_the_other_running(tmp_path):
    go = tmp_path / "go"
    proc = _host(tmp_path, str(go))
    state = tmp_path / "state"
    try:
        nap_id, gate_id = proc.stdout.readline().split()
        _until_running(state, nap_id, "nap")
        res = _orch("cancel", nap_id, state_dir=state)
        assert res.returncode == 0, res.stderr
        assert f"run {nap_id} cancelled" in res.stderr
        # the nap run has ended; the gate run, in the same process, still runs
        info = json.loads(_orch("status", gate_id, "--json", state_dir=state).stdout)
        assert info["status"] == "running" and info["current"] == ["gate"]
        go.touch()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["nap cancelled", "gate completed", "host still alive"]
    assert _orch("wait", gate_id, state_dir=state).returncode == 0

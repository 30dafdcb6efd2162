"""Durable by construction: nothing is shown before the store has it, and a store that
cannot write stops the run with a clear error (real processes, a real SQLite file)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

ORCH = [sys.executable, "-m", "orchestrator"]

GATED = """
name: durable
phases:
  - id: a
    agent: echo
    with: {text: done, ledger: "LEDGER"}
  - id: b
    agent: shell
    depends_on: [a]
    with: {command: "while [ ! -f go ]; do sleep 0.05; done; echo opened"}
"""


def _env(tmp_path):
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}


def test_a_completion_printed_by_events_jsonl_survives_a_kill_right_after(tmp_path):
    # 5 trials: before the store came first, the kill lost the completion every time
    ledger = tmp_path / "ledger"
    (tmp_path / "wf.yaml").write_text(GATED.replace("LEDGER", str(ledger)))
    for trial in range(5):
        state = f"s{trial}"
        proc = subprocess.Popen(
            [*ORCH, "run", "wf.yaml", "--events", "jsonl", "--state-dir", state],
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        run_id = None
        for line in proc.stdout:
            event = json.loads(line)
            run_id = event["run_id"]
            if event["event"] == "phase_completed" and event["phase"] == "a":
                proc.kill()  # SIGKILL the moment the line is read
                break
        proc.wait()
        proc.stdout.close()
        assert run_id is not None
        (tmp_path / "go").write_text("")
        res = subprocess.run(
            [*ORCH, "resume", run_id, "--state-dir", state],
            cwd=tmp_path,
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
        (tmp_path / "go").unlink()
        assert res.returncode == 0, res.stderr
        assert f"resuming run {run_id}: 1 of 2 phases completed" in res.stderr
        runs = [line.split()[0] for line in ledger.read_text().splitlines()]
        assert runs.count(run_id) == 1  # phase a ran once: the resume kept its completion


BIG = """
name: big-outputs
mode: sequential
phases:
""" + "".join(
    f'  - {{id: p{i}, agent: echo, with: {{text: "{"x" * 100_000}"}}}}\n' for i in range(10)
)


def _small_files():
    # every file this process writes is capped below one 100 KB output (disk full, without root)
    resource.setrlimit(resource.RLIMIT_FSIZE, (90_000, 90_000))


def test_a_store_that_cannot_write_fails_the_run_naming_the_phase(tmp_path):
    (tmp_path / "wf.yaml").write_text(BIG)
    res = subprocess.run(
        [*ORCH, "run", "wf.yaml", "--state-dir", "s"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_small_files,
    )
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert "phase 'p0': its phase_completed could not be recorded in the state store" in res.stderr
    assert "100%" not in res.stderr and res.stdout == ""
    # nothing claims it completed: the store holds what it could record
    runs = subprocess.run(
        [*ORCH, "runs", "--json", "--state-dir", "s"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    (run,) = json.loads(runs.stdout)
    status = subprocess.run(
        [*ORCH, "status", run["id"], "--json", "--state-dir", "s"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    info = json.loads(status.stdout)
    assert info["status"] != "completed"
    assert all(p["state"] != "completed" for p in info["phases"])


def test_an_output_that_cannot_be_stored_fails_its_phase_with_a_clear_message(tmp_path):
    (tmp_path / "loops.py").write_text("def make():\n    x = []\n    x.append(x)\n    return x\n")
    (tmp_path / "wf.yaml").write_text(
        "name: loops\nphases:\n  - {id: loop, agent: python, with: {function: 'loops:make'}}\n"
    )
    res = subprocess.run(
        [*ORCH, "run", "wf.yaml", "--state-dir", "s"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert "phase 'loop' failed" in res.stderr
    assert "cannot be stored as JSON" in res.stderr


FOREACH = """
name: items
phases:
  - id: each
    agent: shell
    foreach: "{{ range(10) | list }}"
    max_parallel: 1
    with:
      command: >-
        echo {{ item }} >> ledger;
        if [ {{ item }} -ge 5 ] && [ ! -f go ]; then sleep 30; fi;
        echo {{ item }}
"""


def test_a_kill_during_foreach_reruns_only_the_items_that_had_not_completed(tmp_path):
    (tmp_path / "wf.yaml").write_text(FOREACH)
    with subprocess.Popen(
        [*ORCH, "run", "wf.yaml", "--events", "jsonl", "--state-dir", "s"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        run_id = None
        for line in proc.stdout:
            event = json.loads(line)
            run_id = event["run_id"]
            progress = event.get("data", {}).get("progress")
            if progress and progress["done"] == 5:  # items 0-4 done; item 5 is waiting
                proc.kill()
                break
        proc.wait()
    (tmp_path / "go").write_text("")
    res = subprocess.run(
        [*ORCH, "resume", run_id, "--state-dir", "s"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "foreach goes on: each (5 items done)" in res.stderr
    ran = [int(line) for line in (tmp_path / "ledger").read_text().split()]
    # 0-4 completed before the kill and never ran again; 6-9 ran once, after the resume;
    # 5 may have started before the kill (then it ran again: it had not completed)
    assert [ran.count(i) for i in range(10) if i != 5] == [1] * 9
    assert ran.count(5) in (1, 2)
    status = subprocess.run(
        [*ORCH, "logs", run_id, "--json", "--phase", "each", "--state-dir", "s"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    final = [json.loads(line) for line in status.stdout.splitlines()][-1]
    assert final["event"] == "phase_completed"
    assert final["data"]["output"] == [str(i) for i in range(10)]

"""Saga compensation, handlers and the fallback workflow, through the real `orch` command."""

from __future__ import annotations

import json
import os
import sys

from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import format_duration
from orchestrator.state.sqlite import open_store

sys.path.insert(0, os.path.dirname(__file__))
from test_crash import _orch, _view  # noqa: E402

runner = CliRunner()

SAGA = """
name: saga
mode: sequential
phases:
  - id: a
    agent: echo
    with: {text: A}
    compensate: {agent: echo, with: {text: "undo {{ phases.a.output }}", ledger: "LEDGER"}}
  - id: b
    agent: echo
    with: {text: B}
    compensate: {agent: COMP_B, with: COMP_WITH}
  - id: nocomp
    agent: echo
    with: {text: N}
  - id: c
    agent: fail
    with: {message: "the disk is on fire"}
on_success:
  - {id: celebrate, agent: echo, with: {text: yay, ledger: "LEDGER"}}
on_failure:
  - {id: notify, agent: echo, with: {text: "failed: {{ phases.c.error }}", ledger: "LEDGER"}}
finally:
  - {id: cleanup, agent: echo, with: {text: bye, ledger: "LEDGER"}}
"""


def _write(tmp_path, text, COMP_B="echo", COMP_WITH='{text: "undo b", ledger: "LEDGER"}'):
    ledger = tmp_path / "ledger"
    text = text.replace("COMP_B", COMP_B).replace("COMP_WITH", COMP_WITH)
    text = text.replace("LEDGER", str(ledger))
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    return path, ledger


def _ledger(ledger):
    return [line.split()[1] for line in ledger.read_text().splitlines()] if ledger.exists() else []


def _run(path, state, *extra):
    return runner.invoke(app, ["run", str(path), "--state-dir", str(state), *extra])


def _only_run(state):
    store = open_store(state)
    try:
        run = store.list_runs()[0]
        return run, {p.id: p for p in store.phases(run.id)}, store.events(run.id)
    finally:
        store.close()


def test_a_failed_run_compensates_in_reverse_completion_order_then_handlers(tmp_path):
    path, ledger = _write(tmp_path, SAGA)
    res = _run(path, tmp_path / "s", "--events", "jsonl")
    assert res.exit_code == 1
    events = [json.loads(line) for line in res.stdout.splitlines()]
    compensated = [
        (e["phase"], e["data"]["ok"]) for e in events if e["event"] == "phase_compensated"
    ]
    assert compensated == [("b", True), ("a", True)]
    assert _ledger(ledger) == ["b", "a", "notify", "cleanup"]  # no celebrate, no nocomp
    run, phases, _ = _only_run(tmp_path / "s")
    assert run.status == "failed" and run.error == "phase 'c' failed: the disk is on fire"
    assert phases["a"].compensated is True and phases["nocomp"].compensated is None
    assert phases["notify"].output == "failed: the disk is on fire"


def test_a_failed_compensation_is_reported_without_hiding_the_failure(tmp_path):
    path, ledger = _write(tmp_path, SAGA, COMP_B="fail", COMP_WITH="{message: no undo}")
    res = _run(path, tmp_path / "s")
    assert res.exit_code == 1
    run, phases, _ = _only_run(tmp_path / "s")
    assert run.error.startswith("phase 'c' failed: the disk is on fire")
    assert "compensation of 'b' failed: no undo" in run.error
    assert phases["b"].compensated is False and phases["b"].compensation_error == "no undo"
    assert phases["a"].compensated is True  # the others still ran
    assert _ledger(ledger) == ["a", "notify", "cleanup"]
    status = runner.invoke(app, ["status", run.id, "--state-dir", str(tmp_path / "s")]).output
    assert "compensation failed: no undo" in status


def test_a_completed_run_runs_on_success_and_finally_only(tmp_path):
    path, ledger = _write(tmp_path, SAGA.replace("agent: fail", "agent: echo"))
    res = _run(path, tmp_path / "s")
    assert res.exit_code == 0, res.output
    assert _ledger(ledger) == ["celebrate", "cleanup"]


def test_a_failing_handler_is_recorded_and_does_not_change_the_status(tmp_path):
    text = SAGA.replace("agent: fail", "agent: echo").replace(
        '{id: celebrate, agent: echo, with: {text: yay, ledger: "LEDGER"}}',
        "{id: celebrate, agent: fail, with: {message: party cancelled}}",
    )
    path, ledger = _write(tmp_path, text)
    res = _run(path, tmp_path / "s")
    assert res.exit_code == 0, res.output
    run, phases, _ = _only_run(tmp_path / "s")
    assert run.status == "completed" and phases["celebrate"].state == "failed"
    assert _ledger(ledger) == ["cleanup"]


def test_fallback_workflow_completes_a_failed_run_with_its_outputs(tmp_path):
    (tmp_path / "plan-b.yaml").write_text(
        "name: plan-b\nphases:\n  - {id: rescue, agent: echo, with: {text: rescued}}\n"
        'outputs:\n  result: "{{ phases.rescue.output }}"\n'
    )
    main = (
        "name: main\nerror_handling: {fallback_workflow: plan-b.yaml}\n"
        "phases:\n  - {id: boom, agent: fail, with: {message: down}}\n"
        'outputs:\n  result: "{{ phases.boom.output }}"\n'
    )
    path, _ = _write(tmp_path, main)
    res = _run(path, tmp_path / "s")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"result": "rescued"}
    run, phases, _ = _only_run(tmp_path / "s")
    assert run.status == "completed" and phases["fallback_workflow"].fallback_used


def test_a_failing_fallback_workflow_keeps_the_run_failed(tmp_path):
    (tmp_path / "plan-b.yaml").write_text(
        "name: plan-b\nphases:\n  - {id: also, agent: fail, with: {message: also down}}\n"
    )
    main = (
        "name: main\nerror_handling: {fallback_workflow: plan-b.yaml}\n"
        "phases:\n  - {id: boom, agent: fail, with: {message: down}}\n"
    )
    path, _ = _write(tmp_path, main)
    res = _run(path, tmp_path / "s")
    assert res.exit_code == 1
    run, _, _ = _only_run(tmp_path / "s")
    assert run.error.startswith("phase 'boom' failed: down; fallback workflow 'plan-b.yaml'")


def test_compensation_resumes_correctly_after_a_crash_in_the_middle(tmp_path):
    """A crash at every store boundary of a compensating run; resume finishes the saga."""
    warm, _ = _write(tmp_path, SAGA)
    assert _run(warm, tmp_path / "warm").exit_code == 1  # also imports everything before forking
    seen_compensating = 0
    for k in range(1, 100):
        folder = tmp_path / f"k{k}"
        folder.mkdir()
        path, ledger = _write(folder, SAGA)
        state = str(folder / "s")
        code = _orch(["run", str(path), "--state-dir", state], {"ORCH_CRASH_AT": str(k)})
        if code == 1:  # the run ended before the k-th boundary: every boundary was tried
            break
        assert code == 137
        run_id, _, integrity = _view(state)
        assert integrity == "ok"
        if run_id is None:
            continue
        store = open_store(state)
        before = {p.id: p.compensated for p in store.phases(run_id)}
        store.close()
        started = any(v is not None for v in before.values())
        seen_compensating += started
        done_before = len(_ledger(ledger))
        assert _orch(["resume", run_id, "--state-dir", state]) == 1, f"boundary {k}"
        store = open_store(state)
        run = store.get_run(run_id)
        phases = {p.id: p for p in store.phases(run_id)}
        store.close()
        assert run.status == "failed", f"boundary {k}"
        assert phases["a"].compensated is True and phases["b"].compensated is True
        assert run.error.startswith("phase 'c' failed"), run.error
        again = _ledger(ledger)[done_before:]
        # a compensation recorded as done never runs again; the order stays reversed
        assert not {p for p, v in before.items() if v is True} & set(again), (k, again)
        comp = [p for p in _ledger(ledger) if p in ("a", "b")]
        assert comp[-1] == "a" and set(comp) == {"a", "b"}, (k, comp)
    else:
        raise AssertionError("the run never got past the boundaries")
    assert seen_compensating >= 3  # crashes did land inside the compensation


UNDO_FLOW = """
name: undo
inputs:
  what: {type: string}
phases:
  - id: undo_step
    agent: echo
    with: {text: "undid {{ inputs.what }}", ledger: "LEDGER"}
outputs:
  said: "{{ phases.undo_step.output }}"
"""

COMPENSATE_WITH = """
name: saga-through
agents:
  AGENT_SPEC
phases:
  - id: a
    agent: echo
    TIMEOUT
    with: {text: booked}
    compensate: {agent: undo, with: UNDO_WITH}
  - id: c
    agent: fail
    depends_on: [a]
    with: {message: declined}
"""


def _saga_through(tmp_path, agent_spec, undo_with, timeout=""):
    text = (
        COMPENSATE_WITH.replace("AGENT_SPEC", agent_spec)
        .replace("UNDO_WITH", undo_with)
        .replace("TIMEOUT", timeout)
    )
    path, ledger = _write(tmp_path, text)
    (tmp_path / "undo.yaml").write_text(UNDO_FLOW.replace("LEDGER", str(ledger)))
    return path, ledger


def test_a_compensation_can_call_the_workflow_agent(tmp_path):
    # the compensation runs a whole sub-workflow, as a phase could
    path, ledger = _saga_through(
        tmp_path,
        "undo: {type: workflow}",
        '{path: undo.yaml, inputs: {what: "{{ phases.a.output }}"}}',
    )
    res = _run(path, tmp_path / "s", "--events", "jsonl")
    assert res.exit_code == 1, res.output
    events = [json.loads(line) for line in res.stdout.splitlines()]
    done = [e for e in events if e["event"] == "phase_compensated"]
    assert [(e["phase"], e["data"]["ok"], e["data"]["error"]) for e in done] == [("a", True, None)]
    assert _ledger(ledger) == ["undo_step"]  # the sub-run's phase ran
    _, phases, _ = _only_run(tmp_path / "s")
    assert phases["a"].compensated is True


def test_a_compensation_goes_through_its_agents_rate_limit(tmp_path):
    # two calls an hour: the phase takes one, its compensation the other
    path, ledger = _saga_through(
        tmp_path,
        "undo: {type: echo, rate_limit: 2/h}",
        '{text: "undo", ledger: "LEDGER"}',
    )
    path.write_text(path.read_text().replace("agent: echo\n", "agent: undo\n", 1))
    res = _run(path, tmp_path / "s")
    assert res.exit_code == 1, res.output
    _, phases, _ = _only_run(tmp_path / "s")
    assert phases["a"].compensated is True
    assert _ledger(ledger) == ["a"]


def test_a_compensation_waits_for_its_agents_rate_limit_within_the_phase_timeout(tmp_path):
    # one call an hour, taken by the phase itself: the compensation waits for the
    # bucket (it does not skip the limit) until the phase's timeout cuts it. The phase's
    # own call must fit in that timeout: on a loaded machine a trial whose phase timed
    # out itself runs again with twice the timeout (a bound, never a speed check).
    ms = 300
    while True:
        folder = tmp_path / f"t{ms}"
        folder.mkdir()
        path, ledger = _saga_through(
            folder,
            "undo: {type: echo, rate_limit: 1/h}",
            '{text: "undo", ledger: "LEDGER"}',
            timeout=f"timeout: {ms}ms",
        )
        path.write_text(path.read_text().replace("agent: echo\n", "agent: undo\n", 1))
        res = _run(path, folder / "s")
        assert res.exit_code == 1, res.output
        run, phases, _ = _only_run(folder / "s")
        if phases["a"].state.value == "completed":
            break
        assert ms < 30_000, f"phase a never completed within {ms}ms: {phases['a'].error}"
        ms *= 2
    cut = f"timed out after {format_duration(ms / 1000)}"  # 300ms, ..., 1.2s
    assert phases["a"].compensated is False
    assert phases["a"].compensation_error == cut
    assert f"compensation of 'a' failed: {cut}" in run.error
    assert _ledger(ledger) == []


def test_a_compensation_counts_for_its_agents_circuit_breaker(tmp_path):
    # b's compensation fails and opens the breaker; a's is then refused by it
    text = """
name: saga-breaker
mode: sequential
agents:
  undo: {type: fail, circuit_breaker: {failures: 1, reset_after: 1h}}
phases:
  - {id: a, agent: echo, with: {text: A}, compensate: {agent: undo, with: {message: nope}}}
  - {id: b, agent: echo, with: {text: B}, compensate: {agent: undo, with: {message: nope}}}
  - {id: c, agent: fail, with: {message: declined}}
"""
    path, _ = _write(tmp_path, text)
    res = _run(path, tmp_path / "s")
    assert res.exit_code == 1, res.output
    _, phases, _ = _only_run(tmp_path / "s")
    assert phases["b"].compensation_error == "nope"
    assert phases["a"].compensation_error.startswith("circuit breaker of agent 'undo' is open")

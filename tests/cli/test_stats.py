"""`orch stats` through the real command, on real runs with failures, retries, cache hits
and handlers (and a few older runs written with the event constructors, for --since)."""

from __future__ import annotations

import json
import re
import time

from typer.testing import CliRunner

from orchestrator import events as ev
from orchestrator.cli import app
from orchestrator.state.sqlite import open_store
from orchestrator.state.stats import percentile

runner = CliRunner()

WORKFLOW = """\
name: stats-demo
inputs:
  fail: {type: boolean, default: false}
phases:
  - id: fetch
    agent: echo
    cache: true
    with: {text: data}
  - id: flaky
    agent: fail
    retries: {attempts: 2, backoff: fixed, delay: 1ms}
    with: {times: 1, output: ok}
  - id: boom
    agent: fail
    depends_on: [fetch, flaky]
    when: "inputs.fail"
    with: {message: nope}
finally:
  - id: cleanup
    agent: noop
"""


def orch(*args, state):
    result = runner.invoke(app, [*args, "--state-dir", str(state)])
    return result


def _run(tmp_path, state, *inputs):
    path = tmp_path / "wf.yaml"
    path.write_text(WORKFLOW, encoding="utf-8")
    result = orch("run", str(path), *inputs, state=state)
    assert result.exit_code in (0, 1), result.output


def test_stats_count_runs_failures_retries_cache_hits_and_handlers(tmp_path):
    state = tmp_path / "state"
    _run(tmp_path, state)  # completes; fetch runs
    _run(tmp_path, state)  # completes; fetch from the cache
    _run(tmp_path, state, "--input", "fail=true")  # boom fails
    result = orch("stats", "--json", state=state)
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    (wf,) = stats["workflows"]
    assert wf["workflow"] == "stats-demo"
    assert wf["runs"] == 3
    assert wf["statuses"] == {"completed": 2, "failed": 1}
    assert wf["success_rate"] == 2 / 3
    phases = {p["phase"]: p for p in stats["phases"]}
    assert set(phases) == {"fetch", "flaky", "boom", "cleanup"}
    assert (phases["fetch"]["runs"], phases["fetch"]["cached"], phases["fetch"]["calls"]) == (
        3,
        2,
        1,
    )
    flaky = phases["flaky"]
    assert (flaky["runs"], flaky["calls"], flaky["retries"], flaky["failures"]) == (3, 6, 3, 0)
    boom = phases["boom"]
    assert (boom["runs"], boom["skipped"], boom["failures"], boom["calls"]) == (1, 2, 1, 1)
    assert phases["cleanup"]["runs"] == 3  # the finally handler ran every time
    agents = {a["agent"]: a for a in stats["agents"]}
    assert agents["fail"]["calls"] == 7 and agents["fail"]["failures"] == 1
    assert agents["fail"]["retries"] == 3
    assert agents["noop"]["phases"] == 3
    # durations are the recorded ones: p50/p95 of the runs as `orch runs --json` lists them
    runs = json.loads(orch("runs", "--json", state=state).stdout)
    durations = [r["duration"] for r in runs]
    assert wf["p50"] == percentile(durations, 50)
    assert wf["p95"] == percentile(durations, 95) == max(durations)


def test_stats_filter_by_workflow_and_since(tmp_path):
    state = tmp_path / "state"
    _run(tmp_path, state)
    store = open_store(state)
    try:  # a run of another workflow, thirty days ago
        old = time.time() - 30 * 86400
        store.append(
            [
                ev.workflow_started(
                    "old-run",
                    old,
                    workflow="nightly",
                    path="n.yaml",
                    source_hash="x",
                    phases=["a"],
                    fingerprints={},
                    inputs={},
                    pid=1,
                ),
                ev.phase_started("old-run", old + 1, "a", 1, agent="echo"),
                ev.phase_completed("old-run", old + 3, "a", 1, output=1, duration=2.0, attempts=1),
                ev.workflow_ended(
                    "old-run", old + 4, "completed", outputs={}, duration=4.0, error=None, counts={}
                ),
            ]
        )
    finally:
        store.close()
    everything = json.loads(orch("stats", "--json", state=state).stdout)
    assert [w["workflow"] for w in everything["workflows"]] == ["nightly", "stats-demo"]
    nightly = everything["workflows"][0]
    assert (nightly["runs"], nightly["p50"], nightly["success_rate"]) == (1, 4.0, 1.0)
    recent = json.loads(orch("stats", "--since", "7d", "--json", state=state).stdout)
    assert [w["workflow"] for w in recent["workflows"]] == ["stats-demo"]
    only = json.loads(orch("stats", "nightly", "--json", state=state).stdout)
    assert [w["workflow"] for w in only["workflows"]] == ["nightly"]
    assert {p["phase"] for p in only["phases"]} == {"a"}
    table = orch("stats", state=state)
    assert table.exit_code == 0
    row = r"nightly\s+│\s+1\s+│\s+1\s+│\s+0\s+│\s+100%\s+│\s+4s\s+│"
    assert re.search(row, table.stdout), table.stdout


def test_stats_as_openmetrics(tmp_path):
    state = tmp_path / "state"
    _run(tmp_path, state)
    _run(tmp_path, state, "--input", "fail=true")
    result = orch("stats", "--openmetrics", state=state)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.endswith("# EOF\n")
    sample = re.compile(r'^[a-z_]+\{([a-z_]+="[^"]*",?)+\} -?[0-9.e+-]+$')
    for line in text.splitlines()[:-1]:
        assert line.startswith("# ") or sample.match(line), line
    assert 'orch_workflow_runs{workflow="stats-demo",status="completed"} 1' in text
    assert 'orch_workflow_runs{workflow="stats-demo",status="failed"} 1' in text
    assert 'orch_workflow_success_ratio{workflow="stats-demo"} 0.5' in text
    assert 'orch_phase_retries{workflow="stats-demo",phase="flaky"} 2' in text
    assert 'orch_agent_failures{agent="fail"} 1' in text
    assert re.search(
        r'orch_workflow_duration_seconds\{workflow="stats-demo",quantile="0.95"\}', text
    )


def test_stats_usage_errors_and_an_empty_store(tmp_path):
    state = tmp_path / "nothing"
    empty = orch("stats", state=state)
    assert empty.exit_code == 0 and "no runs recorded" in empty.stdout
    named = orch("stats", "nightly", state=state)
    assert named.exit_code == 0 and "no runs of workflow 'nightly' recorded" in named.stdout
    assert not state.exists()  # a reading command creates no store
    bad = orch("stats", "--since", "a week", state=state)
    assert bad.exit_code == 2
    assert "--since 'a week' is not a duration" in bad.output
    assert "hint: write a duration back from now, e.g. 7d, 12h or 30m" in bad.output
    both = orch("stats", "--json", "--openmetrics", state=state)
    assert both.exit_code == 2


BREAKER = """\
name: breaker-demo
agents:
  crm:
    type: fail
    circuit_breaker: {failures: 2, reset_after: 1m}
phases:
  - id: sync
    agent: crm
    retries: {attempts: 3, backoff: fixed, delay: 1ms}
    with: {message: "CRM down"}
  - id: other
    agent: echo
    with: {text: fine}
"""


def test_stats_count_the_circuit_breakers_that_opened_per_agent_and_phase(tmp_path):
    state = tmp_path / "state"
    path = tmp_path / "breaker.yaml"
    path.write_text(BREAKER, encoding="utf-8")
    for _ in range(2):  # each run: two failures open the breaker; the third try is refused
        run = orch("run", str(path), "--events", "jsonl", state=state)
        assert run.exit_code == 1, run.output
        events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        sync = [(e["event"], e.get("attempt")) for e in events if e.get("phase") == "sync"]
        assert sync == [  # the second failure opened it, before its retry was announced
            ("phase_started", 1),
            ("phase_retry", 1),
            ("breaker_opened", 2),
            ("phase_retry", 2),
            ("phase_failed", 3),
        ]
        (event,) = [e for e in events if e["event"] == "breaker_opened"]
        assert event["data"] == {
            "agent": "crm",
            "failures": 2,
            "reset_after": 60.0,
            "error": "CRM down",
        }
        failed = next(e for e in events if e["event"] == "phase_failed")
        assert (
            "circuit breaker of agent 'crm' is open after 2 consecutive failures"
            in (failed["data"]["error"])
        )
    stats = json.loads(orch("stats", "--json", state=state).stdout)
    agents = {a["agent"]: a for a in stats["agents"]}
    assert agents["crm"]["breaker_opens"] == 2
    assert agents["echo"]["breaker_opens"] == 0
    phases = {p["phase"]: p for p in stats["phases"]}
    assert (phases["sync"]["breaker_opens"], phases["other"]["breaker_opens"]) == (2, 0)
    assert phases["sync"]["calls"] == 6  # three attempts a run: the refused one counts too
    table = orch("stats", state=state).stdout
    assert "breaker opens" in table
    assert re.search(r"crm\s+│(\s+\S+\s+│){8}\s+2\s+│", table), table
    metrics = orch("stats", "--openmetrics", state=state).stdout
    assert 'orch_agent_breaker_opens{agent="crm"} 2' in metrics
    assert 'orch_agent_breaker_opens{agent="echo"} 0' in metrics
    assert 'orch_phase_breaker_opens{workflow="breaker-demo",phase="sync"} 2' in metrics
    # the run's log says it too, stored with the other events
    run_id = json.loads(orch("runs", "--json", state=state).stdout)[0]["id"]
    logs = orch("logs", run_id, state=state)
    assert re.search(
        r"breaker_opened\s+sync #2\s+circuit breaker of agent 'crm' opened after 2 failures in"
        r" a row \(last: CRM down\); its calls fail at once for 1m",
        logs.stdout,
    ), logs.stdout


def test_an_open_breaker_shows_in_the_live_display_and_the_summary(tmp_path):
    import io

    from orchestrator.events import Event
    from orchestrator.render.console import make_console
    from orchestrator.render.progress import LiveProgress, RunView

    path = tmp_path / "breaker.yaml"
    path.write_text(BREAKER, encoding="utf-8")
    run = orch("run", str(path), "--events", "jsonl", state=tmp_path / "state")
    events = [Event.from_dict(json.loads(x)) for x in run.stdout.splitlines() if x[:1] == "{"]
    opened = next(e for e in events if e.event == "breaker_opened")
    view = RunView()
    for event in events[: events.index(opened) + 1]:  # the run goes on; the breaker is open
        view(event)
    console = make_console(io.StringIO(), force_terminal=False, width=120, environ={})
    console.print(LiveProgress(view, console).render(now=opened.ts + 15))
    frame = console.file.getvalue()
    assert "circuit breaker of agent 'crm' open: calls fail at once for 45s" in frame, frame
    console = make_console(io.StringIO(), force_terminal=False, width=120, environ={})
    console.print(LiveProgress(view, console).render(now=opened.ts + 61))
    assert "circuit breaker" not in console.file.getvalue()  # a minute later: a trial may go
    # the end-of-run summary (plain output of the same run) counts it
    plain = orch("run", str(path), state=tmp_path / "state")
    assert "circuit breakers opened: crm (1 time)" in plain.output


SPENDER = """\
from orchestrator.agents import AgentResult


def spend(prompt, completion, cost):
    tokens = {"prompt": prompt, "completion": completion}
    return AgentResult(output="ok", metadata={"tokens": tokens, "cost": cost})
"""

SPENDING = """\
name: spending
budget: {tokens: 12}
phases:
  - id: ask
    agent: python
    with: {function: "spender:spend", kwargs: {prompt: 7, completion: 5, cost: 0.25}}
  - id: again
    agent: python
    depends_on: [ask]
    with: {function: "spender:spend", kwargs: {prompt: 2, completion: 1, cost: 0.5}}
"""


def test_stats_count_tokens_as_the_runs_budget_counts_them(tmp_path):
    # tokens reported without a total count prompt + completion: `budget:` stops the run
    # after 7 + 5 = 12, and orch stats says 12 (it counted only a reported total: 0)
    (tmp_path / "spender.py").write_text(SPENDER, encoding="utf-8")
    path = tmp_path / "spending.yaml"
    path.write_text(SPENDING, encoding="utf-8")
    state = tmp_path / "state"
    ran = orch("run", str(path), state=state)
    assert ran.exit_code == 1 and "12 of 12 tokens spent (budget.tokens)" in ran.output
    run_id = json.loads(orch("runs", "--json", state=state).stdout)[0]["id"]
    status = json.loads(orch("status", run_id, "--json", state=state).stdout)
    assert status["tokens"] == {"prompt": 7, "completion": 5, "total": 12}
    assert status["cost"] == 0.25
    stats = json.loads(orch("stats", "--json", state=state).stdout)
    (wf,) = stats["workflows"]
    assert (wf["tokens"], wf["cost"]) == (12, 0.25)
    phases = {p["phase"]: (p["tokens"], p["cost"]) for p in stats["phases"]}
    assert phases == {"ask": (12, 0.25), "again": (0, None)}
    assert [(a["agent"], a["tokens"]) for a in stats["agents"]] == [("python", 12)]


NONSENSE = """\
name: nonsense
phases:
  - id: ask
    agent: python
    with: {function: "spender:spend", kwargs: {prompt: -7, completion: 5, cost: -1}}
  - id: again
    agent: python
    depends_on: [ask]
    with: {function: "spender:spend", kwargs: {prompt: 2, completion: 1, cost: free}}
"""


def test_a_negative_or_non_numeric_usage_an_agent_reports_is_left_out_of_its_events(tmp_path):
    # a plugin reporting cost -1, cost "free" or -7 prompt tokens: the run goes on, the
    # stored events keep to the published schema (conftest validates every stored event),
    # the rest of what it reported stays, and nothing counts the nonsense
    (tmp_path / "spender.py").write_text(SPENDER, encoding="utf-8")
    path = tmp_path / "nonsense.yaml"
    path.write_text(NONSENSE, encoding="utf-8")
    state = tmp_path / "state"
    ran = orch("run", str(path), "--events", "jsonl", state=state)
    assert ran.exit_code == 0, ran.output
    done = {
        e["phase"]: e["data"]["metadata"]
        for e in map(json.loads, ran.stdout.splitlines())
        if e["event"] == "phase_completed"
    }
    assert done == {  # a phase's tokens are what its calls used, with their total
        "ask": {"tokens": {"completion": 5, "total": 5}},
        "again": {"tokens": {"prompt": 2, "completion": 1, "total": 3}},
    }
    run_id = json.loads(orch("runs", "--json", state=state).stdout)[0]["id"]
    status = json.loads(orch("status", run_id, "--json", state=state).stdout)
    assert status["tokens"]["prompt"] == 2 and status["tokens"]["completion"] == 6
    assert status.get("cost") is None


MIXED = """\
name: mixed
budget: {tokens: 50}
phases:
  - id: a
    agent: python
    with: {function: "mixed_spender:total_only", kwargs: {total: 10}}
  - id: b
    agent: python
    depends_on: [a]
    with: {function: "spender:spend", kwargs: {prompt: 30, completion: 30, cost: 0}}
  - id: c
    agent: python
    depends_on: [b]
    with: {function: "spender:spend", kwargs: {prompt: 30, completion: 30, cost: 0}}
"""

TOTAL_ONLY = """\
from orchestrator.agents import AgentResult


def total_only(total):
    return AgentResult(output="ok", metadata={"tokens": {"total": total}})
"""


def test_calls_reporting_tokens_differently_all_count_toward_the_budget_and_totals(tmp_path):
    # a reports only a total (10), b only prompt and completion (60): 70 tokens are spent
    # before c, over the budget of 50, so c never runs; the run's totals say 70 (the sum
    # of the reported totals alone, 10, let c run and the run end "completed")
    (tmp_path / "spender.py").write_text(SPENDER, encoding="utf-8")
    (tmp_path / "mixed_spender.py").write_text(TOTAL_ONLY, encoding="utf-8")
    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED, encoding="utf-8")
    state = tmp_path / "state"
    ran = orch("run", str(path), "--events", "jsonl", state=state)
    assert ran.exit_code == 1, ran.output
    assert "70 of 50 tokens spent (budget.tokens)" in ran.output
    lines = [json.loads(x) for x in ran.stdout.splitlines() if x.startswith("{")]
    assert [e["phase"] for e in lines if e["event"] == "phase_completed"] == ["a", "b"]
    (end,) = [e for e in lines if e["event"].startswith("workflow_")][-1:]
    assert end["data"]["tokens"] == {"prompt": 30, "completion": 30, "total": 70}
    run_id = json.loads(orch("runs", "--json", state=state).stdout)[0]["id"]
    status = json.loads(orch("status", run_id, "--json", state=state).stdout)
    assert status["tokens"] == {"prompt": 30, "completion": 30, "total": 70}
    stats = json.loads(orch("stats", "--json", state=state).stdout)
    assert stats["workflows"][0]["tokens"] == 70

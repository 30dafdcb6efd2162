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
    assert not state.exists()  # a reading command creates no store
    bad = orch("stats", "--since", "a week", state=state)
    assert bad.exit_code == 2
    assert "--since 'a week' is not a duration" in bad.output
    both = orch("stats", "--json", "--openmetrics", state=state)
    assert both.exit_code == 2

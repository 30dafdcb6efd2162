"""Rules the suite guarded from one angle only (issue 9, item 21): each gets a second test,
written against what a planted bug would break (falsy `when:`, null outputs on resume, a
burst after an idle bucket, none_failed, implied cycles, foreach order, 404 not retried,
`status --json` fields)."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.engine import limits, run_sync
from orchestrator.engine.limits import TokenBucket
from orchestrator.errors import WorkflowInvalid
from orchestrator.plan import compile_plan
from orchestrator.spec import load_workflow
from orchestrator.spec.model import RateLimit


def load(tmp_path, text: str):
    path = tmp_path / "wf.yaml"
    path.write_text(text, encoding="utf-8")
    return compile_plan(load_workflow(path))


@pytest.mark.parametrize("falsy", ["0", "''", "[]", "none", "{}", "0.0", "inputs.empty"])
def test_a_when_that_gives_any_falsy_value_skips_the_phase(tmp_path, falsy):
    plan = load(
        tmp_path,
        "version: 1\nname: w\ninputs:\n  empty: {type: array, default: []}\nphases:\n"
        f'  - id: a\n    agent: echo\n    when: "{falsy}"\n    with: {{text: ran}}\n'
        '  - id: b\n    agent: echo\n    when: "1"\n    with: {text: ran}\n',
    )
    result = run_sync(plan)
    assert result.phases["a"].status == "skipped"
    assert result.phases["b"].status == "completed"


@pytest.mark.parametrize("truthy", ["1", "'x'", "[0]", "{'k': 0}", "-1"])
def test_a_when_that_gives_a_truthy_value_runs_the_phase(tmp_path, truthy):
    plan = load(
        tmp_path,
        f'version: 1\nname: w\nphases:\n  - id: a\n    agent: echo\n    when: "{truthy}"\n'
        "    with: {text: ran}\n",
    )
    assert run_sync(plan).phases["a"].status == "completed"


def test_a_rate_limit_lets_no_burst_through_after_an_idle_period(monkeypatch):
    now = [1000.0]
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds
        await real_sleep(0)

    monkeypatch.setattr(limits.asyncio, "sleep", fake_sleep)

    async def main() -> list[float]:
        bucket = TokenBucket(RateLimit(count=2, per=1.0), clock=lambda: now[0])
        for _ in range(2):
            await bucket.take()  # the bucket starts full
        now[0] += 3600.0  # an hour idle: the bucket refills to 2, not to 7200
        taken = []
        for _ in range(5):
            await bucket.take()
            taken.append(now[0])
        return taken

    taken = asyncio.run(main())
    start = 1000.0 + 3600.0
    assert taken[:2] == [start, start]  # the full bucket: two at once
    assert waits and all(w == pytest.approx(0.5) for w in waits)  # then one every 0.5 s
    assert taken[2:] == pytest.approx([start + 0.5, start + 1.0, start + 1.5])


def test_none_failed_runs_after_a_skip_but_not_after_a_failure(tmp_path):
    plan = load(
        tmp_path,
        "version: 1\nname: t\nerror_handling: {continue_on_error: true}\nphases:\n"
        "  - {id: ok, agent: echo, with: {text: 1}}\n"
        "  - {id: skipped, agent: echo, when: 'false', with: {text: 1}}\n"
        "  - {id: broken, agent: fail, with: {message: no}}\n"
        "  - {id: after_skip, agent: echo, depends_on: [ok, skipped], trigger: none_failed,"
        " with: {text: 1}}\n"
        "  - {id: after_fail, agent: echo, depends_on: [ok, broken], trigger: none_failed,"
        " with: {text: 1}}\n",
    )
    result = run_sync(plan)
    assert result.phases["after_skip"].status == "completed"
    assert result.phases["after_fail"].status == "skipped"


def test_a_cycle_made_only_of_template_references_is_refused(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(
        "version: 1\nname: c\nphases:\n"
        "  - {id: a, agent: echo, with: {text: '{{ phases.c.output }}'}}\n"
        "  - {id: b, agent: echo, with: {text: '{{ phases.a.output }}'}}\n"
        "  - {id: c, agent: echo, when: 'phases.b.output', with: {text: 1}}\n",
        encoding="utf-8",
    )
    with pytest.raises(WorkflowInvalid) as info:
        load_workflow(path)
    messages = [p.message for p in info.value.problems]
    assert any("cycle" in m and "a" in m and "b" in m and "c" in m for m in messages), messages


def test_foreach_output_keeps_input_order_when_items_finish_in_reverse(tmp_path):
    plan = load(
        tmp_path,
        "version: 1\nname: f\nphases:\n"
        "  - id: each\n    agent: sleep\n    foreach: '{{ [0.3, 0.2, 0.1, 0.0] }}'\n"
        "    with: {seconds: '{{ item }}', output: '{{ index }}'}\n",
    )
    result = run_sync(plan)
    assert result.phases["each"].output == [0, 1, 2, 3]


def _orch(tmp_path, *args: str):
    import os
    import subprocess
    import sys

    env = {**os.environ, "ORCH_STATE_DIR": str(tmp_path / ".orch")}
    env.pop("GITHUB_ACTIONS", None)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )


def test_a_404_is_asked_once_even_with_retries_left_and_the_run_fails(tmp_path):
    """From the server's side: a 404 is permanent, so orch sends one request, not 4."""
    import json

    from tests.servers import HTTPServer, Reply

    with HTTPServer({("GET", "/missing"): Reply(404, body="no such thing")}) as srv:
        (tmp_path / "wf.yaml").write_text(
            "name: nf\nphases:\n  - id: get\n    agent: http\n"
            f"    retries: {{attempts: 3, delay: 10ms}}\n    with: {{url: '{srv.url}/missing'}}\n",
            encoding="utf-8",
        )
        done = _orch(tmp_path, "run", "wf.yaml", "--events", "jsonl")
        asked = [r for r in srv.requests if r.path == "/missing"]
    assert done.returncode == 1, done.stderr
    assert len(asked) == 1
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert not [e for e in events if e["event"] == "phase_retry"]
    failed = [e for e in events if e["event"] == "phase_failed"]
    assert failed[0]["data"]["attempts"] == 1
    assert "HTTP 404" in failed[0]["data"]["error"]


def test_status_json_names_each_phase_state_error_and_the_run_progress(tmp_path):
    """`orch status --json` read by a script: the run's fields and one entry per phase."""
    import json

    (tmp_path / "wf.yaml").write_text(
        "name: sj\nphases:\n"
        "  - id: ok\n    agent: echo\n    with: {text: hello}\n"
        "  - id: bad\n    agent: fail\n    continue_on_error: true\n"
        "    with: {times: 5, message: boom}\n"
        "  - id: off\n    agent: echo\n    when: 'false'\n    with: {text: x}\n",
        encoding="utf-8",
    )
    assert _orch(tmp_path, "run", "wf.yaml").returncode == 0
    listed = json.loads(_orch(tmp_path, "runs", "--json").stdout)
    run_id = listed[0]["id"]
    status = json.loads(_orch(tmp_path, "status", run_id, "--json").stdout)
    assert (status["id"], status["workflow"], status["status"]) == (run_id, "sj", "completed")
    assert status["error"] is None and status["duration"] >= 0
    assert status["progress"]["total"] == 3 and status["progress"]["completed"] == 1
    phases = {p["id"]: p for p in status["phases"]}
    assert list(phases) == ["ok", "bad", "off"]
    assert (phases["ok"]["state"], phases["ok"]["attempts"], phases["ok"]["error"]) == (
        "completed",
        1,
        None,
    )
    assert (phases["bad"]["state"], phases["bad"]["error"]) == ("failed", "boom")
    assert phases["off"]["state"] == "skipped"

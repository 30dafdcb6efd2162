"""Agents chosen at run time, through the real `orch run`: `capability:` (least-loaded
healthy agent per call) and `agent: {one_of, select}`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from orchestrator.cli import app

HEADER = "# yaml-language-server: $schema=../schemas/workflow.schema.json\n"


def run(tmp_path, text: str, *args: str):
    path = tmp_path / "wf.yaml"
    path.write_text(HEADER + text)
    result = CliRunner().invoke(app, ["run", str(path), "--events", "jsonl", *args])
    events = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    return result, events


def completed(events: list[dict]) -> dict[str, dict]:
    return {e["phase"]: e["data"] for e in events if e["event"] == "phase_completed"}


def test_calls_go_to_the_least_loaded_agent_for_its_max_concurrency(tmp_path):
    result, events = run(
        tmp_path,
        """name: spread
agents:
  small: {type: sleep, with: {seconds: 0.2}, max_concurrency: 1, capabilities: [work]}
  large: {type: sleep, with: {seconds: 0.2}, max_concurrency: 3, capabilities: [work]}
phases:
  - id: jobs
    foreach: [1, 2, 3, 4]
    capability: work
    with: {output: "{{ item }}"}
""",
    )
    assert result.exit_code == 0, result.output
    data = completed(events)["jobs"]
    assert data["output"] == [1, 2, 3, 4]
    # 0/1 and 0/3 tie (the first listed wins), then small is full (1/1): large takes the rest
    assert data["metadata"]["agents"] == {"large": 3, "small": 1}


def test_an_agent_whose_rate_limit_is_spent_is_passed_over(tmp_path):
    result, events = run(
        tmp_path,
        """name: rate
agents:
  metered: {type: echo, rate_limit: 1/h, capabilities: [answer]}
  spare: {type: echo, capabilities: [answer]}
mode: sequential
phases:
  - {id: first, capability: answer, with: {text: one}}
  - {id: second, capability: answer, with: {text: two}}
""",
    )
    assert result.exit_code == 0, result.output
    done = completed(events)
    assert done["first"]["metadata"]["agent"] == "metered"
    assert done["second"]["metadata"]["agent"] == "spare"  # metered has no token for an hour
    assert "agent metered" in result.stderr and "agent spare" in result.stderr
    # the agent chosen is in `orch status` and in `orch report`
    run_id = events[0]["run_id"]
    status = CliRunner().invoke(app, ["status", run_id])
    assert "agent metered" in status.stdout and "agent spare" in status.stdout
    page = tmp_path / "report.html"
    assert CliRunner().invoke(app, ["report", run_id, "-o", str(page)]).exit_code == 0
    html = page.read_text()
    assert "agent metered" in html and "agent spare" in html


def test_calls_fall_over_when_a_breaker_is_open_and_fail_when_every_one_is(tmp_path):
    result, events = run(
        tmp_path,
        """name: failover
agents:
  down:
    type: fail
    with: {message: "503 from the model"}
    circuit_breaker: {failures: 1, reset_after: 1h}
    capabilities: [answer]
  up: {type: fail, with: {times: 0}, capabilities: [answer]}
  also_down:
    type: fail
    with: {message: "503 again"}
    circuit_breaker: {failures: 1, reset_after: 1h}
    capabilities: [other]
phases:
  - id: first
    capability: answer
    retries: {attempts: 1, delay: 10ms}
    with: {output: ok}
  - id: second
    capability: answer
    depends_on: [first]
    with: {output: ok}
  - id: third
    capability: other
    retries: {attempts: 1, delay: 10ms}
    continue_on_error: true
    with: {output: never}
""",
    )
    assert result.exit_code == 0, result.output
    done = completed(events)
    assert done["first"]["metadata"]["agent"] == "up"
    assert done["first"]["attempts"] == 2
    retry = next(e for e in events if e["event"] == "phase_retry" and e["phase"] == "first")
    assert retry["data"]["error"] == "503 from the model"
    assert done["second"]["metadata"]["agent"] == "up" and done["second"]["attempts"] == 1
    failed = next(e for e in events if e["event"] == "phase_failed")
    assert failed["phase"] == "third"
    assert failed["data"]["error"] == (
        "no agent with capability 'other' can take the call: the circuit breaker of"
        " 'also_down' is open"
    )


def test_select_picks_an_agent_from_the_input_and_refuses_one_not_listed(tmp_path):
    text = """name: pick
inputs:
  tier: {type: string, default: cheap}
agents:
  cheap: {type: echo, with: {text: "cheap answer"}}
  premium: {type: echo, with: {text: "premium answer"}}
phases:
  - id: answer
    agent: {one_of: [cheap, premium], select: "{{ inputs.tier }}"}
outputs:
  answer: "{{ phases.answer.output }}"
"""
    result, events = run(tmp_path, text, "--input", "tier=premium")
    assert result.exit_code == 0, result.output
    assert events[-1]["data"]["outputs"] == {"answer": "premium answer"}
    assert completed(events)["answer"]["metadata"]["agent"] == "premium"
    result, events = run(tmp_path, text, "--input", "tier=gold")
    assert result.exit_code == 1
    assert (
        "phase 'answer' failed: agent select gave 'gold', which is not one of the agents"
        " in one_of ('cheap', 'premium')"
    ) in result.stderr
    assert "Traceback" not in result.output


def test_a_cached_capability_phase_is_answered_from_the_cache_the_second_time(tmp_path):
    ledger = tmp_path / "ledger"
    text = f"""name: cc
agents:
  e1: {{type: shell, capabilities: [say]}}
phases:
  - id: b
    capability: say
    cache: true
    with: {{command: "echo ran >> {ledger}; echo x"}}
"""
    first, _ = run(tmp_path, text)
    assert first.exit_code == 0, first.output
    second, events = run(tmp_path, text)
    assert second.exit_code == 0, second.output
    assert ledger.read_text().split() == ["ran"]  # the agent ran once
    done = completed(events)["b"]
    assert done["cached"] is True
    assert done["output"].strip() == "x" and done["metadata"]["agent"] == "e1"

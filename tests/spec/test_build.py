"""spec.build via load_workflow: defaults, modes, implied dependencies, secrets, durations, cron."""

from __future__ import annotations

import textwrap

import pytest

import orchestrator
from orchestrator.agents.registry import AgentRegistry
from orchestrator.errors import WorkflowInvalid
from orchestrator.plan import compile_plan
from orchestrator.spec.build import check_cron, parse_duration

CONTRACT_EXAMPLE = """\
# yaml-language-server: $schema=../schemas/workflow.schema.json
version: 1                       # format version; optional, default 1
name: account-analysis           # required
description: Account analysis with risk assessment
inputs:                          # typed run parameters: --input account_id=ACC-1
  account_id: {type: string, required: true}
  regions:    {type: array, default: [eu, us]}
agents:                          # named agent instances; a phase may also name a bare agent type
  crm:
    type: http                   # a type from the agent registry (entry points)
    with: {base_url: "http://127.0.0.1:8080"}
    max_concurrency: 3           # at most 3 phases on this agent at once
    rate_limit: 10/s             # token bucket, N/s or N/m
    circuit_breaker: {failures: 5, reset_after: 60s}
  analyst:
    type: llm
    with: {model: gpt-4o-mini, api_key: "{{ secrets.OPENAI_API_KEY }}"}
defaults:                        # applied to every phase unless it says otherwise
  timeout: 30s
  retries: {attempts: 3, backoff: exponential, delay: 1s, max_delay: 60s}
max_parallel: 10                 # phases running at once (CLI --max-parallel overrides)
mode: dag                        # dag (default) | sequential
timeout: 1h                      # whole run
error_handling:
  continue_on_error: false       # true: independent branches go on after a failure
  fallback_workflow: null        # path of a workflow to run if this one fails
  max_total_retries: 10          # cap on retries across the whole run
phases:
  - id: fetch_account
    agent: crm
    with: {method: GET, path: "/accounts/{{ inputs.account_id }}"}
    cache: true
  - id: analyze_risk
    agent: analyst
    with: {prompt: "Assess risk: {{ phases.fetch_account.output | tojson }}"}
  - id: history
    agent: crm
    depends_on: [fetch_account]
    with: {method: GET, path: "/history/{{ inputs.account_id }}"}
  - id: per_region
    foreach: "{{ inputs.regions }}"
    agent: shell
    with: {command: [echo, "{{ item }}"]}
  - id: recommend
    agent: analyst
    when: "phases.analyze_risk.output.score > 0.5"
    with: {prompt: "Recommend actions for {{ phases.history.output | tojson }}"}
    fallback: {agent: echo, with: {text: "no recommendation"}}
outputs:
  report: "{{ phases.recommend.output }}"
on_failure:                      # phases run when the run fails (notify, clean up)
  - id: notify
    agent: http
    with: {method: POST, url: "http://127.0.0.1:9000/alerts", json: {run: "{{ run.id }}"}}
on_success: []
finally: []                      # always, after everything else
schedule:                        # fired by `orch serve` (section 8)
  - cron: "0 2 * * *"
    timezone: Europe/Paris       # IANA name; default UTC
    inputs: {account_id: ACC-1}  # checked against `inputs:` at validate
    overlap: skip                # skip (default) | queue | allow | cancel_previous
    catchup: false               # after downtime: false = at most one missed run
  - run_at: "2026-12-31T12:00:00Z"   # a one-shot run
triggers:                        # other ways `orch serve` starts this workflow
  - webhook: true                # POST /api/workflows/account-analysis/runs
  - after: {workflow: nightly-import, status: completed}   # pub/sub between workflows
"""


@pytest.fixture(scope="module")
def registry():
    return AgentRegistry.from_entry_points()


def _load(tmp_path, text, registry):
    path = tmp_path / "w.yaml"
    path.write_text(textwrap.dedent(text))
    return orchestrator.load_workflow(path, registry=registry)


def test_defaults_durations_and_retries_are_applied(tmp_path, registry):
    wf = _load(
        tmp_path,
        """\
        name: demo
        timeout: 1h
        defaults:
          timeout: 30s
          retries: {attempts: 3, backoff: linear, delay: 500ms, max_delay: 1m}
          priority: high
        agents:
          api: {type: echo, rate_limit: 10/s, max_concurrency: 3,
                circuit_breaker: {failures: 2, reset_after: 1h30m}}
        phases:
          - id: a
            agent: api
          - id: b
            agent: echo
            timeout: 250ms
            retries: 1
            priority: low
            cache: {key: "k", ttl: 5m}
        """,
        registry,
    )
    a, b = wf.phases
    assert wf.timeout == 3600.0 and wf.source_hash and len(wf.source_hash) == 64
    assert a.timeout == 30.0 and a.priority == "high"
    assert (a.retries.attempts, a.retries.backoff, a.retries.delay, a.retries.max_delay) == (
        3,
        "linear",
        0.5,
        60.0,
    )
    assert b.timeout == 0.25 and b.retries.attempts == 1 and b.priority == "low"
    assert b.cache is not None and b.cache.ttl == 300.0
    api = wf.agents["api"]
    assert api.rate_limit is not None and api.rate_limit.rate == 10.0
    assert api.circuit_breaker is not None and api.circuit_breaker.reset_after == 5400.0
    assert a.location is not None and a.location.line == 11


def test_sequential_mode_chains_phases_and_sets_previous(tmp_path, registry):
    wf = _load(
        tmp_path,
        """\
        name: chain
        mode: sequential
        phases:
          - {id: research, agent: echo, with: {text: notes}}
          - {id: write, agent: echo, with: {text: "draft of {{ previous.output }}"}}
          - {id: edit, agent: echo, with: {text: "{{ previous.output }}"}}
        """,
        registry,
    )
    assert [p.depends_on for p in wf.phases] == [(), ("research",), ("write",)]
    assert [p.previous for p in wf.phases] == [None, "research", "write"]
    assert compile_plan(wf).order == ("research", "write", "edit")


def test_phase_references_become_implied_dependencies(tmp_path, registry):
    wf = _load(
        tmp_path,
        """\
        name: implied
        inputs: {who: {type: string, default: you}}
        phases:
          - {id: a, agent: echo, with: {text: "hi {{ inputs.who }}"}}
          - id: b
            agent: echo
            when: "phases.a.status == 'completed'"
            with: {text: "{{ phases.a.output }} {{ secrets.TOKEN }}"}
          - id: c
            agent: echo
            depends_on: [a]
            foreach: "{{ phases.b.output }}"
            with: {text: "{{ item }} #{{ index }} {{ phases.a.output }}"}
        outputs: {all: "{{ phases.c.output }}"}
        on_failure:
          - {id: alert, agent: echo, with: {text: "failed after {{ phases.a.output }}"}}
        """,
        registry,
    )
    a, b, c = wf.phases
    assert b.implied_deps == ("a",) and b.depends_on == ()
    assert c.depends_on == ("a",) and c.implied_deps == ("b",)
    assert wf.secret_names == frozenset({"TOKEN"})
    assert wf.on_failure[0].id == "alert" and wf.on_failure[0].implied_deps == ()
    assert wf.inputs["who"].default == "you"


def test_a_with_key_named_compensate_still_implies_its_dependency(tmp_path, registry):
    # only the phase's own `compensate:` key may read any phase without depending on it
    wf = _load(
        tmp_path,
        """\
        name: named
        phases:
          - {id: a, agent: echo, with: {text: A}}
          - {id: b, agent: echo, with: {text: {compensate: "{{ phases.a.output }}"}}}
        """,
        registry,
    )
    assert wf.phases[1].implied_deps == ("a",)


def test_the_contract_example_is_valid(tmp_path, registry):
    wf = _load(tmp_path, CONTRACT_EXAMPLE, registry)
    assert [p.id for p in wf.phases][:2] == ["fetch_account", "analyze_risk"]
    assert sorted(wf.phase("recommend").implied_deps) == ["analyze_risk", "history"]
    assert wf.secret_names == frozenset({"OPENAI_API_KEY"})
    assert wf.schedule[0].cron == "0 2 * * *"


def test_load_workflow_raises_with_every_error_and_validate_returns_them(tmp_path, registry):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nphases:\n  - {id: a, agent: ech}\n  - {id: a, agent: echo}\n")
    with pytest.raises(WorkflowInvalid) as info:
        orchestrator.load_workflow(path, registry=registry)
    assert [p.location.line for p in info.value.problems] == [3, 4]
    assert orchestrator.validate(path, registry=registry) == list(info.value.problems)


def test_a_plugin_that_fails_to_load_is_one_problem_at_its_first_use(tmp_path):
    import importlib.metadata as md

    ep = md.EntryPoint("broken", "no_such_module_xyz:Agent", "orchestrator.agents")
    registry = AgentRegistry.from_entry_points(entry_points=[ep])
    path = tmp_path / "w.yaml"
    path.write_text(
        "name: x\nphases:\n  - id: a\n    agent: broken\n  - id: b\n    agent: broken\n"
    )
    problems = orchestrator.validate(path, registry=registry)
    assert [(p.location.line, p.location.col) for p in problems] == [(4, 12)]
    assert "failed to load" in problems[0].message and "ModuleNotFoundError" in problems[0].message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        (2, 2.0),
        (0.25, 0.25),
        ("1.5s", 1.5),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["forever", "5", "m5", "-1s", "", True, -3, "1d"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("expression", "ok"),
    [
        ("0 2 * * *", True),
        ("*/15 9-17 * * mon-fri", True),
        ("0 0 1,15 jan,jul *", True),
        ("@daily", True),
        ("60 * * * *", False),
        ("* 24 * * *", False),
        ("* * 0 * *", False),
        ("* * * 13 *", False),
        ("* * * * 8", False),
        ("*/0 * * * *", False),
        ("5-1 * * * *", False),
        ("* * * *", False),
        ("a b c d e", False),
    ],
)
def test_cron(expression, ok):
    assert (check_cron(expression) is None) is ok


def test_integral_floats_count_as_integers_and_infinity_is_no_duration(tmp_path, registry):
    wf = _load(
        tmp_path,
        """\
        name: demo
        max_parallel: 4.0
        phases:
          - {id: a, agent: echo, retries: 2.0, estimated_duration: 3}
        """,
        registry,
    )
    assert wf.max_parallel == 4 and wf.phases[0].retries.attempts == 2
    path = tmp_path / "inf.yaml"
    path.write_text("name: x\ntimeout: .inf\nphases: [{id: a, agent: echo}]\n")
    [p] = orchestrator.validate(path, registry=registry)
    assert (p.location.line, p.location.col) == (2, 10) and "is Infinity" in p.message

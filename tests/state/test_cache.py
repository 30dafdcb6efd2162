"""The phase cache over the real store: hits, misses, ttl, --no-cache, and secrets kept out."""

from __future__ import annotations

import asyncio
import sqlite3

from orchestrator.agents.registry import AgentRegistry
from orchestrator.engine.cache import StoreCache, cache_key
from orchestrator.engine.result import RunOptions
from orchestrator.engine.runner import execute
from orchestrator.plan import compile_plan
from orchestrator.spec import load_workflow
from orchestrator.state.sqlite import open_store

WF = """
name: cached
inputs:
  who: {type: string, default: world}
phases:
  - id: greet
    agent: echo
    cache: {ttl: 60}
    with: {text: "hello {{ inputs.who }}", ledger: "LEDGER"}
  - id: plain
    agent: echo
    with: {text: "not cached", ledger: "LEDGER"}
"""


def _run(tmp_path, *, inputs=None, now=1000.0, no_cache=False, text=WF):
    path = tmp_path / "wf.yaml"
    path.write_text(text.replace("LEDGER", str(tmp_path / "ledger")))
    plan = compile_plan(load_workflow(path))
    store = open_store(tmp_path / "state")
    cache = StoreCache(store, plan.workflow, clock=lambda: now)
    events = []

    async def go():
        try:
            return await execute(
                plan,
                inputs=inputs,
                registry=AgentRegistry.from_entry_points(),
                options=RunOptions(cache=cache, no_cache=no_cache),
                sinks=[events.append, store.record],
            )
        finally:
            await store.aclose()

    result = asyncio.run(go())
    assert result.status == "completed", result.error
    cached = {e.phase for e in events if e.event == "phase_completed" and e.data["cached"]}
    return result, cached


def _executions(tmp_path):
    path = tmp_path / "ledger"
    return [line.split()[1] for line in path.read_text().splitlines()] if path.exists() else []


def test_an_identical_call_is_served_from_the_cache(tmp_path):
    first, cached = _run(tmp_path)
    assert cached == set()
    second, cached = _run(tmp_path)
    assert cached == {"greet"}
    assert second.phases["greet"].output == first.phases["greet"].output == "hello world"
    assert _executions(tmp_path) == ["greet", "plain", "plain"]


def test_another_input_misses_and_the_ttl_expires(tmp_path):
    _run(tmp_path)
    _, cached = _run(tmp_path, inputs={"who": "there"})
    assert cached == set()
    _, cached = _run(tmp_path, now=1059.0)
    assert cached == {"greet"}
    _, cached = _run(tmp_path, now=1061.0)  # written at 1000 with ttl 60
    assert cached == set()


def test_no_cache_neither_reads_nor_writes(tmp_path):
    _run(tmp_path, no_cache=True)
    _, cached = _run(tmp_path)
    assert cached == set()
    _, cached = _run(tmp_path, no_cache=True)
    assert cached == set()


def test_the_key_covers_agent_type_config_input_and_user_key():
    base = cache_key("echo", {}, {"text": "a"})
    assert base == cache_key("echo", {}, {"text": "a"})
    assert (
        len(
            {
                base,
                cache_key("noop", {}, {"text": "a"}),
                cache_key("echo", {"x": 1}, {"text": "a"}),
                cache_key("echo", {}, {"text": "b"}),
                cache_key("echo", {}, {"text": "a"}, "v2"),
            }
        )
        == 5
    )


def test_an_output_holding_a_secret_is_never_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKEN_X", "s3cr3t-value-123")
    text = """
name: leaky
phases:
  - id: leak
    agent: echo
    cache: true
    with: {text: "token={{ secrets.TOKEN_X }}"}
"""
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    plan = compile_plan(load_workflow(path))
    store = open_store(tmp_path / "state")
    cache = StoreCache(store, plan.workflow)  # the engine keeps the secret out

    async def go():
        try:
            return await execute(
                plan,
                registry=AgentRegistry.from_entry_points(),
                options=RunOptions(cache=cache),
                sinks=[store.record],
            )
        finally:
            await store.aclose()

    asyncio.run(go())
    conn = sqlite3.connect(store.path)
    # an output that held a secret is not cached at all: masked, it would be served as
    # "token=***" (issue 9, item 5); the secret never reaches the database either way
    assert conn.execute("SELECT count(*) FROM cache").fetchone()[0] == 0
    dump = "\n".join(conn.iterdump())
    assert "s3cr3t-value-123" not in dump
    conn.close()

"""workflows/llm-*.yaml run offline through `orch run` against the fake OpenAI-compatible server."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from orchestrator.cli import app
from tests.servers import FakeOpenAI

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
KEY = "sk-fake-key-for-tests-0042"


def run(name: str, *args: str, base_url: str):
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": base_url}
    return CliRunner().invoke(
        app, ["run", str(WORKFLOWS / name), "--events", "jsonl", *args], env=env
    )


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def chain_answer(request: dict) -> str:
    system = request["messages"][0]["content"]
    user = request["messages"][-1]["content"]
    if "researcher" in system:
        return "- tide pools hold water at low tide"
    if "writer" in system:
        assert "- tide pools hold water at low tide" in user  # previous.output arrived
        return "Tide pools keep water when the sea goes out."
    assert user == "Tide pools keep water when the sea goes out."
    return "Tide pools hold water at low tide."


def test_research_write_edit_chain_with_the_base_url_from_the_environment():
    with FakeOpenAI(answer=chain_answer) as srv:
        result = run(
            "llm-research-write-edit.yaml",
            "--input",
            "topic=tide pools",
            "--input",
            "model=llama3.2",
            base_url=srv.base_url,
        )
        requests = [r.json() for r in srv.requests]
        auth = {r.headers["authorization"] for r in srv.requests}
    assert result.exit_code == 0, result.output
    evs = events(result.stdout)
    order = [
        (e["event"], e.get("phase"))
        for e in evs
        if e["event"] in ("phase_started", "phase_completed")
    ]
    assert order == [
        ("phase_started", "research"), ("phase_completed", "research"),
        ("phase_started", "write"), ("phase_completed", "write"),
        ("phase_started", "edit"), ("phase_completed", "edit"),
    ]  # fmt: skip
    final = evs[-1]
    assert final["event"] == "workflow_completed"
    assert final["data"]["outputs"] == {
        "article": "Tide pools hold water at low tide.",
        "notes": "- tide pools hold water at low tide",
    }
    assert final["data"]["tokens"]["total"] > 0
    assert [r["model"] for r in requests] == ["llama3.2"] * 3
    assert all(r["stream"] for r in requests)
    assert auth == {f"Bearer {KEY}"}
    assert KEY not in result.output


def triage_answer(request: dict) -> str:
    system = request["messages"][0]["content"]
    if "route support tickets" in system:
        return '{"handoff": "billing", "summary": "double charge"}'
    assert "billing team" in system
    assert request["messages"][-1]["content"].startswith("Handed over by triage: ")
    return "We refunded the second charge."


def test_triage_hands_off_to_billing():
    with FakeOpenAI(answer=triage_answer) as srv:
        result = run(
            "llm-triage-handoff.yaml",
            "--input",
            "ticket=I was charged twice",
            base_url=srv.base_url,
        )
        first = srv.requests[0].json()
        keys = [r.headers.get("idempotency-key") for r in srv.requests]
    assert result.exit_code == 0, result.output
    evs = events(result.stdout)
    run_id = evs[0]["run_id"]
    # each turn is its own call: triage (turn 1), billing (turn 2)
    assert keys == [f"{run_id}/answer/1", f"{run_id}/answer/1#2"]
    turns = [
        e["data"]["turn"]
        for e in evs
        if e["event"] == "phase_stream" and "turn" in e.get("data", {})
    ]
    assert [(t["agent"], t["next"]) for t in turns] == [("triage", "billing"), ("billing", None)]
    assert evs[-1]["data"]["outputs"] == {"reply": "We refunded the second charge."}
    assert first["response_format"] == {"type": "json_object"}
    assert first["messages"][-1]["content"] == "Ticket: I was charged twice"

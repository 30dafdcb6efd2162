"""Every workflow in workflows/ runs through the real `orch run` to its documented result."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
SCHEMA_LINE = "# yaml-language-server: $schema=../schemas/workflow.schema.json"

# name -> (extra arguments, expected exit code, expected outputs (a subset))
EXPECTED: dict[str, tuple[list[str], int, dict]] = {
    "demo": ([], 0, {"risk_attempts": 2}),
    "software-pipeline": ([], 0, {"approved": True, "coder_attempts": 2}),
    "account-analysis": (
        [],
        0,
        {
            "recommendation": "review ACC-1: 3 overdrafts, history opened 2019, upgraded 2022",
            "risk_score": 0.7,
        },
    ),
    "content-chain": ([], 0, {"article": "edited: draft based on three facts about AI agents"}),
    "validate-branch": (
        [],
        0,
        {"valid_branch": "completed", "invalid_branch": "skipped", "report": "valid=True"},
    ),
    "fan-out-fan-in": (
        [],
        0,
        {"count": 6, "docs": ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "f.txt"]},
    ),
    "resilience": ([], 0, {"combined": ["fresh data", "cached data"], "flaky_attempts": 3}),
    "saga": ([], 1, {"flight": "FL-123"}),  # meant to fail, to show the compensations
    "capability-routing": (
        [],
        0,
        {
            "summaries": [f"summary of {s}" for s in ("intro", "methods", "results")]
            + ["summary of discussion", "summary of appendix"],
            "abstract": "abstract from 5 summaries",
        },
    ),
    "review-loop": ([], 0, {"rounds": 3}),
    "review-round": ([], 0, {"approved": False, "round": 1}),
}


def ours() -> list[Path]:
    # llm-*.yaml need a model endpoint; the agents' tests run them against a local server.
    # approval-*.yaml wait for a person: tests/cli/test_approve.py decides from another shell.
    return sorted(
        p for p in WORKFLOWS.glob("*.yaml") if not p.name.startswith(("llm-", "approval-"))
    )


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / ".orch"))


def run(path: Path, *args: str, tmp_path: Path):
    out = tmp_path / "outputs.json"
    result = CliRunner().invoke(
        app, ["run", str(path), "--events", "jsonl", "--output-file", str(out), *args]
    )
    events = [json.loads(line) for line in result.stdout.splitlines()]
    outputs = json.loads(out.read_text()) if out.exists() else None
    return result, events, outputs


def test_every_workflow_has_a_documented_result():
    assert {p.stem for p in ours()} == set(EXPECTED)


@pytest.mark.parametrize("path", ours(), ids=lambda p: p.stem)
def test_the_workflow_starts_with_the_schema_line(path):
    assert path.read_text(encoding="utf-8").splitlines()[0] == SCHEMA_LINE


@pytest.mark.parametrize("path", ours(), ids=lambda p: p.stem)
def test_the_workflow_runs_to_its_documented_result(path, tmp_path):
    args, code, expected = EXPECTED[path.stem]
    result, events, outputs = run(path, *args, tmp_path=tmp_path)
    assert "Traceback" not in result.output
    assert result.exit_code == code, result.stderr
    assert outputs is not None
    assert {k: outputs.get(k) for k in expected} == expected
    assert events[-1]["event"] == ("workflow_completed" if code == 0 else "workflow_failed")
    if path.stem == "demo":  # the demo runs for a few seconds: one run, checked here
        check_the_demo_runs_its_analyses_in_parallel_and_retries_the_flaky_one(events, outputs)
    if path.stem == "capability-routing":
        check_the_calls_avoid_the_agent_whose_breaker_opened(events)
    if path.stem == "review-loop":
        rounds = [e["data"]["iteration"] for e in events if e["event"] == "phase_iteration"]
        assert rounds == [1, 2, 3]  # until output.approved, which the 3rd round gives
    if path.stem == "saga":
        undone = [e["phase"] for e in events if e["event"] == "phase_compensated"]
        assert undone == ["book_hotel", "book_flight"]  # reverse order of completion
        assert all(e["data"]["ok"] for e in events if e["event"] == "phase_compensated")
        assert "card declined" in result.stderr
        assert re.search(
            r"phase book_hotel compensating\n.* phase book_hotel compensated\n", result.stderr
        )


def check_the_calls_avoid_the_agent_whose_breaker_opened(events):
    done = {e["phase"]: e["data"] for e in events if e["event"] == "phase_completed"}
    # the broken agent is never the one that answered; `translate` has one agent only
    assert done["abstract"]["metadata"]["agent"] in ("fast", "slow")
    assert done["translation"]["metadata"]["agent"] == "slow"
    retried = [e for e in events if e["event"] == "phase_retry"]
    assert retried and all("overloaded" in e["data"]["error"] for e in retried)
    # once its breaker is open no call goes to it: the abstract needs no retry
    assert done["abstract"]["attempts"] == 1


def check_the_demo_runs_its_analyses_in_parallel_and_retries_the_flaky_one(events, outputs):
    started = {e["phase"]: i for i, e in enumerate(events) if e["event"] == "phase_started"}
    ended = {e["phase"]: i for i, e in enumerate(events) if e["event"] == "phase_completed"}
    # the three analyses overlap: each starts before any of them completes
    analyses = ("market", "risk", "per_topic")
    assert max(started[p] for p in analyses) < min(ended[p] for p in analyses)
    assert started["report"] > max(ended[p] for p in analyses)
    retries = [e for e in events if e["event"] == "phase_retry"]
    assert [e["phase"] for e in retries] == ["risk"]
    progress = [
        e["data"]["progress"]
        for e in events
        if e["event"] == "phase_stream" and "progress" in e.get("data", {})
    ]
    assert progress[-1] == {"done": 5, "total": 5}
    assert len(outputs["report"]["topics"]) == 5


def test_the_branching_workflow_takes_the_other_branch_for_a_bad_order(tmp_path):
    result, _, outputs = run(
        WORKFLOWS / "validate-branch.yaml", "--input", "order_total=-5", tmp_path=tmp_path
    )
    assert result.exit_code == 0, result.stderr
    assert outputs == {
        "valid_branch": "skipped",
        "invalid_branch": "completed",
        "report": "valid=False",
    }


def test_the_readme_table_lists_every_workflow_and_each_one_validates():
    import os
    import subprocess
    import sys

    readme = (WORKFLOWS.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("**The workflows in `workflows/`**")
    table = readme[start : readme.index("\n\n", readme.index("| file |", start))]
    listed = re.findall(r"^\| `([^`]+\.yaml)` \|", table, flags=re.MULTILINE)
    on_disk = sorted(p.name for p in WORKFLOWS.glob("*.yaml"))
    assert sorted(listed) == on_disk  # a new workflow gets a row, a removed one loses it
    assert len(listed) == len(set(listed))
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", str(WORKFLOWS)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for name in listed:
        assert re.search(rf"^\S*workflows/{re.escape(name)}: ok \(", done.stdout, re.M), done.stdout

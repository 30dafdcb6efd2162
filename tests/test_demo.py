"""`make demo`'s script: a fake model server, then validate, graph and run of a team workflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from fake_llm import start  # noqa: E402


def test_the_demo_runs_llm_agents_against_its_own_server_next_to_offline_ones(tmp_path):
    env = {**os.environ, "ORCH_STATE_DIR": str(tmp_path / "state"), "NO_COLOR": "1"}
    env.pop("OPENAI_BASE_URL", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "run_demo.py"), "--events", "jsonl"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "llm-team-demo.yaml: ok (6 phases, 4 named agents, 3 agent types: fail, llm, sleep)" in (
        done.stdout
    )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    final = events[-1]
    assert final["event"] == "workflow_completed"
    outputs = final["data"]["outputs"]
    assert outputs["report"].startswith("Edited: Our findings on electric cargo bikes.")
    assert [t.split(":")[0] for t in outputs["topics"]] == ["pricing", "safety", "batteries"]
    assert outputs["risk_attempts"] == 2
    streamed = {e["phase"] for e in events if e["event"] == "phase_stream" and "text" in e["data"]}
    assert {"research", "write", "edit"} <= streamed  # tokens arrived as they were generated
    assert final["data"]["tokens"]["total"] > 0


def test_the_fake_server_answers_like_the_chat_completions_api():
    import httpx

    server, url = start()
    try:
        body = {
            "model": "m",
            "messages": [
                {"role": "system", "content": "You are an analyst."},
                {"role": "user", "content": "Topic: safety for bikes."},
            ],
        }
        reply = httpx.post(f"{url}/chat/completions", json=body).json()
    finally:
        server.shutdown()
        server.server_close()
    assert reply["choices"][0]["message"]["content"].startswith("safety: solid")
    assert reply["usage"]["total_tokens"] == (
        reply["usage"]["prompt_tokens"] + reply["usage"]["completion_tokens"]
    )

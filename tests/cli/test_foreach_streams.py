"""The streams of a foreach phase's parallel items, as a user sees them: each item's text on
its own lines after its index (``per_topic[1] | ...``) in the plain lines of ``orch run``,
in ``orch logs RUN --phase per_topic`` and in the live display, never merged into one line."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.events import Event
from orchestrator.render.console import make_console
from orchestrator.render.progress import LiveProgress, RunView

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))

from fake_llm import start  # noqa: E402 (examples/ is not a package)

DEMO = ROOT / "workflows" / "llm-team-demo.yaml"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`orch run` of `make demo`'s workflow against its fake model: (env, stderr, outputs)."""
    state = tmp_path_factory.mktemp("state")
    server, url = start()
    env = {**os.environ, "ORCH_STATE_DIR": str(state), "NO_COLOR": "1", "OPENAI_BASE_URL": url}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", "run", str(DEMO)],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stdout + done.stderr
    return env, done.stderr, json.loads(done.stdout)


def orch(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def run_id(stderr: str) -> str:
    found = re.search(r"started \(run (\w+),", stderr)
    assert found, stderr
    return found.group(1)


def test_orch_run_writes_each_foreach_items_stream_on_its_own_lines_after_its_index(demo_run):
    _, stderr, outputs = demo_run
    topics = outputs["topics"]  # pricing, safety, batteries: one analyst answer per item
    assert len(topics) == 3
    streamed: dict[int, str] = {}
    for index, text in re.findall(r" phase per_topic\[(\d+)\] \| (.*)", stderr):
        streamed[int(index)] = streamed.get(int(index), "") + text
    # each item's text whole under its own index (a long pause may split it, never merge it)
    assert streamed == dict(enumerate(topics)), stderr
    assert " phase per_topic | " not in stderr  # no line mixing the items' tokens


def test_orch_logs_names_the_foreach_item_of_each_streamed_token(demo_run):
    env, stderr, outputs = demo_run
    lines = orch(env, "logs", run_id(stderr), "--phase", "per_topic").splitlines()
    # the text events (with an attempt); an item's progress line names it too: per_topic[2] 3/3
    streams = [line for line in lines if re.search(r" phase_stream .* #1 ", line)]
    items = [re.search(r" phase_stream\s+per_topic(\[\d+\]) #1 ", line) for line in streams]
    assert streams and all(items), "\n".join(lines)
    assert {m.group(1) for m in items if m} == {"[0]", "[1]", "[2]"}
    for index, topic in enumerate(outputs["topics"]):  # each item's tokens, in order
        words = [
            line.split(f"per_topic[{index}] #1", 1)[1].strip()
            for line in streams
            if f"per_topic[{index}] #1" in line
        ]
        assert " ".join(w for w in words if w) == " ".join(topic.split()), words


def test_the_live_display_shows_the_newest_item_stream_after_its_index(demo_run):
    # the real run's stored events, drawn as the live display draws them while it runs
    env, stderr, outputs = demo_run
    events = [
        Event.from_dict(json.loads(line))
        for line in orch(env, "logs", run_id(stderr), "--json").splitlines()
        if line.strip()
    ]
    view = RunView()
    seen = False
    for event in events:
        if event.event == "phase_completed" and event.phase == "per_topic":
            break
        view(event)
        seen = seen or (event.phase == "per_topic" and event.event == "phase_stream")
    assert seen and view.phases["per_topic"].state == "running"
    last = [
        e
        for e in events
        if e.phase == "per_topic" and e.event == "phase_stream" and "text" in e.data
    ][-1]
    item = last.data["item"]
    console = make_console(io.StringIO(), force_terminal=False, width=200, environ={})
    console.print(LiveProgress(view, console).render(now=last.ts))
    row = next(line for line in console.file.getvalue().splitlines() if " per_topic " in line)
    # that item's own text only, after its index (never the other items' tokens)
    assert f"[{item}] {outputs['topics'][item]}" in row, row
    others = [t for i, t in enumerate(outputs["topics"]) if i != item]
    assert not any(t.split(":")[0] in row for t in others), row


FLAKY_ITEMS = """\
name: flaky-items
phases:
  - id: each
    foreach: [a, b, c]
    agent: fail
    retries: {attempts: 1, backoff: fixed, delay: 30s}
    with: {times: "{{ 1 if item == 'b' else 0 }}", output: "{{ item }}"}
"""


def test_one_items_retry_does_not_show_the_whole_foreach_phase_waiting(tmp_path):
    # the real run's events up to item 1's retry, drawn as the live display draws them
    wf = tmp_path / "wf.yaml"
    wf.write_text(FLAKY_ITEMS)
    env = {**os.environ, "ORCH_STATE_DIR": str(tmp_path / "state"), "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(wf), "--events", "jsonl"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    view = RunView()
    retry = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = Event.from_dict(json.loads(line))
            view(event)
            if event.event == "phase_retry":
                retry = event
                break
    finally:
        proc.kill()
        proc.communicate()
    assert retry is not None and retry.data["item"] == 1
    console = make_console(io.StringIO(), force_terminal=False, width=160, environ={})
    console.print(LiveProgress(view, console).render(now=retry.ts + 1))
    row = next(line for line in console.file.getvalue().splitlines() if " each " in line)
    assert "running" in row and "waiting" not in row, row  # items 0 and 2 run on
    assert "attempt 2 in" not in row, row
    assert view.phases["each"].note.startswith("[1] attempt 1 failed; attempt 2 in 30s")

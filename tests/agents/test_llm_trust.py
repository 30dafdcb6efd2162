"""The llm agent streaming through the real `orch run` against the fake OpenAI-compatible
server: text flows while a long secret is masked (item 19), and an error in the middle
of a stream reads as the API's message (item 20)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.events import SecretMasker
from tests.servers import FakeOpenAI, Reply

# As long as some real keys (a 164-character key: its masked forms reach 219 characters).
LONG_KEY = "sk-proj-" + "Ab3_" * 39


def run(tmp_path, base_url: str) -> tuple[int, list[dict]]:
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "name: talk\nphases:\n  - id: write\n    agent: llm\n    with:\n"
        f"      base_url: {base_url}\n      model: m1\n      prompt: say it\n"
        '      api_key: "{{ secrets.OPENAI_API_KEY }}"\n'
    )
    res = CliRunner().invoke(
        app,
        ["run", str(wf), "--events", "jsonl", "--state-dir", str(tmp_path / "st")],
        env={"OPENAI_API_KEY": LONG_KEY},
    )
    assert "Traceback" not in res.output
    return res.exit_code, [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]


def test_a_long_secret_does_not_hold_back_the_streamed_text(tmp_path):
    with FakeOpenAI(["The quick brown fox jumps over the lazy dog"]) as srv:
        code, events = run(tmp_path, srv.base_url)
    assert code == 0
    pieces = [
        e["data"]["text"] for e in events if e["event"] == "phase_stream" and "text" in e["data"]
    ]
    # the words are shown as they come, not all at once when the stream ends; only a
    # letter that could begin the key ("s" of " jumps": the key starts "sk-") waits a piece
    assert "".join(pieces) == "The quick brown fox jumps over the lazy dog"
    assert pieces[:4] == ["The", " quick", " brown", " fox"]
    assert len(pieces) >= 9


def test_a_secret_split_across_pieces_is_still_masked():
    masker = SecretMasker([LONG_KEY])
    stream = masker.stream()
    text = f"key: {LONG_KEY} end"
    cuts = [0, 3, 7, 9, 60, 61, 150, 170, len(text)]
    out = (
        "".join(stream.feed(text[a:b]) for a, b in zip(cuts, cuts[1:], strict=False))
        + stream.flush()
    )
    assert out == "key: *** end"
    # a piece that only resembles the start of the key flows at once
    assert masker.stream().feed("sk-pro and more") == "sk-pro and more"
    held = masker.stream()
    assert held.feed("text sk-proj-Ab") == "text "  # could be the key: held back
    assert held.feed("c") + held.flush() == "sk-proj-Abc"


def test_an_error_in_the_middle_of_a_stream_shows_its_message(tmp_path):
    chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "m1"}
    events = [
        {**chunk, "choices": [{"index": 0, "delta": {"content": "Hello"}}]},
        {"error": {"message": "upstream overloaded, try later", "type": "server_error"}},
    ]
    body = [f"data: {json.dumps(e)}\n\n".encode() for e in events]
    reply = Reply(headers={"Content-Type": "text/event-stream"}, chunks=body)
    with FakeOpenAI([reply]) as srv:
        code, seen = run(tmp_path, srv.base_url)
    assert code == 1
    (failed,) = [e for e in seen if e["event"] == "phase_failed"]
    assert failed["data"]["error"] == "the model failed: upstream overloaded, try later"

"""A small OpenAI-compatible chat-completions server for the demo: no model, no network.

    python examples/fake_llm.py [--port 0]   # prints its base URL, serves until Ctrl-C

``POST /v1/chat/completions`` answers in the voice its system message asks for
(researcher, analyst, writer, editor), built from the words of the prompt, so a
chain of llm phases reads like one; ``stream: true`` sends one server-sent event
per word (a little apart, so the live display shows tokens arriving) and the
usage when ``stream_options.include_usage`` is set. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WORD_DELAY = 0.015  # seconds between streamed words


def answer(system: str, prompt: str) -> str:
    """A deterministic reply in the role the system message names."""
    named = re.search(r"(?:Topic|about|Research):?\s+([^.\n]+?)(?:\.|\n|$| for )", prompt)
    topic = named.group(1).strip() if named else "the subject"
    role = system.lower()
    if "research" in role:
        return (
            f"- {topic}: demand grew steadily over the last three years\n"
            f"- the main costs are parts and logistics\n"
            f"- two competitors lead; neither serves small buyers well"
        )
    if "analy" in role:
        verdict = {"safety": "solid, once brakes are certified"}.get(topic, "promising")
        return f"{topic}: {verdict}; one open risk is the supply of parts"
    if "edit" in role:
        body = prompt.split("\n", 1)[-1].strip()
        return "Edited: " + re.sub(r"\s+", " ", body)[:400]
    if "writ" in role:
        return (
            f"Our findings on {topic}. Demand is growing, costs are known, and the "
            "field leaves room for a focused newcomer. We recommend a small pilot."
        )
    return f"Noted: {topic}."


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # quiet: the demo shows orch's output
        pass

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self.send_error(404)
            return
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        messages = request.get("messages") or []
        system = " ".join(m.get("content", "") for m in messages if m.get("role") == "system")
        prompt = " ".join(m.get("content", "") for m in messages if m.get("role") == "user")
        text = answer(system, prompt)
        usage = {
            "prompt_tokens": len((system + " " + prompt).split()),
            "completion_tokens": len(text.split()),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        model = request.get("model", "fake")
        if not request.get("stream"):
            body = {
                "id": "demo",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        base = {"id": "demo", "object": "chat.completion.chunk", "model": model}
        pieces = re.findall(r"\S+\s*", text)
        for n, piece in enumerate(pieces):
            last = n == len(pieces) - 1
            finish = "stop" if last else None
            choice = {"index": 0, "delta": {"content": piece}, "finish_reason": finish}
            self._event({**base, "choices": [choice]})
            time.sleep(WORD_DELAY)
        if (request.get("stream_options") or {}).get("include_usage"):
            self._event({**base, "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()


def start(port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Serve on 127.0.0.1 in a daemon thread; the server and its base URL (…/v1)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def main() -> None:
    """Serve until interrupted, printing the base URL to use as OPENAI_BASE_URL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    server, url = start(parser.parse_args().port)
    print(url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()

"""Real HTTP servers for tests: 127.0.0.1, an ephemeral port, one thread each.

``HTTPServer(routes)`` answers with scripted replies and records every request;
``FakeOpenAI()`` speaks the chat-completions API (streaming server-sent events
with a final usage chunk, non-streaming JSON, 429 with Retry-After) the way the
real API does. Both are context managers::

    with HTTPServer({("GET", "/x"): Reply(200, json={"a": 1})}) as srv:
        httpx.get(srv.url + "/x")
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeOpenAI", "HTTPServer", "Recorded", "Reply"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client may drop an idle keep-alive connection (a reset while the handler
        # waits for the next request line): that is the client's right, not a server
        # error. The default prints a traceback to sys.stderr, which CliRunner mixes
        # into the output a test asserts on.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@dataclass
class Reply:
    """A scripted response. ``chunks`` (with ``delay`` seconds before each) streams the body."""

    status: int = 200
    json: Any = None
    body: bytes | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks: Iterable[bytes] | None = None
    delay: float = 0.0


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    client_port: int = 0  # the client's side of the connection: one port = one pooled connection

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[Recorded], Reply]


class HTTPServer:
    """A threaded HTTP/1.1 server; ``routes`` maps (METHOD, path) to a Reply, a list of
    Replies (served in turn, the last one repeated) or a function of the request."""

    def __init__(self, routes: dict[tuple[str, str], Reply | list[Reply] | Handler] | None = None):
        self.routes: dict[tuple[str, str], Any] = dict(routes or {})
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def setup(self) -> None:
                super().setup()
                # headers and body go out as separate writes: without this, Nagle's
                # algorithm and delayed ACKs add ~40 ms to every keep-alive request
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                rec = Recorded(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    self.client_address[1],
                )
                with outer._lock:
                    outer.requests.append(rec)
                reply = outer._reply_for(rec)
                self._send(reply)

            def _send(self, reply: Reply) -> None:
                self.send_response(reply.status)
                headers = dict(reply.headers)
                if reply.chunks is not None:
                    headers.setdefault("Transfer-Encoding", "chunked")
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    try:
                        for chunk in reply.chunks:
                            if reply.delay:
                                time.sleep(reply.delay)
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.flush()
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        self.close_connection = True
                    return
                if reply.json is not None:
                    data = json.dumps(reply.json).encode()
                    headers.setdefault("Content-Type", "application/json")
                elif isinstance(reply.body, str):
                    data = reply.body.encode()
                    headers.setdefault("Content-Type", "text/plain; charset=utf-8")
                else:
                    data = reply.body or b""
                headers["Content-Length"] = str(len(data))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _reply_for(self, rec: Recorded) -> Reply:
        with self._lock:
            route = self.routes.get((rec.method, rec.path))
            if isinstance(route, list):
                route = route.pop(0) if len(route) > 1 else route[0]
        if route is None:
            return Reply(404, json={"error": f"no route {rec.method} {rec.path}"})
        if callable(route):
            return route(rec)
        return route

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeOpenAI(HTTPServer):
    """An OpenAI-compatible ``POST /v1/chat/completions``.

    ``replies`` is a list of answers served in turn (the last repeated); each is
    a string (the assistant's text), or a Reply (sent as it is: a 429, say).
    ``answer`` (a function of the request's JSON) replaces the list when given.
    Streaming requests get ``data: {chunk}`` events, one per word, a usage chunk
    when ``stream_options.include_usage`` is set, then ``data: [DONE]``.
    """

    def __init__(
        self,
        replies: list[str | Reply] | None = None,
        answer: Callable[[dict[str, Any]], str | Reply] | None = None,
    ) -> None:
        self.replies = list(replies or ["ok"])
        self.answer = answer
        self.reported: list[int] = []  # the total_tokens of each answer sent, in order
        super().__init__({("POST", "/v1/chat/completions"): self._complete})

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def _next(self, request: dict[str, Any]) -> str | Reply:
        if self.answer is not None:
            return self.answer(request)
        with self._lock:
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    def _complete(self, rec: Recorded) -> Reply:
        request = rec.json()
        answer = self._next(request)
        if isinstance(answer, Reply):
            return answer
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in request["messages"])
        words = answer.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        with self._lock:
            self.reported.append(usage["total_tokens"])
        created = int(time.time())
        base = {"id": "chatcmpl-fake", "created": created, "model": request["model"]}
        if not request.get("stream"):
            return Reply(
                json={
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
        chunk = {**base, "object": "chat.completion.chunk"}
        events: list[dict[str, Any]] = [
            {
                **chunk,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
            }
        ]
        for piece in pieces:
            events.append({**chunk, "choices": [{"index": 0, "delta": {"content": piece}}]})
        events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (request.get("stream_options") or {}).get("include_usage"):
            events.append({**chunk, "choices": [], "usage": usage})
        data = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
        return Reply(headers={"Content-Type": "text/event-stream"}, chunks=data)

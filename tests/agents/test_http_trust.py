"""The http agent in real workflows (the real `orch run`, a real server on 127.0.0.1):
query strings, redirects across origins (H1), bounded Retry-After waits (H2),
non-JSON numbers in a JSON body, and a line break in a header."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.servers import HTTPServer, Reply

runner = CliRunner()
SECRET = "s3cr3t-api-key-0123456789"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / ".orch"))
    monkeypatch.setenv("API_KEY", SECRET)


def run(tmp_path: Path, phase: str, *, extra: str = "") -> tuple[int, list[dict[str, Any]]]:
    wf = tmp_path / "wf.yaml"
    wf.write_text(f"name: h\n{extra}phases:\n{phase}")
    res = runner.invoke(app, ["run", str(wf), "--events", "jsonl"])
    events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert "Traceback" not in res.output, res.output
    return res.exit_code, events


def ended(events: list[dict[str, Any]], phase: str = "call") -> dict[str, Any]:
    (last,) = [
        e
        for e in events
        if e.get("phase") == phase and e["event"] in ("phase_completed", "phase_failed")
    ]
    return last


HEADERS = """
      headers:
        X-Api-Key: "{{ secrets.API_KEY }}"
        Authorization: "Bearer {{ secrets.API_KEY }}"
        Cookie: "session={{ secrets.API_KEY }}"
        X-Custom: custom
        Accept: application/json
"""


def test_a_query_string_in_the_url_reaches_the_server_with_params_added(tmp_path):
    with HTTPServer({("GET", "/echo"): Reply(200, json={"ok": True})}) as srv:
        code, _ = run(
            tmp_path,
            f"  - id: call\n    agent: http\n    with:\n      url: {srv.url}/echo?page=2&q=a%20b\n"
            "      params: {limit: 5}\n"
            f"  - id: plain\n    agent: http\n    with: {{url: '{srv.url}/echo?page=3'}}\n",
        )
        first, second = sorted(srv.requests, key=lambda r: r.query["page"])
    assert code == 0
    assert first.query == {"page": ["2"], "q": ["a b"], "limit": ["5"]}
    assert second.query == {"page": ["3"]}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_port_drops_every_sensitive_header(tmp_path, status):
    with HTTPServer({("GET", "/land"): Reply(200, json={"landed": True})}) as other:
        routes = {("GET", "/start"): Reply(status, headers={"Location": other.url + "/land"})}
        with HTTPServer(routes) as first:
            code, events = run(
                tmp_path,
                f"  - id: call\n    agent: http\n    with:\n      url: {first.url}/start\n"
                + HEADERS,
            )
            sent = first.requests[0].headers
        (arrived,) = other.requests
    assert code == 0, events
    assert ended(events)["data"]["output"] == {"landed": True}
    assert sent["x-api-key"] == SECRET and sent["x-custom"] == "custom"  # the origin gets them
    for name in ("x-api-key", "authorization", "cookie", "x-custom"):
        assert name not in arrived.headers, name
    assert SECRET not in json.dumps(arrived.headers)
    assert arrived.headers["accept"] == "application/json"
    assert arrived.headers["idempotency-key"]


def test_localhost_is_another_origin_than_127_0_0_1(tmp_path):
    routes: dict[Any, Any] = {("GET", "/land"): Reply(200, body="ok")}
    with HTTPServer(routes) as srv:
        port = srv.url.rsplit(":", 1)[1]
        srv.routes[("GET", "/start")] = Reply(
            302, headers={"Location": f"http://localhost:{port}/land"}
        )
        code, events = run(
            tmp_path,
            f"  - id: call\n    agent: http\n    with:\n      url: {srv.url}/start\n" + HEADERS,
        )
        start, land = srv.requests
    assert code == 0, events
    assert start.headers["x-api-key"] == SECRET
    assert "x-api-key" not in land.headers and "authorization" not in land.headers


def test_a_redirect_within_the_origin_keeps_the_headers(tmp_path):
    routes = {
        ("GET", "/start"): Reply(302, headers={"Location": "/land"}),
        ("GET", "/land"): Reply(200, body="ok"),
    }
    with HTTPServer(routes) as srv:
        code, _ = run(
            tmp_path,
            f"  - id: call\n    agent: http\n    with:\n      url: {srv.url}/start\n" + HEADERS,
        )
        land = srv.requests[1].headers
    assert code == 0
    assert land["x-api-key"] == SECRET and land["x-custom"] == "custom"


def test_a_307_post_is_not_resent_to_another_origin_and_is_not_retried(tmp_path):
    with HTTPServer({("POST", "/land"): Reply(200, body="took it")}) as other:
        routes = {("POST", "/start"): Reply(307, headers={"Location": other.url + "/land"})}
        with HTTPServer(routes) as first:
            code, events = run(
                tmp_path,
                "  - id: call\n    agent: http\n    retries: {attempts: 2, delay: 0.01}\n"
                f"    with:\n      method: POST\n      url: {first.url}/start\n"
                "      json: {card: '{{ secrets.API_KEY }}'}\n",
            )
            tries = len(first.requests)
        assert other.requests == []  # the body never reached the other origin
    assert code == 1
    last = ended(events)
    assert last["event"] == "phase_failed" and last["data"]["attempts"] == 1 and tries == 1
    assert "HTTP 307 redirects to another origin (http://127.0.0.1:" in last["data"]["error"]
    assert "does not send a request body to another origin" in last["data"]["error"]


def test_a_307_post_within_the_origin_sends_the_body_again(tmp_path):
    routes = {
        ("POST", "/start"): Reply(307, headers={"Location": "/land"}),
        ("POST", "/land"): lambda r: Reply(200, body=r.body.decode()),
    }
    with HTTPServer(routes) as srv:
        code, events = run(
            tmp_path,
            f"  - id: call\n    agent: http\n    with:\n      method: POST\n"
            f"      url: {srv.url}/start\n      body: hello\n",
        )
    assert code == 0 and ended(events)["data"]["output"] == "hello"


def test_a_redirect_loop_fails_once_without_retries(tmp_path):
    routes = {("GET", "/loop"): Reply(302, headers={"Location": "/loop"})}
    with HTTPServer(routes) as srv:
        code, events = run(
            tmp_path,
            "  - id: call\n    agent: http\n    retries: {attempts: 2, delay: 0.01}\n"
            f"    with: {{url: '{srv.url}/loop'}}\n",
        )
        count = len(srv.requests)
    assert code == 1
    assert "more than 10 redirects" in ended(events)["data"]["error"]
    assert count == 11 and ended(events)["data"]["attempts"] == 1


# -- waits a server asks for are bounded ------------------------------------------------------

FAR = "Fri, 31 Dec 9999 23:59:59 GMT"


@pytest.mark.parametrize("asked", ["999999", FAR, "9" * 400])
def test_retry_after_is_bounded_by_max_delay_and_the_retry_line_says_so(tmp_path, asked):
    replies = [Reply(503, headers={"Retry-After": asked}), Reply(200, body="ok")]
    with HTTPServer({("GET", "/busy"): replies}) as srv:
        code, events = run(
            tmp_path,
            "  - id: call\n    agent: http\n"
            "    retries: {attempts: 1, delay: 0.01, max_delay: 0.05}\n"
            f"    with: {{url: '{srv.url}/busy'}}\n",
        )
    assert code == 0, events
    (retry,) = [e for e in events if e["event"] == "phase_retry"]
    assert retry["data"]["delay"] == 0.05
    assert retry["data"]["bound"].startswith("asked to wait ")
    assert retry["data"]["bound"].endswith("; bounded by max_delay (50ms)")


def test_retry_after_is_bounded_by_the_phase_timeout(tmp_path):
    replies = [Reply(429, headers={"Retry-After": "3600"}), Reply(200, body="ok")]
    with HTTPServer({("GET", "/busy"): replies}) as srv:
        code, events = run(
            tmp_path,
            "  - id: call\n    agent: http\n    timeout: 500ms\n"
            "    retries: {attempts: 1, delay: 0.01, max_delay: 1h}\n"
            f"    with: {{url: '{srv.url}/busy'}}\n",
        )
    assert code == 0, events
    (retry,) = [e for e in events if e["event"] == "phase_retry"]
    assert retry["data"]["delay"] == 0.5
    assert retry["data"]["bound"] == "asked to wait 3600s; bounded by the phase timeout (500ms)"


def test_every_wait_ends_by_the_runs_timeout(tmp_path):
    replies = [Reply(503, headers={"Retry-After": "3600"})]
    with HTTPServer({("GET", "/busy"): replies}) as srv:
        code, events = run(
            tmp_path,
            "  - id: call\n    agent: http\n"
            "    retries: {attempts: 3, delay: 1h, max_delay: 1h}\n"
            f"    with: {{url: '{srv.url}/busy'}}\n",
            extra="timeout: 1s\n",
        )
    assert code == 1
    retry = [e for e in events if e["event"] == "phase_retry"][0]
    assert retry["data"]["delay"] <= 1.0
    assert retry["data"]["bound"].startswith("bounded by the run's timeout (")
    assert "timed out after 1s" in events[-1]["data"]["error"]


@pytest.mark.parametrize("asked", ["inf", "nan", "-5", "1e9", "soon"])
def test_a_retry_after_that_is_not_a_number_of_seconds_or_a_date_is_ignored(tmp_path, asked):
    replies = [Reply(503, headers={"Retry-After": asked}), Reply(200, body="ok")]
    with HTTPServer({("GET", "/busy"): replies}) as srv:
        code, events = run(
            tmp_path,
            "  - id: call\n    agent: http\n    retries: {attempts: 1, delay: 0.01}\n"
            f"    with: {{url: '{srv.url}/busy'}}\n",
        )
    assert code == 0, events
    (retry,) = [e for e in events if e["event"] == "phase_retry"]
    assert retry["data"]["delay"] == 0.01 and "bound" not in retry["data"]


# -- bodies and headers ------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_a_json_body_with_nan_or_infinity_fails_the_phase_as_not_json(tmp_path, number):
    body = '{"price": ' + number + "}"
    reply = Reply(200, body=body.encode(), headers={"Content-Type": "application/json"})
    with HTTPServer({("GET", "/n"): reply}) as srv:
        code, events = run(
            tmp_path,
            "  - id: call\n    agent: http\n    retries: {attempts: 2, delay: 0.01}\n"
            f"    with: {{url: '{srv.url}/n'}}\n",
        )
    assert code == 1
    last = ended(events)
    assert f"is not valid JSON: {number} is not a JSON number" in last["data"]["error"]
    assert last["data"]["attempts"] == 1  # the same body again would not help


def test_a_line_break_in_a_header_fails_at_once_without_retries(tmp_path):
    with HTTPServer({("GET", "/h"): Reply(200, body="ok")}) as srv:
        code, events = run(
            tmp_path,
            "  - id: call\n    agent: http\n    retries: {attempts: 2, delay: 0.01}\n"
            f"    with:\n      url: {srv.url}/h\n"
            "      headers: {X-Trace: \"a{{ '\\r\\n' }}Injected: yes\"}\n",
        )
        assert srv.requests == []
    assert code == 1
    last = ended(events)
    assert last["data"]["attempts"] == 1
    assert "header 'X-Trace' holds a line break or NUL; refused" in last["data"]["error"]


def test_the_plain_retry_line_says_the_wait_was_bounded(tmp_path):
    replies = [Reply(503, headers={"Retry-After": "999999"}), Reply(200, body="ok")]
    with HTTPServer({("GET", "/busy"): replies}) as srv:
        wf = tmp_path / "wf.yaml"
        wf.write_text(
            "name: h\nphases:\n  - id: call\n    agent: http\n"
            "    retries: {attempts: 1, delay: 0.01, max_delay: 0.05}\n"
            f"    with: {{url: '{srv.url}/busy'}}\n"
        )
        res = runner.invoke(app, ["run", str(wf)])
    assert res.exit_code == 0, res.output
    assert "attempt 2 in 50ms (asked to wait 999999s; bounded by max_delay (50ms))" in res.stderr


def test_a_query_string_on_base_url_stays_a_query_string(tmp_path):
    with HTTPServer({("GET", "/api/items"): Reply(200, json={"ok": True})}) as srv:
        code, _ = run(
            tmp_path,
            "  - id: call\n    agent: http\n    with:\n"
            f"      base_url: {srv.url}/api?key=k1\n      path: items?page=2\n",
        )
        (req,) = srv.requests
    assert code == 0
    assert req.path == "/api/items" and req.query == {"key": ["k1"], "page": ["2"]}

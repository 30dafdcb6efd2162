"""The http agent against a real server on 127.0.0.1: methods, bodies, statuses, deadline, caps."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.agents import AgentContext, AgentFailure
from orchestrator.agents.builtin.http import HttpAgent
from tests.servers import HTTPServer, Reply


def ctx(**kw) -> AgentContext:
    return AgentContext(run_id="run-1", phase_id="fetch", attempt=2, **kw)


async def call(agent: HttpAgent, input: dict, c: AgentContext | None = None):
    try:
        return await agent.run(input, c or ctx())
    finally:
        await agent.aclose()


def run(input: dict, c: AgentContext | None = None):
    return asyncio.run(call(HttpAgent(), input, c))


def test_get_json_with_params_and_headers_sends_the_idempotency_key():
    with HTTPServer({("GET", "/accounts/7"): Reply(200, json={"id": 7, "ok": True})}) as srv:
        result = run(
            {
                "base_url": srv.url + "/",
                "path": "/accounts/7",
                "params": {"q": "x y", "flag": True, "many": [1, 2]},
                "headers": {"X-Trace": "t1"},
            }
        )
        req = srv.requests[0]
    assert result.output == {"id": 7, "ok": True}
    assert result.metadata["status"] == 200
    assert result.metadata["headers"]["content-type"] == "application/json"
    assert req.query == {"q": ["x y"], "flag": ["true"], "many": ["1", "2"]}
    assert req.headers["x-trace"] == "t1"
    assert req.headers["idempotency-key"] == "run-1/fetch/2"


def test_post_json_and_text_body_and_text_output():
    routes = {
        ("POST", "/items"): lambda r: Reply(201, body=f"got {r.json()['n']}"),
        ("PUT", "/raw"): lambda r: Reply(200, body=r.body.decode()),
    }
    with HTTPServer(routes) as srv:
        created = run({"method": "POST", "url": srv.url + "/items", "json": {"n": 5}})
        echoed = run({"method": "PUT", "url": srv.url + "/raw", "body": "plain {{ text }}"})
    assert created.output == "got 5"
    assert created.metadata["status"] == 201
    assert echoed.output == "plain {{ text }}"


def test_one_client_per_agent_pools_connections():
    async def twice(url):
        agent = HttpAgent()
        try:
            await agent.run({"url": url}, ctx())
            await agent.run({"url": url}, ctx())
        finally:
            await agent.aclose()

    with HTTPServer({("GET", "/x"): Reply(200, body="x")}) as srv:
        asyncio.run(twice(srv.url + "/x"))
        ports = {r.client_port for r in srv.requests}
    assert len(srv.requests) == 2
    assert len(ports) == 1 and 0 not in ports  # both requests on one kept-alive connection


@pytest.mark.parametrize(
    ("status", "transient"),
    [(500, True), (502, True), (503, True), (408, True), (429, True), (400, False), (404, False)],
)
def test_status_classes(status, transient):
    with HTTPServer({("GET", "/s"): Reply(status, json={"error": "nope"})}) as srv:
        with pytest.raises(AgentFailure) as info:
            run({"url": srv.url + "/s"})
    assert info.value.transient is transient
    assert f"HTTP {status}" in str(info.value)
    assert "nope" in str(info.value)


def test_retry_after_is_honoured_on_429_and_503():
    routes = {
        ("GET", "/limited"): Reply(429, headers={"Retry-After": "7"}),
        ("GET", "/busy"): Reply(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
    }
    with HTTPServer(routes) as srv:
        with pytest.raises(AgentFailure) as limited:
            run({"url": srv.url + "/limited"})
        with pytest.raises(AgentFailure) as busy:
            run({"url": srv.url + "/busy"})
    assert limited.value.retry_after == 7.0
    assert busy.value.retry_after == 0.0  # a date in the past: no wait


def test_expect_status_list():
    with HTTPServer({("GET", "/a"): Reply(202, body="later"), ("GET", "/b"): Reply(200)}) as srv:
        assert run({"url": srv.url + "/a", "expect_status": [202]}).output == "later"
        with pytest.raises(AgentFailure) as info:
            run({"url": srv.url + "/b", "expect_status": [201]})
    assert info.value.transient is False


def test_total_deadline_holds_against_a_slow_drip_server():
    """httpx's timeout is per read; a body dripping a byte every 0.2 s must still stop."""
    drip = Reply(200, chunks=[b"x"] * 40, delay=0.2)
    with HTTPServer({("GET", "/drip"): drip}) as srv:
        with pytest.raises(AgentFailure) as info:
            run({"url": srv.url + "/drip", "timeout": "1s"})
    assert str(info.value) == f"GET {srv.url}/drip: timed out after 1s"
    assert info.value.transient is True


def test_the_context_deadline_wins_when_earlier():
    import time

    drip = Reply(200, chunks=[b"x"] * 40, delay=0.2)
    with HTTPServer({("GET", "/drip"): drip}) as srv:
        with pytest.raises(AgentFailure) as info:
            run({"url": srv.url + "/drip", "timeout": 60}, ctx(deadline=time.monotonic() + 0.5))
    assert str(info.value) == f"GET {srv.url}/drip: timed out (the phase's deadline passed)"


def test_response_size_cap():
    with HTTPServer({("GET", "/big"): Reply(200, chunks=[b"y" * 4096] * 10)}) as srv:
        with pytest.raises(AgentFailure) as info:
            run({"url": srv.url + "/big", "max_response_bytes": 10_000})
    assert "exceeds max_response_bytes (10000 bytes)" in str(info.value)
    assert info.value.transient is False


def test_connection_refused_is_transient_and_a_bad_url_permanent():
    with HTTPServer() as srv:
        url = srv.url
    with pytest.raises(AgentFailure) as refused:
        run({"url": url + "/gone"})
    assert refused.value.transient is True
    with pytest.raises(AgentFailure) as bad:
        run({"url": "ftp://example.invalid/x"})
    assert bad.value.transient is False


def test_invalid_json_response_is_a_permanent_failure():
    bad = Reply(200, body=b"{nope", headers={"Content-Type": "application/json"})
    with HTTPServer({("GET", "/j"): bad}) as srv:
        with pytest.raises(AgentFailure) as info:
            run({"url": srv.url + "/j"})
    assert "not valid JSON" in str(info.value)


def test_an_error_status_names_the_request_and_the_reason():
    with HTTPServer({("POST", "/x"): Reply(404, body="nope")}) as srv:
        with pytest.raises(AgentFailure) as info:
            run({"method": "post", "url": srv.url + "/wrongpath"})
    assert str(info.value).startswith(f"POST {srv.url}/wrongpath: HTTP 404 Not Found: ")


@pytest.mark.parametrize("bad", ["nan", "-3", "inf", "1e309", 0, "0s", "soon"])
def test_a_rendered_timeout_that_is_not_a_positive_duration_is_a_permanent_failure(bad):
    # a template may render anything into `timeout`: the workflow's own duration rule
    # applies, and nan, negative, zero or infinite values never become a deadline
    with HTTPServer({("GET", "/x"): Reply(200, body="x")}) as srv:
        with pytest.raises(AgentFailure) as info:
            run({"url": srv.url + "/x", "timeout": bad})
        assert srv.requests == []
    assert "is not a duration" in str(info.value) and info.value.transient is False

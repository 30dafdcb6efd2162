"""The llm agent against a fake OpenAI-compatible server speaking real server-sent events."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.agents import AgentContext, AgentFailure
from orchestrator.agents.builtin.llm import LlmAgent
from tests.servers import FakeOpenAI, Reply


def run(input: dict, streamed: list[str] | None = None, **kw):
    async def stream(text: str) -> None:
        if streamed is not None:
            streamed.append(text)

    async def go():
        agent = LlmAgent()
        try:
            c = AgentContext(run_id="r9", phase_id="write", _stream=stream, **kw)
            return await agent.run(input, c)
        finally:
            await agent.aclose()

    return asyncio.run(go())


def test_streaming_sends_tokens_as_they_come_and_records_usage():
    with FakeOpenAI(["The quick brown fox"]) as srv:
        streamed: list[str] = []
        result = run(
            {
                "base_url": srv.base_url,
                "model": "m1",
                "system": "be brief",
                "prompt": "say it",
                "api_key": "sk-test",
                "temperature": 0.2,
                "max_tokens": 50,
            },
            streamed,
        )
        request = srv.requests[0]
    body = request.json()
    assert result.output == "The quick brown fox"
    assert streamed == ["The", " quick", " brown", " fox"]
    assert result.metadata["tokens"] == {"prompt": 4, "completion": 4, "total": 8}
    assert result.metadata["finish_reason"] == "stop"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "say it"},
    ]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 50
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["idempotency-key"] == "r9/write/1"


def test_non_streaming_response():
    with FakeOpenAI(["plain answer"]) as srv:
        streamed: list[str] = []
        result = run(
            {"base_url": srv.base_url, "model": "m", "prompt": "q", "stream": False}, streamed
        )
        body = srv.requests[0].json()
    assert result.output == "plain answer"
    assert streamed == []
    assert result.metadata["tokens"]["completion"] == 2
    assert "stream" not in body


def test_base_url_defaults_to_the_environment_at_run_time(monkeypatch):
    with FakeOpenAI(["from env"]) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        result = run({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert result.output == "from env"


@pytest.mark.parametrize("stream", [True, False])
def test_json_response_format_is_parsed_and_a_handoff_taken(stream):
    answer = '```json\n{"handoff": "billing", "reason": "refund"}\n```'
    with FakeOpenAI([answer]) as srv:
        result = run(
            {
                "base_url": srv.base_url,
                "model": "m",
                "prompt": "triage",
                "response_format": "json",
                "stream": stream,
            }
        )
        body = srv.requests[0].json()
    assert result.output == {"handoff": "billing", "reason": "refund"}
    assert result.handoff == "billing"
    assert body["response_format"] == {"type": "json_object"}


def test_an_answer_that_is_not_json_fails_when_json_was_asked():
    with FakeOpenAI(["not json at all"]) as srv:
        with pytest.raises(AgentFailure) as info:
            run({"base_url": srv.base_url, "model": "m", "prompt": "q", "response_format": "json"})
    assert "not valid JSON" in str(info.value)


def test_rate_limit_429_is_transient_with_retry_after():
    limited = Reply(
        429, json={"error": {"message": "Rate limit reached"}}, headers={"Retry-After": "3"}
    )
    with FakeOpenAI([limited]) as srv:
        with pytest.raises(AgentFailure) as info:
            run({"base_url": srv.base_url, "model": "m", "prompt": "q"})
    assert info.value.transient is True
    assert info.value.retry_after == 3.0
    assert str(info.value) == (
        f"POST {srv.base_url}/chat/completions: HTTP 429 Too Many Requests: Rate limit reached"
    )


def test_bad_request_is_permanent_with_the_api_message():
    bad = Reply(400, json={"error": {"message": "model 'nope' not found"}})
    with FakeOpenAI([bad]) as srv:
        with pytest.raises(AgentFailure) as info:
            run({"base_url": srv.base_url, "model": "nope", "prompt": "q"})
    assert info.value.transient is False
    assert "model 'nope' not found" in str(info.value)


def test_a_handoff_input_reaches_the_model_as_a_message():
    with FakeOpenAI(["done"]) as srv:
        run(
            {
                "base_url": srv.base_url,
                "model": "m",
                "prompt": "handle it",
                "handoff": {"from": "triage", "output": {"issue": "refund"}, "turn": 2},
            }
        )
        messages = srv.requests[0].json()["messages"]
    assert messages[-1] == {
        "role": "user",
        "content": 'Handed over by triage: {"issue": "refund"}',
    }


def test_a_server_that_ignores_stream_and_answers_json_still_works():
    from tests.servers import HTTPServer

    completion = {
        "model": "m",
        "choices": [
            {"message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    with HTTPServer({("POST", "/v1/chat/completions"): Reply(json=completion)}) as srv:
        result = run({"base_url": srv.url + "/v1", "model": "m", "prompt": "q"})
    assert result.output == "whole"
    assert result.metadata["tokens"] == {"prompt": 1, "completion": 1, "total": 2}


def test_a_404_without_v1_and_a_401_come_with_hints():
    with FakeOpenAI() as srv:
        with pytest.raises(AgentFailure) as missing:
            run({"base_url": srv.url, "model": "m", "prompt": "q"})
        with pytest.raises(AgentFailure) as wrong:  # has /v1: no hint about it
            run({"base_url": srv.url + "/api/v1", "model": "m", "prompt": "q"})
    assert str(missing.value).startswith(f"POST {srv.url}/chat/completions: HTTP 404 Not Found")
    assert str(missing.value).endswith("; hint: is base_url missing '/v1'?")
    assert "hint" not in str(wrong.value)
    denied = Reply(401, json={"error": {"message": "Incorrect API key provided"}})
    with FakeOpenAI([denied]) as srv:
        with pytest.raises(AgentFailure) as info:
            run({"base_url": srv.base_url, "model": "m", "prompt": "q"})
    assert str(info.value) == (
        f"POST {srv.base_url}/chat/completions: HTTP 401 Unauthorized: "
        "Incorrect API key provided; hint: check api_key (is the secret set?)"
    )

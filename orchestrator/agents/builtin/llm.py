"""The ``llm`` agent: an OpenAI-compatible chat-completions client over httpx.

Streams tokens as phase_stream events, records token usage in
``metadata["tokens"]``, parses the answer as JSON when asked, and takes a
``handoff`` from a JSON answer (``{"handoff": "agent"}``) in handoff phases.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from ... import jsontext
from ...template_syntax import is_template
from ..base import Agent, AgentContext, AgentFailure, AgentResult, ConfigProblem
from ._client import (
    DURATION_SCHEMA,
    HTTPClient,
    check_status,
    duration,
    join_url,
    read_capped,
    url_problem,
)

__all__ = ["PRICES", "LlmAgent", "call_cost"]

_DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: US dollars per 1,000,000 (prompt, completion) tokens of well-known models, as their
#: makers listed them in 2025; a ``price:`` in the agent's ``with:`` overrides this.
#: A dated model name (``gpt-4o-mini-2024-07-18``) takes the price of its base name.
PRICES: Mapping[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "gpt-3.5-turbo": (0.50, 1.50),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
}
_DEFAULT_TIMEOUT = 300.0
_MAX_BYTES = 20 * 1024 * 1024


class LlmAgent(Agent):
    """Asks a chat model; the output is its answer (text, or JSON when asked)."""

    name = "llm"
    description = (
        "Calls an OpenAI-compatible chat-completions endpoint (OpenAI, Ollama, vLLM...). "
        "Output: the answer (parsed when response_format is json); streams tokens; "
        "metadata: tokens {prompt, completion, total}, cost (when the price is known), "
        "model, finish_reason."
    )
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "base_url": {
                "description": (
                    "The API root, e.g. http://localhost:11434/v1 (default: the "
                    "OPENAI_BASE_URL environment variable, else https://api.openai.com/v1)."
                ),
                "type": "string",
            },
            "model": {
                "description": "The model name, e.g. gpt-4o-mini or llama3.2.",
                "type": "string",
            },
            "api_key": {
                "description": (
                    "The API key, sent as a Bearer token; use a secret: "
                    '"{{ secrets.OPENAI_API_KEY }}". Optional for local servers.'
                ),
                "type": "string",
            },
            "system": {"description": "The system message.", "type": "string"},
            "prompt": {"description": "The user message.", "type": "string"},
            "messages": {
                "description": "The whole conversation (after system), instead of prompt.",
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "role": {
                            "description": "Who speaks.",
                            "enum": ["system", "user", "assistant", "tool"],
                        },
                        "content": {"description": "What is said.", "type": "string"},
                    },
                    "required": ["role", "content"],
                },
                "minItems": 1,
            },
            "temperature": {
                "description": "Sampling temperature.",
                "type": "number",
                "minimum": 0,
                "maximum": 2,
            },
            "max_tokens": {
                "description": "Most tokens to generate.",
                "type": "integer",
                "minimum": 1,
            },
            "response_format": {
                "description": "json asks for a JSON object and parses it into the output.",
                "enum": ["text", "json"],
            },
            "stream": {
                "description": "Stream tokens as phase_stream events (default true).",
                "type": "boolean",
            },
            "timeout": {
                **DURATION_SCHEMA,
                "description": (
                    "Total time for one request (default 5m); the phase timeout applies too."
                ),
            },
            "headers": {
                "description": "Extra request headers.",
                "type": "object",
                "additionalProperties": {"type": "string"},
            },
            "extra": {
                "description": "Extra fields merged into the request body (top_p, seed...).",
                "type": "object",
            },
            "price": {
                "description": (
                    "What the model costs per million tokens, to record each call's cost "
                    "(overrides the built-in prices of well-known models)."
                ),
                "type": "object",
                "additionalProperties": False,
                "required": ["input_per_1m", "output_per_1m"],
                "properties": {
                    "input_per_1m": {
                        "description": "Price of 1,000,000 prompt tokens (US dollars).",
                        "type": "number",
                        "minimum": 0,
                    },
                    "output_per_1m": {
                        "description": "Price of 1,000,000 completion tokens (US dollars).",
                        "type": "number",
                        "minimum": 0,
                    },
                },
            },
        },
        "required": ["model"],
        "anyOf": [{"required": ["prompt"]}, {"required": ["messages"]}],
        "additionalProperties": False,
    }

    @classmethod
    def check_static(cls, config: Mapping[str, Any], *, workflow_path: str) -> list[ConfigProblem]:
        """A literal ``base_url`` must be an http or https URL with a host."""
        base = config.get("base_url")
        if not isinstance(base, str) or is_template(base):
            return []
        problem = url_problem(base)
        if problem is None:
            return []
        return [
            ConfigProblem(("base_url",), problem, hint="e.g. base_url: http://localhost:11434/v1")
        ]

    def __init__(self, instance_name: str = "") -> None:
        super().__init__(instance_name)
        self._client = HTTPClient()

    async def run(self, input: Mapping[str, Any], ctx: AgentContext) -> AgentResult:
        """Send the conversation; raises AgentFailure (429/5xx/connection: transient)."""
        base = str(input.get("base_url") or os.environ.get("OPENAI_BASE_URL") or _DEFAULT_BASE_URL)
        url = join_url(base, "chat/completions")  # a query string (api-version=...) is kept
        stream = bool(input.get("stream", True))
        as_json = input.get("response_format") == "json"
        body: dict[str, Any] = {"model": input["model"], "messages": _messages(input)}
        for key in ("temperature", "max_tokens"):
            if key in input:
                body[key] = input[key]
        if as_json:
            body["response_format"] = {"type": "json_object"}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(input.get("extra") or {})
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if input.get("api_key"):
            headers["Authorization"] = f"Bearer {input['api_key']}"
        headers.update(input.get("headers") or {})
        timeout = duration(input.get("timeout"), _DEFAULT_TIMEOUT)
        async with self._client.stream(
            "POST", url, ctx=ctx, timeout=timeout, headers=headers, json=body
        ) as response:
            # a server may ignore `stream` and answer with one JSON document
            plain = "json" in response.headers.get("content-type", "")
            if response.status_code != 200 or not stream or plain:
                raw = await read_capped(response, _MAX_BYTES)
                lowered = {k.lower(): v for k, v in response.headers.items()}
                check_status(
                    response.status_code,
                    None,
                    lowered,
                    _api_error(raw),
                    request=f"POST {url}",
                    hint=_status_hint(response.status_code, base),
                )
                text, usage, meta = _from_completion(raw)
            else:
                text, usage, meta = await _from_stream(response, ctx)
        metadata: dict[str, Any] = {**meta}
        if usage:
            metadata["tokens"] = {
                "prompt": int(usage.get("prompt_tokens") or 0),
                "completion": int(usage.get("completion_tokens") or 0),
                "total": int(usage.get("total_tokens") or 0),
            }
            cost = call_cost(metadata["tokens"], input.get("price"), str(input["model"]))
            if cost is not None:
                metadata["cost"] = cost
        if not as_json:
            return AgentResult(output=text, metadata=metadata)
        try:
            output = jsontext.loads(_strip_fence(text))
        except ValueError as exc:
            raise AgentFailure(
                f"the model's answer is not valid JSON ({exc}): {text[:200]!r}",
                metadata=metadata,
            ) from exc
        handoff = output.get("handoff") if isinstance(output, dict) else None
        return AgentResult(
            output=output,
            metadata=metadata,
            handoff=handoff if isinstance(handoff, str) and handoff else None,
        )

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()


def _messages(input: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if input.get("system"):
        messages.append({"role": "system", "content": str(input["system"])})
    messages.extend(dict(m) for m in input.get("messages") or [])
    if input.get("prompt") is not None:
        messages.append({"role": "user", "content": str(input["prompt"])})
    handoff = input.get("handoff")
    if isinstance(handoff, Mapping):  # a handoff phase: the previous agent's output
        previous = handoff.get("output")
        text = previous if isinstance(previous, str) else json.dumps(previous, default=str)
        messages.append(
            {"role": "user", "content": f"Handed over by {handoff.get('from', '?')}: {text}"}
        )
    return messages


def _status_hint(status: int, base_url: str) -> str | None:
    """What to check for an error status that usually means a wrong setting."""
    if status == 404 and not base_url.rstrip("/").endswith("/v1"):
        return "is base_url missing '/v1'?"
    if status in (401, 403):
        return "check api_key (is the secret set?)"
    return None


def _api_error(raw: bytes) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        return raw[:300].decode("utf-8", "replace").strip()
    if isinstance(data, dict) and data.get("error"):
        return _error_message(data["error"])
    return raw[:300].decode("utf-8", "replace").strip()


def _error_message(error: Any) -> str:
    """The text of an API error (``{"message": ..., "type": ...}`` or a string), never a dict."""
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str) and message.strip():
            return message.strip()
        return json.dumps(error, ensure_ascii=False, default=str)[:300]
    return str(error)


def _from_completion(raw: bytes) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise AgentFailure(f"unexpected chat-completions response: {raw[:200]!r}") from exc
    meta = {"model": data.get("model"), "finish_reason": choice.get("finish_reason")}
    return str(text), data.get("usage"), meta


async def _from_stream(
    response: Any, ctx: AgentContext
) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
    """Read server-sent events: ``data: {chunk}`` lines until ``data: [DONE]``."""
    parts: list[str] = []
    usage: dict[str, Any] | None = None
    meta: dict[str, Any] = {}
    size = 0
    async for line in response.aiter_lines():
        size += len(line)
        if size > _MAX_BYTES:
            raise AgentFailure(f"streamed answer exceeds {_MAX_BYTES} bytes", transient=False)
        if not line.startswith("data:"):
            continue  # comments, event names, keep-alives
        payload = line[5:].strip()
        if payload == "[DONE]":
            break
        try:
            chunk = jsontext.loads(payload)
            if not isinstance(chunk, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise AgentFailure(f"bad server-sent event: {payload[:200]!r}") from exc
        if chunk.get("error"):  # an error in the middle of the stream: as the non-streaming path
            raise AgentFailure(f"the model failed: {_error_message(chunk['error'])}")
        meta["model"] = chunk.get("model", meta.get("model"))
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                parts.append(piece)
                await ctx.stream(piece)
            if choice.get("finish_reason"):
                meta["finish_reason"] = choice["finish_reason"]
    return "".join(parts), usage, meta


def _strip_fence(text: str) -> str:
    """Models often wrap JSON in a ```json fence; take what is inside."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        if stripped.rstrip().endswith("```"):
            stripped = stripped.rstrip()[:-3]
    return stripped


def call_cost(tokens: Mapping[str, int], price: Any, model: str) -> float | None:
    """What a call cost: its prompt and completion tokens at ``price`` (the ``with:``
    ``price``), else at the built-in price of ``model``; None when no price is known."""
    if isinstance(price, Mapping):
        per_in, per_out = float(price["input_per_1m"]), float(price["output_per_1m"])
    else:
        known = PRICES.get(model) or PRICES.get(_undated(model))
        if known is None:
            return None
        per_in, per_out = known
    cost = (tokens.get("prompt", 0) * per_in + tokens.get("completion", 0) * per_out) / 1e6
    return round(cost, 10)


def _undated(model: str) -> str:
    """``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``; ``claude-3-5-haiku-20241022`` too."""
    parts = model.split("-")
    while parts and (parts[-1].isdigit() and len(parts[-1]) in (2, 4, 8) or parts[-1] == "latest"):
        parts.pop()
    return "-".join(parts)

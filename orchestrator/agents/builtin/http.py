"""The ``http`` agent: one HTTP request per call, through a pooled httpx client.

The output is the response body (parsed JSON when the response says it is JSON,
text otherwise); ``metadata`` has ``status`` and ``headers``. 5xx, 408, 429 and
connection errors are transient; other unexpected statuses are permanent.
"""

from __future__ import annotations

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

__all__ = ["HttpAgent"]

_DEFAULT_TIMEOUT = 30.0
_DEFAULT_MAX_BYTES = 10 * 1024 * 1024
_WHERE = "the request needs 'url', or 'base_url' and 'path'"
_WHERE_HINT = "e.g. url: https://api.example.com/items"


class HttpAgent(Agent):
    """Sends one request; the output is the body (JSON or text)."""

    name = "http"
    description = (
        "Sends an HTTP request (httpx, pooled per agent). Output: the body, parsed as "
        "JSON when it is JSON; metadata: status, headers. Sends Idempotency-Key."
    )
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "method": {
                "description": "The HTTP method (default GET).",
                "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
            },
            "url": {"description": "The full URL (or use base_url and path).", "type": "string"},
            "base_url": {
                "description": "The URL that path is joined to (often set on a named agent).",
                "type": "string",
            },
            "path": {"description": "Appended to base_url.", "type": "string"},
            "headers": {
                "description": "Request headers.",
                "type": "object",
                "additionalProperties": {"type": "string"},
            },
            "params": {
                "description": "Query parameters; a list value repeats the parameter.",
                "type": "object",
            },
            "json": {"description": "A body sent as JSON (any value)."},
            "body": {"description": "A body sent as text, as it is.", "type": "string"},
            "expect_status": {
                "description": "Statuses that count as success (default: any 2xx).",
                "type": "array",
                "items": {"type": "integer", "minimum": 100, "maximum": 599},
                "minItems": 1,
            },
            "timeout": {
                **DURATION_SCHEMA,
                "description": (
                    "Total time for the request and its body (default 30s); the phase "
                    "timeout applies too, the earlier wins."
                ),
            },
            "max_response_bytes": {
                "description": "Largest body accepted (default 10 MiB).",
                "type": "integer",
                "minimum": 1,
            },
            "response": {
                "description": (
                    "How the body becomes the output: auto (default: JSON if the "
                    "Content-Type says so), json or text."
                ),
                "enum": ["auto", "json", "text"],
            },
        },
        "additionalProperties": False,
    }

    @classmethod
    def check_static(cls, config: Mapping[str, Any], *, workflow_path: str) -> list[ConfigProblem]:
        """Where to send it (``url``, or ``base_url`` and ``path``; literal URLs
        http or https with a host), and not both ``json`` and ``body``."""
        problems: list[ConfigProblem] = []
        if "url" not in config and "base_url" not in config:
            problems.append(ConfigProblem((), _WHERE, hint=_WHERE_HINT))
        for key in ("url", "base_url"):
            value = config.get(key)
            if isinstance(value, str) and not is_template(value):
                problem = url_problem(value)
                if problem is not None:
                    problems.append(ConfigProblem((key,), problem, hint=_WHERE_HINT))
        if "json" in config and "body" in config:
            problems.append(ConfigProblem(("body",), "give either json or body, not both"))
        return problems

    def __init__(self, instance_name: str = "") -> None:
        super().__init__(instance_name)
        self._client = HTTPClient()

    async def run(self, input: Mapping[str, Any], ctx: AgentContext) -> AgentResult:
        """Send the request; raises AgentFailure (see the module docstring)."""
        method = str(input.get("method", "GET")).upper()
        url = _url(input)
        timeout = duration(input.get("timeout"), _DEFAULT_TIMEOUT)
        cap = int(input.get("max_response_bytes", _DEFAULT_MAX_BYTES))
        async with self._client.stream(
            method,
            url,
            ctx=ctx,
            timeout=timeout,
            headers=input.get("headers"),
            params=input.get("params"),
            json=input.get("json"),
            content=input.get("body"),
        ) as response:
            body = await read_capped(response, cap)
            headers = {k.lower(): v for k, v in response.headers.items()}
            status = response.status_code
        text = body.decode(response.encoding or "utf-8", "replace")
        check_status(
            status,
            input.get("expect_status"),
            headers,
            text[:500].strip(),
            request=f"{method} {url}",
        )
        mode = input.get("response", "auto")
        is_json = "json" in headers.get("content-type", "")
        output: Any = text
        if mode == "json" or (mode == "auto" and is_json and body.strip()):
            try:
                output = jsontext.loads(text)
            except ValueError as exc:
                raise AgentFailure(
                    f"response of {method} {url} is not valid JSON: {exc}", transient=False
                ) from exc
        return AgentResult(output=output, metadata={"status": status, "headers": headers})

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()


def _url(input: Mapping[str, Any]) -> str:
    if input.get("url"):
        return str(input["url"])
    if not input.get("base_url"):
        raise AgentFailure(_WHERE, transient=False)
    return join_url(str(input.get("base_url") or ""), str(input.get("path") or ""))

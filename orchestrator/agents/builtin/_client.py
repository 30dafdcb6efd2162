"""The httpx boundary shared by the http and llm agents: one pooled client per agent
instance, a total deadline per request, a response size cap, and the mapping of
httpx errors and HTTP statuses to AgentFailure (transient or permanent).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx

from ...errors import format_duration
from ...spec.values import parse_duration
from ..base import AgentContext, AgentFailure

__all__ = [
    "DURATION_SCHEMA",
    "HTTPClient",
    "check_status",
    "duration",
    "retry_after",
    "url_problem",
]

#: JSON Schema of a duration (the workflow schema's own): seconds, or 500ms, 30s, 5m, 1h30m.
DURATION_SCHEMA: dict[str, Any] = {
    "title": "duration",
    "type": ["string", "number"],
    "pattern": r"^\s*([0-9]+(\.[0-9]+)?(ms|s|m|h)\s*)+$",
    "minimum": 0,
}
#: How long after the phase's deadline a request stops itself, if the engine did not.
_BACKSTOP = 0.25


def duration(value: Any, default: float) -> float:
    """Seconds from a number or a duration string (``1h30m``); ``default`` when None.

    Raises AgentFailure (permanent) on a value that is neither.
    """
    if value is None:
        return default
    try:
        seconds = parse_duration(value)  # the workflow language's own rule
    except ValueError:
        try:
            seconds = float(str(value))  # a number a template rendered into text
        except ValueError:
            seconds = math.nan
    if not 0 < seconds < math.inf:  # nan, negative, zero or infinite: never a timeout
        raise AgentFailure(
            f"'{value}' is not a duration; use 500ms, 30s, 5m, 1h or seconds", transient=False
        )
    return seconds


def url_problem(value: str) -> str | None:
    """What is wrong with a literal URL (not http or https, or no host), or None."""
    try:
        parts = urllib.parse.urlsplit(value.strip())
        host = parts.hostname
    except ValueError as exc:
        return f"'{value}' is not a valid URL: {exc}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"'{value}' is not an http or https URL"
    if not host:
        return f"'{value}' has no host"
    return None


def retry_after(value: str | None) -> float | None:
    """Seconds asked by a ``Retry-After`` header (delta seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def check_status(
    status: int,
    expected: Iterable[int] | None,
    headers: Mapping[str, str],
    detail: str,
    *,
    request: str = "",
    hint: str | None = None,
) -> None:
    """Raise AgentFailure unless ``status`` is expected (default: any 2xx).

    The message reads ``<request>: HTTP 404 Not Found: <detail>; hint: <hint>``
    (``request`` is e.g. ``POST http://host/path``). 5xx, 408 and 429 are
    transient (429 and 503 carry Retry-After); any other unexpected status is
    permanent.
    """
    wanted = set(expected) if expected is not None else None
    if (wanted is None and 200 <= status < 300) or (wanted is not None and status in wanted):
        return
    reason = httpx.codes.get_reason_phrase(status)
    message = f"{request}: " if request else ""
    message += f"HTTP {status}" + (f" {reason}" if reason else "")
    message += (f": {detail}" if detail else "") + (f"; hint: {hint}" if hint else "")
    transient = status >= 500 or status in (408, 429)
    after = retry_after(headers.get("retry-after")) if status in (429, 503) else None
    raise AgentFailure(message, transient=transient, retry_after=after, metadata={"status": status})


class HTTPClient:
    """One pooled httpx.AsyncClient, made on first use (inside the running loop)."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    def _get(self) -> httpx.AsyncClient:
        if self._client is None:
            # Per-read timeouts are a backstop; the total deadline is enforced around each request.
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True
            )
        return self._client

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        ctx: AgentContext,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Send a request and yield the response with its body unread.

        The whole exchange (the caller's reading included) must end by the
        earlier of ``ctx.deadline`` and ``timeout`` seconds from now, or it
        raises AgentFailure (transient). Connection errors are transient
        AgentFailures; a bad URL is a permanent one.
        """
        end = time.monotonic() + timeout
        own = True  # whether this request's own timeout is the limit
        if ctx.deadline is not None and ctx.deadline < end:
            # the phase's deadline: the engine stops the attempt then and says
            # "timed out after <timeout>"; this is the backstop, a moment later
            end, own = ctx.deadline + _BACKSTOP, False
        seconds = max(0.0, end - time.monotonic())
        send_headers = {"Idempotency-Key": ctx.idempotency_key}
        send_headers.update(headers or {})
        try:
            async with _deadline(seconds):
                async with self._get().stream(
                    method,
                    url,
                    headers=send_headers,
                    params={k: _param(v) for k, v in (params or {}).items()},
                    json=json,
                    content=content,
                ) as response:
                    yield response
        except _DeadlineReached as exc:
            raise AgentFailure(
                f"{method} {url}: timed out after {format_duration(timeout)}"
                if own
                else f"{method} {url}: timed out (the phase's deadline passed)"
            ) from exc
        except httpx.TimeoutException as exc:
            raise AgentFailure(f"{method} {url} timed out: {type(exc).__name__}") from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise AgentFailure(f"bad URL '{url}': {exc}", transient=False) from exc
        except httpx.TransportError as exc:
            raise AgentFailure(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def read_capped(response: httpx.Response, cap: int) -> bytes:
    """The whole body, or AgentFailure (permanent) once it passes ``cap`` bytes."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > cap:
            raise AgentFailure(
                f"response body exceeds max_response_bytes ({cap} bytes)", transient=False
            )
    return bytes(body)


class _DeadlineReached(Exception):
    """The total deadline of one request passed."""


@asynccontextmanager
async def _deadline(seconds: float) -> AsyncIterator[None]:
    """Cancel the body after ``seconds`` and raise _DeadlineReached (asyncio.timeout, on 3.10)."""
    task = asyncio.current_task()
    assert task is not None
    fired = False

    def fire() -> None:
        nonlocal fired
        fired = True
        task.cancel()

    handle = asyncio.get_running_loop().call_later(seconds, fire)
    try:
        yield
    except asyncio.CancelledError:
        if not fired:
            raise
        uncancel = getattr(task, "uncancel", None)
        if uncancel is not None:
            uncancel()
        raise _DeadlineReached() from None
    finally:
        handle.cancel()


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value

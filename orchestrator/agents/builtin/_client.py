"""The httpx boundary shared by the http and llm agents: one pooled client per agent
instance, a total deadline per request, a response size cap, and the mapping of
httpx errors and HTTP statuses to AgentFailure (transient or permanent).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from ...errors import format_duration
from ...spec.values import parse_duration
from ..base import AgentContext, AgentFailure

# httpx's __init__ imports its command-line client (click, rich, pygments) whenever
# those happen to be installed (click comes with the dask extra); the agents never use
# it, so it is refused here: importing the http agent stays light and loads no CLI.
_CLI = "httpx._main"
_refused = "httpx" not in sys.modules and _CLI not in sys.modules
if _refused:
    sys.modules[_CLI] = None  # type: ignore[assignment]
try:
    import httpx
finally:
    if _refused and sys.modules.get(_CLI, 0) is None:
        del sys.modules[_CLI]

__all__ = [
    "DURATION_SCHEMA",
    "HTTPClient",
    "check_status",
    "duration",
    "join_url",
    "retry_after",
    "url_problem",
]

#: JSON Schema of a timeout (the workflow schema's duration): seconds, or 500ms, 30s, 5m,
#: 1h30m, greater than 0 (``duration`` refuses 0 when the call is made: validate does now).
_DURATION_TEXT = r"^\s*([0-9]+(\.[0-9]+)?(ms|s|m|h)\s*)+$"
DURATION_SCHEMA: dict[str, Any] = {
    "title": "duration",
    "type": ["string", "number"],
    "pattern": _DURATION_TEXT,
    "allOf": [
        {
            "title": "positive duration",
            "exclusiveMinimum": 0,
            # a digit other than 0; text that is no duration is the pattern above's to say
            "pattern": f"[1-9]|^(?!{_DURATION_TEXT[1:]})",
        }
    ],
}
#: How long after the phase's deadline a request stops itself, if the engine did not.
_BACKSTOP = 0.25
#: Retry-After as delta seconds (RFC 9110: digits; a fraction is tolerated).
_DELTA_SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?")
#: Redirects followed per request.
_MAX_REDIRECTS = 10
#: Headers sent on when a redirect leads to another origin; every other one
#: (Authorization, Cookie, X-Api-Key and any custom header) is dropped.
_CROSS_ORIGIN_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "content-language",
        "content-type",
        "host",
        "idempotency-key",
        "user-agent",
    }
)


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


def join_url(base: str, path: str) -> str:
    """``path`` appended to the path of ``base``; a query string on either is kept.

    ``join_url("http://h/api?v=1", "items?page=2")`` is ``http://h/api/items?v=1&page=2``
    (a plain string join would put the path inside the query).
    """
    if not path:
        return base
    parts = urllib.parse.urlsplit(base)
    tail = urllib.parse.urlsplit(path)
    joined = parts.path.rstrip("/") + "/" + tail.path.lstrip("/")
    query = "&".join(q for q in (parts.query, tail.query) if q)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, joined, query, parts.fragment))


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
    """Seconds asked by a ``Retry-After`` header (delta seconds or an HTTP date), or None.

    Anything else (``inf``, ``nan``, ``-5``, ``1e9``, garbage) is ignored. The
    value may be huge (a far date, a 400-digit number reads as infinity): the
    engine bounds every wait (``engine/retry.py``), never this parser.
    """
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
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
            # Redirects are followed by _send (headers dropped across origins), not by httpx.
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=False
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
        if ctx.traceparent:  # W3C trace context: the service joins the run's trace
            send_headers["traceparent"] = ctx.traceparent
        for name, value in (headers or {}).items():
            if any(c in f"{name}{value}" for c in "\r\n\0"):
                # header injection: the same value fails again, so it is never retried
                raise AgentFailure(
                    f"{method} {url}: header '{name}' holds a line break or NUL; refused",
                    transient=False,
                )
            send_headers[name] = value
        client = self._get()
        try:
            async with _deadline(seconds):
                target = httpx.URL(url)  # its own query string is kept; params add to it
                if params:
                    target = target.copy_merge_params({k: _param(v) for k, v in params.items()})
                request = client.build_request(
                    method, target, headers=send_headers, json=json, content=content
                )
                has_body = json is not None or content is not None
                response = await _send(client, request, has_body, f"{method} {url}")
                try:
                    yield response
                finally:
                    await response.aclose()
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
        except httpx.LocalProtocolError as exc:  # a request httpx cannot send: same next time
            raise AgentFailure(f"{method} {url} cannot be sent: {exc}", transient=False) from exc
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


async def _send(
    client: httpx.AsyncClient, request: httpx.Request, has_body: bool, what: str
) -> httpx.Response:
    """Send ``request``, following up to _MAX_REDIRECTS redirects; the last response, body unread.

    Within one origin a redirect keeps every header (httpx's rules for the method:
    303, and 301/302 after a POST, become a GET without the body). To another
    origin (scheme, host or port; an upgrade from http to https on the same host
    is the same origin) only the headers of ``_CROSS_ORIGIN_HEADERS`` go on, and a
    request body is never sent there: a 307/308 that would re-send it fails
    (permanently) naming the target.
    """
    for _ in range(_MAX_REDIRECTS + 1):
        response = await client.send(request, stream=True, follow_redirects=False)
        following = response.next_request
        if following is None:
            return response
        await response.aclose()
        if not _same_origin(request.url, following.url):
            target = f"{following.url.scheme}://{following.url.netloc.decode('ascii')}"
            if has_body and following.method not in ("GET", "HEAD"):
                raise AgentFailure(
                    f"{what}: HTTP {response.status_code} redirects to another origin"
                    f" ({target}); orch does not send a request body to another origin",
                    transient=False,
                )
            for name in list(following.headers.keys()):
                if name.lower() not in _CROSS_ORIGIN_HEADERS:
                    del following.headers[name]
        request = following
    raise AgentFailure(f"{what}: more than {_MAX_REDIRECTS} redirects", transient=False)


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    ports = {"http": 80, "https": 443}
    if a.host != b.host:
        return False
    if a.scheme == b.scheme:
        return (a.port or ports.get(a.scheme)) == (b.port or ports.get(b.scheme))
    # http -> https on the same host and default ports: the secret goes on over TLS
    return a.scheme == "http" and b.scheme == "https" and a.port is None and b.port is None


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value

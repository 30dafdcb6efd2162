"""What `orch serve` checks on every request: the token, cross-site requests, body size, rate.

- **Token.** Bound to anything but a loopback address, the service refuses to
  start without ``ORCH_API_TOKEN``; with a token set, every route except the login
  page needs it: ``Authorization: Bearer TOKEN`` (API clients) or the session
  cookie set by the login page (the web UI). Compared in constant time.
- **Cross-site requests.** A state-changing request (POST) is refused when its
  ``Origin`` (or ``Sec-Fetch-Site``) says another site sent it, and a request
  authenticated only by the cookie must also carry ``X-Orch-CSRF`` equal to the
  ``orch_csrf`` cookie (double submit). The UI's buttons send it.
- **Body size.** Request bodies over ``MAX_BODY`` bytes are refused (413).
- **Rate.** The webhook endpoint is a token bucket per workflow (429 with Retry-After).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "MAX_BODY",
    "SESSION_COOKIE",
    "RateLimiter",
    "Verdict",
    "check_request",
    "is_loopback",
    "new_csrf_token",
    "session_value",
]

MAX_BODY = 1 << 20  # 1 MiB
SESSION_COOKIE = "orch_session"
CSRF_COOKIE = "orch_csrf"
CSRF_HEADER = "x-orch-csrf"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_csrf_token() -> str:
    """A fresh random value for the double-submit cookie."""
    return secrets.token_urlsafe(24)


def session_value(token: str) -> str:
    """What the session cookie holds: a keyed hash of the token, never the token itself."""
    return hmac.new(token.encode(), b"orch-ui-session", "sha256").hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a request is refused (status and message), or ``ok``."""

    status: int = 200
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


def check_request(
    *,
    token: str | None,
    method: str,
    headers: dict[str, str],
    cookies: dict[str, str],
    own_origins: set[str],
    double_submit: bool = True,
) -> Verdict:
    """Token and cross-site checks for one request (``headers`` with lower-case names).

    Without a token (a loopback bind) the Host header must name this machine too:
    a page of another site that rebinds its DNS name to 127.0.0.1 is refused.
    """
    by_header = by_cookie = False
    if token is None:
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host and not is_loopback(name):
            return Verdict(403, f"unexpected Host '{host[:100]}' for a loopback-only service")
    if token is not None:
        auth = headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        by_header = scheme.lower() == "bearer" and _same(given.strip(), token)
        by_cookie = _same(cookies.get(SESSION_COOKIE, ""), session_value(token))
        if not (by_header or by_cookie):
            return Verdict(401, "missing or wrong token (send Authorization: Bearer TOKEN)")
    if method in ("GET", "HEAD", "OPTIONS"):
        return Verdict()
    origin = headers.get("origin")
    if origin is not None and origin not in own_origins:
        return Verdict(403, f"cross-site request from '{origin[:100]}' refused")
    if headers.get("sec-fetch-site") == "cross-site":
        return Verdict(403, "cross-site request refused")
    if double_submit and not by_header and (SESSION_COOKIE in cookies or CSRF_COOKIE in cookies):
        # a browser session: the page's own script must prove it read our cookie
        expected = cookies.get(CSRF_COOKIE, "")
        if not expected or not _same(headers.get(CSRF_HEADER, ""), expected):
            return Verdict(403, "missing or wrong X-Orch-CSRF header (reload the page)")
    return Verdict()


@dataclass
class RateLimiter:
    """A token bucket per key: ``burst`` requests at once, refilled at ``rate`` per second."""

    rate: float = 2.0
    burst: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, key: str) -> float:
        """Take one token for ``key``: 0.0 when allowed, else seconds until one is free."""
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate if self.rate > 0 else 60.0

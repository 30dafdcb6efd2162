"""The HTTP side of `orch serve` (the only starlette import): routes, security, errors as JSON.

Every error is JSON ``{"error": message, "hint": ..., "problems": [...]}`` with
its status: 400 bad request, 401 token, 403 cross-site, 404 unknown, 409 state,
413 body too large, 422 invalid inputs or workflow, 429 rate.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import OrchError, RunNotFound, UsageError, WorkflowInvalid
from ..eventlines import event_line  # the lines of `orch logs`: one renderer, no rich
from ..runs.recorded import cancelled_by, check_phase
from ..state.views import status_json
from . import security, views
from .catalog import UnknownWorkflow
from .metrics import openmetrics
from .openapi import ROUTES, document
from .runs import ActiveRun
from .security import MAX_BODY, RateLimiter, check_request
from .service import InputProblems, Refused

if TYPE_CHECKING:
    from .service import Service

__all__ = ["create_app"]

_SSE_POLL = 0.2  # seconds between looks at the store for new events
_SSE_PING = 15.0
_DISCARD = 16 * MAX_BODY  # bodies over MAX_BODY are read (and dropped) up to this size


class HTTPError(Exception):
    """An error answer."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


#: Lines of a run's log (/logs), or events (/events), per answer by default, and at most
#: (?limit=); an event stream reads its backlog PAGE events at a time.
PAGE, PAGE_MAX = 1000, 10000
#: The largest sequence number (SQLite's INTEGER); a bigger one cannot be asked of the store.
MAX_SEQ = 2**63 - 1


def whole_number(text: str, *, what: str, most: int = MAX_SEQ, least: int = 0) -> int:
    """``text`` (a query parameter or header) as a whole number from ``least`` to ``most``;
    400 otherwise. ASCII digits only: ``"²"`` passes ``str.isdigit`` but is no number."""
    if text.isascii() and text.isdigit() and least <= int(text) <= most:
        return int(text)
    raise HTTPError(400, f"{what} must be a whole number from {least} to {most}, not {text!r}")


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    body = {"error": message, **{k: v for k, v in extra.items() if v is not None}}
    headers = {"Retry-After": str(extra["retry_after"])} if "retry_after" in extra else None
    return JSONResponse(body, status_code=status, headers=headers)


def _status_of(exc: OrchError) -> int:
    if isinstance(exc, (UnknownWorkflow, RunNotFound)):
        return 404
    if isinstance(exc, InputProblems):
        return 422
    if isinstance(exc, Refused):
        return exc.status
    if isinstance(exc, WorkflowInvalid):
        return 422
    if isinstance(exc, UsageError):
        return 400
    return 500


def _orch_error(exc: OrchError) -> JSONResponse:
    problems: list[Any] | None = None
    if isinstance(exc, InputProblems):
        problems = exc.problems
    elif isinstance(exc, WorkflowInvalid):
        problems = [str(p) for p in exc.problems]
    return _error(_status_of(exc), exc.headline, hint=exc.hint, problems=problems)


Handler = Callable[[Request], Awaitable[Response]]


def _api(handler: Handler) -> Handler:
    """Map our errors to JSON answers."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except HTTPError as exc:
            return _error(exc.status, str(exc), **exc.extra)
        except OrchError as exc:
            return _orch_error(exc)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


async def read_json(request: Request) -> Any:
    """The request body as JSON (None when empty); 413 past MAX_BODY, 400 when not JSON."""
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPError(413, f"request body over {MAX_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"the request body is not JSON: {exc}") from None


class Guard:
    """ASGI middleware: body size by Content-Length, token, cross-site checks."""

    OPEN = ("/login", "/static/app.css")  # the login page and its look; nothing else

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length", "0")
        # not worth reading to answer politely (ASCII digits: "²" is a digit to isdigit)
        if length.isascii() and length.isdigit() and int(length) > _DISCARD:
            await _error(413, f"request body over {MAX_BODY} bytes")(scope, receive, send)
            return
        cookies = Request(scope).cookies
        host = headers.get("host", "")
        verdict = check_request(
            token=None if scope["path"] in self.OPEN else self.service.config.token,
            method=scope["method"],
            headers=headers,
            cookies=cookies,
            own_origins={f"http://{host}", f"https://{host}"},
            double_submit=scope["path"] not in self.OPEN,  # the login form: Origin checks only
        )
        if scope["path"] in self.OPEN and verdict.status == 401:
            verdict = security.Verdict()
        # The whole body is read first (capped): an answer sent before the body is read
        # would leave its bytes on a kept-alive connection.
        replay, too_big = receive, False
        has_body = length not in ("", "0") or "transfer-encoding" in headers
        if has_body:  # a bodyless request (SSE) keeps the real receive: it sees the disconnect
            body, too_big = await _drain(receive)
            replay = _replayer(body)
        if too_big:
            await _error(413, f"request body over {MAX_BODY} bytes")(scope, replay, send)
            return
        if not verdict.ok:
            if verdict.status == 401 and "text/html" in headers.get("accept", ""):
                await RedirectResponse("/login", status_code=303)(scope, replay, send)
                return
            await _error(verdict.status, verdict.message)(scope, replay, send)
            return
        await self.app(scope, replay, send)


async def _drain(receive: Receive) -> tuple[bytes, bool]:
    """Read the request body; past MAX_BODY it is read and dropped (True: too big), so the
    client, still sending, gets the 413 answer instead of a reset connection."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), size > MAX_BODY
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_BODY:
            chunks.append(chunk)
        elif size > _DISCARD:
            return b"", True
        if not message.get("more_body", False):
            return (b"", True) if size > MAX_BODY else (b"".join(chunks), False)


def _replayer(body: bytes) -> Receive:
    """A receive() that gives ``body`` once, then waits for the disconnect."""
    sent = False
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()  # the client's disconnect is not observed on replayed bodies
        return {"type": "http.disconnect"}

    return receive


def create_app(service: Service, *, ui: bool = True) -> Starlette:
    """The ASGI app of ``service``; the caller runs the scheduler (see server.py)."""
    store = service.store
    burst, per = service.config.webhook_rate
    limiter = RateLimiter(rate=burst / per, burst=burst)

    async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    @_api
    async def healthz(request: Request) -> Response:
        """Liveness: the service answers and its store is readable."""
        await in_thread(store.last_seq)
        return JSONResponse(
            {
                "status": "ok",
                "workflows": len(service.catalog.served()),
                "running": len(service.runs.active) - service.runs.queue_length,
                "queued": service.runs.queue_length,
            }
        )

    @_api
    async def metrics(request: Request) -> Response:
        """OpenMetrics text."""
        text = await in_thread(openmetrics, store, service.runs)
        return PlainTextResponse(
            text, media_type="application/openmetrics-text; version=1.0.0; charset=utf-8"
        )

    @_api
    async def openapi(request: Request) -> Response:
        """The OpenAPI document of this API."""
        return JSONResponse(document())

    @_api
    async def list_workflows(request: Request) -> Response:
        """Workflows served, with their schedules' next fire times and triggers."""
        entries = sorted(service.catalog.entries.values(), key=lambda e: e.name)
        return JSONResponse([service.workflow_summary(e) for e in entries])

    @_api
    async def read_workflow(request: Request) -> Response:
        """One workflow: inputs, phases, schedules, source."""
        entry = service.catalog.get(request.path_params["name"])
        return JSONResponse(service.workflow_summary(entry, detail=True))

    @_api
    async def validate_workflow(request: Request) -> Response:
        """Validate the file on disk now."""
        result = await in_thread(service.validate, request.path_params["name"])
        return JSONResponse(result, status_code=200 if result["valid"] else 422)

    def _start_body(body: Any) -> tuple[Any, str]:
        if body is None:
            return {}, "medium"
        if not isinstance(body, dict):
            raise HTTPError(400, 'the body must be a JSON object: {"inputs": {...}}')
        unknown = sorted(set(body) - {"inputs", "priority", "workflow"})
        if unknown:
            raise HTTPError(400, f"unknown field(s) {', '.join(unknown)}; use inputs, priority")
        return body.get("inputs"), str(body.get("priority", "medium"))

    @_api
    async def webhook(request: Request) -> Response:
        """The webhook trigger: start a run with JSON ``{"inputs": {...}}``."""
        name = request.path_params["name"]
        entry = service.catalog.get(name)
        wf = entry.workflow
        if wf is None or not any(t.webhook for t in wf.triggers):
            raise HTTPError(
                403,
                f"workflow '{name}' has no webhook trigger",
                hint="add `triggers: [{webhook: true}]` to it, or POST /api/runs",
            )
        wait = limiter.take(name)
        if wait > 0:
            raise HTTPError(429, "too many webhook calls; slow down", retry_after=int(wait) + 1)
        inputs, priority = _start_body(await read_json(request))
        run = service.start(name, inputs, kind="webhook", priority=priority)
        return JSONResponse(views.run_json(run), status_code=202)

    @_api
    async def start_run(request: Request) -> Response:
        """Start a run of any served workflow: ``{"workflow": NAME, "inputs": {...}}``."""
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("workflow"), str):
            raise HTTPError(400, 'the body must be {"workflow": NAME, "inputs": {...}}')
        inputs, priority = _start_body(body)
        run = service.start(body["workflow"], inputs, kind="api", priority=priority)
        return JSONResponse(views.run_json(run), status_code=202)

    @_api
    async def list_runs(request: Request) -> Response:
        """Runs, newest first; ``?workflow=`` ``?status=`` ``?limit=`` filter them."""
        q = request.query_params
        limit = whole_number(q.get("limit", "100"), what="limit", least=1, most=1000)
        workflow, status = q.get("workflow"), q.get("status")
        queued = [
            views.run_json(r)
            for r in service.runs.running(None)
            if r.status == "queued"
            and workflow in (None, r.workflow)
            and status in (None, "queued")
        ]
        stored = await in_thread(store.list_runs)
        rows = [
            views.run_json(r)
            for r in stored
            if workflow in (None, "", r.workflow) and status in (None, "", r.status)
        ]
        return JSONResponse((queued + rows)[:limit])

    async def _run_or_404(run_id: str) -> Any:
        try:
            return await in_thread(service.get_run, run_id)
        except RunNotFound:
            raise HTTPError(
                404, f"no run '{run_id}'", hint="GET /api/runs lists the runs"
            ) from None

    @_api
    async def read_run(request: Request) -> Response:
        """A run's status with its phases, Gantt bars and graph."""
        run = await _run_or_404(request.path_params["id"])
        if isinstance(run, ActiveRun):  # queued: not in the store yet
            return JSONResponse(views.run_json(run))
        # its events first, read a page at a time (a long run's are never read at once):
        # the rows read after them are at least as new as their last_seq, from which the
        # page's event stream goes on (a row older than it would never be drawn again)
        read = await in_thread(views.read_events, store, run, now=time.time())
        run = await in_thread(store.get_run, run.id)  # its status as new as the events
        phases = await in_thread(store.phases, run.id)
        decisions = await in_thread(store.decisions, run.id)
        by = await in_thread(cancelled_by, store, run)
        items = await in_thread(store.items_done, run.id)
        # `orch status --json`, plus what the run's page shows
        body = status_json(
            run, phases, now=time.time(), decisions=decisions, cancelled_by=by, items=items
        )
        for phase in body["phases"]:
            phase["approval"] = read.asks.get(phase["id"])
        body["attempts"] = read.attempts
        body["graph"] = await in_thread(views.graph, run, phases)  # the same states
        body["trigger"] = read.trigger
        body["last_seq"] = read.last_seq
        return JSONResponse(body)

    @_api
    async def run_outputs(request: Request) -> Response:
        """A run's outputs."""
        run = await _run_or_404(request.path_params["id"])
        return JSONResponse(
            {"id": run.id, "status": run.status, "outputs": getattr(run, "outputs", None)}
        )

    def _paging(request: Request) -> tuple[int, int]:
        """``?after=SEQ`` (0) and ``?limit=`` (PAGE, at most PAGE_MAX) of a paged read."""
        q = request.query_params
        after = whole_number(q.get("after", "0"), what="after")
        return after, whole_number(q.get("limit", str(PAGE)), what="limit", least=1, most=PAGE_MAX)

    async def _page(
        request: Request, run: Any, after: int, limit: int, phase: str | None = None
    ) -> tuple[list[tuple[int, Any]], dict[str, str] | None]:
        """A page of the run's events (of one ``phase``): the first ``limit`` after
        ``after``, and when more follow, the header naming the next page:
        ``Link: <PATH?after=LAST&limit=N>; rel="next"`` (``after`` the page's last ``seq``,
        the other parameters kept)."""
        if isinstance(run, ActiveRun):  # queued: nothing recorded yet
            return [], None
        events = await in_thread(store.events, run.id, phase=phase, after=after, limit=limit + 1)
        if len(events) <= limit:
            return events, None
        events = events[:limit]
        nxt = request.url.include_query_params(after=events[-1][0], limit=limit)
        return events, {"Link": f'<{nxt.path}?{nxt.query}>; rel="next"'}

    @_api
    async def run_logs(request: Request) -> Response:
        """The run's log as `orch logs` prints it (each event's line); ``?phase=`` for one
        phase's, ``?after=SEQ`` for what came after an event; at most ``?limit=`` lines
        (PAGE): a ``Link`` header names the next page when more follow."""
        run = await _run_or_404(request.path_params["id"])
        phase = request.query_params.get("phase") or None
        after, limit = _paging(request)
        if phase is not None and not isinstance(run, ActiveRun):
            try:
                await in_thread(check_phase, store, run, phase)
            except UsageError as exc:
                raise HTTPError(404, exc.headline, hint=exc.hint) from None
        events, headers = await _page(request, run, after, limit, phase)
        return JSONResponse(views.logs(events, event_line), headers=headers)

    @_api
    async def run_events(request: Request) -> Response:
        """The run's events after ``?after=SEQ``, at most ``?limit=`` (PAGE) of them: a
        ``Link`` header names the next page when more follow."""
        run = await _run_or_404(request.path_params["id"])
        events, headers = await _page(request, run, *_paging(request))
        return JSONResponse([views.event_json(s, e) for s, e in events], headers=headers)

    @_api
    async def stream_events(request: Request) -> Response:
        """Server-sent events: stored events after Last-Event-ID (or ?after=), then live ones."""
        run_id = request.path_params["id"]
        await _run_or_404(run_id)
        last_id = request.headers.get("last-event-id")
        after = (
            whole_number(last_id, what="Last-Event-ID")
            if last_id
            else whole_number(request.query_params.get("after", "0"), what="after")
        )

        async def body() -> AsyncIterator[str]:
            nonlocal after
            full_id = None
            last_ping = time.monotonic()
            yield "retry: 1000\n\n"
            while not service.stopping:  # the service stops: the stream ends (see server.py)
                if full_id is None:
                    try:
                        full_id = (await in_thread(store.get_run, run_id)).id
                    except RunNotFound:  # queued: not in the store yet
                        await asyncio.sleep(_SSE_POLL)
                        continue
                # the backlog PAGE events at a time (a long run's is never read at once)
                events = await in_thread(store.events, full_id, after=after, limit=PAGE)
                ended = False
                for seq, event in events:
                    after = seq
                    data = json.dumps(views.event_json(seq, event), default=str)
                    yield f"id: {seq}\nevent: {event.event}\ndata: {data}\n\n"
                    ended = ended or event.event in views.FINAL_EVENTS
                if ended and full_id not in service.runs.active:
                    yield "event: end\ndata: {}\n\n"
                    return
                if len(events) == PAGE:  # a full page: more may be stored, read on now
                    continue
                if time.monotonic() - last_ping > _SSE_PING:
                    last_ping = time.monotonic()
                    yield ": ping\n\n"
                await asyncio.sleep(_SSE_POLL)

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @_api
    async def cancel_run(request: Request) -> Response:
        """Cancel a queued or running run of this service."""
        run = await _run_or_404(request.path_params["id"])
        return JSONResponse({"id": run.id, "message": service.cancel(run.id)}, status_code=202)

    @_api
    async def resume_run(request: Request) -> Response:
        """Resume a stopped run (it keeps its id)."""
        run = await _run_or_404(request.path_params["id"])
        message = await in_thread(service.resume, run.id)
        return JSONResponse({"id": run.id, "message": message}, status_code=202)

    @_api
    async def decide(request: Request) -> Response:
        """Approve or reject a phase waiting for approval."""
        run = await _run_or_404(request.path_params["id"])
        decision = request.path_params["decision"]
        body = await read_json(request) or {}
        comment = body.get("comment") if isinstance(body, dict) else None
        message = await in_thread(
            service.decide, run.id, request.path_params["phase"], decision, comment
        )
        return JSONResponse({"id": run.id, "message": message})

    @_api
    async def stats(request: Request) -> Response:
        """Counts by workflow and status, phase durations and retries, agent load, queue."""
        data = await in_thread(store.metrics)
        return JSONResponse(
            {
                "runs": [{"workflow": w, "status": s, "count": n} for w, s, n in data["runs"]],
                "phases": [
                    {"workflow": w, "phase": p, "count": n, "seconds": t, "retries": r}
                    for w, p, n, t, r in data["phases"]
                ],
                "agents": [{"agent": a, "running": n} for a, n in data["agents"]],
                "queued": service.runs.queue_length,
                "fired": service.scheduler.fired,
                "clock": service.scheduler.last_tick,
                "notes": [{"ts": ts, "text": t} for ts, t in service.notes],
            }
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"nothing at {request.url.path}", hint="GET /api/openapi.json")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return _error(405, f"{request.method} is not allowed on {request.url.path}")

    async def crashed(request: Request, exc: Exception) -> Response:
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    handlers: dict[tuple[str, str], Handler] = {
        ("get", "/healthz"): healthz,
        ("get", "/metrics"): metrics,
        ("get", "/api/openapi.json"): openapi,
        ("get", "/api/workflows"): list_workflows,
        ("get", "/api/workflows/{name}"): read_workflow,
        ("post", "/api/workflows/{name}/validate"): validate_workflow,
        ("post", "/api/workflows/{name}/runs"): webhook,
        ("get", "/api/runs"): list_runs,
        ("post", "/api/runs"): start_run,
        ("get", "/api/runs/{id}"): read_run,
        ("get", "/api/runs/{id}/outputs"): run_outputs,
        ("get", "/api/runs/{id}/logs"): run_logs,
        ("get", "/api/runs/{id}/events"): run_events,
        ("get", "/api/runs/{id}/events/stream"): stream_events,
        ("post", "/api/runs/{id}/cancel"): cancel_run,
        ("post", "/api/runs/{id}/resume"): resume_run,
        ("post", "/api/runs/{id}/phases/{phase}/{decision}"): decide,
        ("get", "/api/stats"): stats,
    }
    # the OpenAPI document's table is the routing table: the two cannot drift apart
    # a phase of a sub-run is addressed `write/approve`: {phase} may hold a /
    routes: list[Any] = [
        Route(
            path.replace("{phase}", "{phase:path}"),
            handlers[(method, path)],
            methods=[method.upper()],
        )
        for method, path, *_ in ROUTES
    ]
    if ui:
        from . import ui as pages

        routes += pages.routes(service)
        routes.append(Mount("/static", app=StaticFiles(directory=str(pages.STATIC)), name="static"))
    app = Starlette(
        routes=routes,
        exception_handlers={404: not_found, 405: method_not_allowed, Exception: crashed},
    )
    app.add_middleware(Guard, service=service)
    return app

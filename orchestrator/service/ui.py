"""The web UI's pages (jinja2 with autoescape; not the workflow templates of ``orchestrator.expr``).

Pages are thin HTML shells; ``static/app.js`` fills them from the JSON API and
keeps them live (server-sent events on a run page, a refresh every two seconds
on the lists). Nothing is loaded from another site: the UI works offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .security import CSRF_COOKIE, SESSION_COOKIE, new_csrf_token, session_value

if TYPE_CHECKING:
    from .service import Service

__all__ = ["STATIC", "routes"]

HERE = Path(__file__).parent
STATIC = HERE / "static"
_ENV = Environment(
    loader=FileSystemLoader(str(HERE / "templates")),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _page(request: Request, name: str, **context: Any) -> Response:
    html = _ENV.get_template(name).render(page=name.removesuffix(".html"), **context)
    response = HTMLResponse(html, headers={"Cache-Control": "no-store"})
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    if CSRF_COOKIE not in request.cookies:
        response.set_cookie(CSRF_COOKIE, new_csrf_token(), httponly=False, samesite="strict")
    return response


def parse_form(raw: bytes) -> dict[str, str]:
    """An urlencoded form body (the login page) as a mapping of first values."""
    from urllib.parse import parse_qs

    return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}


def routes(service: Service) -> list[Route]:
    """The UI routes: /, /runs/{id}, /workflows, /login."""

    async def runs_page(request: Request) -> Response:
        return _page(
            request,
            "runs.html",
            workflow=request.query_params.get("workflow", ""),
            status=request.query_params.get("status", ""),
            workflows=sorted(service.catalog.entries),
        )

    async def run_page(request: Request) -> Response:
        return _page(request, "run.html", run_id=request.path_params["id"])

    async def workflows_page(request: Request) -> Response:
        return _page(request, "workflows.html")

    async def login_page(request: Request) -> Response:
        return _page(request, "login.html", failed=False, needed=service.config.token is not None)

    async def login(request: Request) -> Response:
        token = service.config.token
        raw = await request.body()
        given = parse_form(raw[:4096]).get("token", "")
        if token is None:
            return RedirectResponse("/", status_code=303)
        from .security import _same

        if not _same(given, token):
            return _page(request, "login.html", failed=True, needed=True)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, session_value(token), httponly=True, samesite="strict")
        return response

    return [
        Route("/", runs_page),
        Route("/runs/{id}", run_page),
        Route("/workflows", workflows_page),
        Route("/login", login_page),
        Route("/login", login, methods=["POST"]),
    ]

"""``/api/openapi.json``: the OpenAPI 3.1 document of the service's HTTP API."""

from __future__ import annotations

from typing import Any

__all__ = ["ROUTES", "document"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_RUN = {"$ref": "#/components/schemas/Run"}
_ANY: dict[str, Any] = {}

#: (method, path, summary, success status, response schema, request body schema or None)
ROUTES: tuple[tuple[str, str, str, int, dict[str, Any], dict[str, Any] | None], ...] = (
    ("get", "/healthz", "Liveness: the service answers and its store is readable", 200, _ANY, None),
    ("get", "/api/openapi.json", "This document", 200, _ANY, None),
    (
        "get",
        "/metrics",
        "OpenMetrics text: runs, phase durations, retries, agents, queue",
        200,
        {"type": "string"},
        None,
    ),
    (
        "get",
        "/api/workflows",
        "Workflows served, with schedules and next fire times",
        200,
        {"type": "array", "items": {"$ref": "#/components/schemas/Workflow"}},
        None,
    ),
    (
        "get",
        "/api/workflows/{name}",
        "One workflow: inputs, phases, schedules, source",
        200,
        {"$ref": "#/components/schemas/Workflow"},
        None,
    ),
    (
        "post",
        "/api/workflows/{name}/validate",
        "Validate the file on disk (422 when invalid)",
        200,
        _ANY,
        None,
    ),
    (
        "post",
        "/api/workflows/{name}/runs",
        "Webhook trigger (needs `webhook: true`); rate limited",
        202,
        _RUN,
        {"$ref": "#/components/schemas/StartRun"},
    ),
    (
        "get",
        "/api/runs",
        "Runs, newest first; filter with ?workflow= ?status= ?limit=",
        200,
        {"type": "array", "items": _RUN},
        None,
    ),
    (
        "post",
        "/api/runs",
        "Start a run of a served workflow",
        202,
        _RUN,
        {
            "allOf": [
                {"$ref": "#/components/schemas/StartRun"},
                {"required": ["workflow"], "properties": {"workflow": {"type": "string"}}},
            ]
        },
    ),
    ("get", "/api/runs/{id}", "A run with its phases, attempts (Gantt) and graph", 200, _RUN, None),
    ("get", "/api/runs/{id}/outputs", "A run's outputs", 200, _ANY, None),
    (
        "get",
        "/api/runs/{id}/logs",
        "Its log, as `orch logs` (?phase=, ?after=SEQ, ?limit= lines: 1000 by default, at "
        "most 10000; a Link header, rel=next, names the next page when more follow)",
        200,
        _ANY,
        None,
    ),
    (
        "get",
        "/api/runs/{id}/events",
        "Stored events after ?after=SEQ, at most ?limit= (1000 by default, at most 10000; "
        "a Link header, rel=next, names the next page when more follow)",
        200,
        {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
        None,
    ),
    (
        "get",
        "/api/runs/{id}/events/stream",
        "Live events as server-sent events (Last-Event-ID resumes)",
        200,
        {"type": "string"},
        None,
    ),
    (
        "post",
        "/api/runs/{id}/cancel",
        "Cancel a queued or running run of this service",
        202,
        _ANY,
        None,
    ),
    ("post", "/api/runs/{id}/resume", "Resume a stopped run (same id)", 202, _ANY, None),
    (
        "post",
        "/api/runs/{id}/phases/{phase}/{decision}",
        "Approve or reject a waiting approval (decision: approve | reject)",
        200,
        _ANY,
        {"type": "object", "properties": {"comment": {"type": "string"}}},
    ),
    (
        "get",
        "/api/stats",
        "Counts, phase durations and retries, agent load, queue",
        200,
        _ANY,
        None,
    ),
)


def document() -> dict[str, Any]:
    """The OpenAPI document (built from ROUTES, so it lists exactly the served routes)."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, status, schema, body in ROUTES:
        op: dict[str, Any] = {
            "summary": summary,
            "responses": {
                str(status): {"description": "OK", "content": {_type(path): {"schema": schema}}},
                "default": {
                    "description": "An error",
                    "content": {"application/json": {"schema": _ERROR}},
                },
            },
        }
        params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        if params:
            op["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in params
            ]
        if body is not None:
            op["requestBody"] = {"content": {"application/json": {"schema": body}}}
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "orch serve", "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {"type": "string"},
                        "hint": {"type": "string"},
                        "problems": {"type": "array"},
                    },
                },
                "StartRun": {
                    "type": "object",
                    "properties": {
                        "inputs": {"type": "object"},
                        "priority": {"enum": ["critical", "high", "medium", "low", "background"]},
                    },
                },
                "Run": {
                    "type": "object",
                    "required": ["id", "workflow", "status"],
                    "properties": {
                        "id": {"type": "string"},
                        "workflow": {"type": "string"},
                        "status": {"type": "string"},
                        "started": {"type": ["number", "null"]},
                        "ended": {"type": ["number", "null"]},
                        "outputs": {},
                    },
                },
                "Workflow": {"type": "object", "required": ["name", "valid"]},
                "Event": {
                    "type": "object",
                    "required": ["seq", "event", "run_id", "ts"],
                    "properties": {"seq": {"type": "integer"}, "event": {"type": "string"}},
                },
            },
        },
        "security": [{"token": []}],
    }


def _type(path: str) -> str:
    if path == "/metrics":
        return "application/openmetrics-text"
    if path.endswith("/stream"):
        return "text/event-stream"
    return "application/json"

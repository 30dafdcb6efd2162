"""OpenTelemetry traces of a run (the only module that imports ``opentelemetry``).

Opt-in by the standard variables: tracing is on when ``OTEL_TRACES_EXPORTER``
is set (and not ``none``) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is. Nothing of OpenTelemetry is
imported otherwise (``tracing_wanted`` reads only the environment), and when
the ``orch[otel]`` extra is missing ``start_tracing`` raises ``TracingUnavailable``
with the command that installs it.

``RunTracer`` turns the run into spans, fed by its events (a sink) and by the
call path (a call middleware):

    run  (orch.run, from workflow_started to the workflow_* event)
    └── phase X  (phase_started .. phase_completed / failed / skipped)
        └── attempt N  (an attempt, ended by phase_retry or the phase's end)
            └── call  (one agent call; llm calls follow the GenAI conventions)
                └── call  (a sub-run's calls, under the workflow agent's call)
    └── compensate X

The call span's W3C ``traceparent`` goes to the agent (``CallSpec.traceparent``:
an http/llm header, ``TRACEPARENT`` for shell commands). A ``TRACEPARENT`` in
orch's own environment (a CI job's trace) becomes the run span's parent.
"""

from __future__ import annotations

import contextvars
import dataclasses
import sys
from collections.abc import Mapping
from typing import Any

from .errors import UsageError
from .events import Event

__all__ = ["RunTracer", "TracingUnavailable", "start_tracing", "tracing_wanted"]


class TracingUnavailable(UsageError):
    """Tracing was asked for, but the opentelemetry packages are not installed."""


def tracing_wanted(environ: Mapping[str, str]) -> bool:
    """Whether the standard OpenTelemetry variables ask for traces."""
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def start_tracing(environ: Mapping[str, str]) -> RunTracer:
    """A RunTracer exporting as the environment says (OTLP over HTTP, or ``console``).

    Raises TracingUnavailable when the extra is not installed, UsageError for an
    exporter other than ``otlp`` or ``console``.
    """
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingUnavailable(
            "tracing is asked for (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER), "
            f"but OpenTelemetry is not installed ({exc.name} is missing)",
            hint="pip install 'orch[otel]', or unset the OTEL_ variables",
        ) from None
    kind = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    exporter: Any
    if kind == "otlp":
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol != "http/protobuf":
            raise UsageError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL '{protocol}' is not supported",
                hint="orch exports OTLP over HTTP: use http/protobuf (the default)",
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # reads the OTEL_EXPORTER_OTLP_* variables
    elif kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporter = ConsoleSpanExporter(out=sys.stderr)  # stdout carries the outputs
    else:
        raise UsageError(
            f"OTEL_TRACES_EXPORTER '{kind}' is not supported",
            hint="use otlp (the default), console, or none",
        )
    provider = TracerProvider(resource=Resource.create({"service.name": "orch"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return RunTracer(provider, environ)


#: The call span an agent call runs under: a sub-run's calls (the workflow agent) nest in it.
_CALL: contextvars.ContextVar[Any] = contextvars.ContextVar("orch_call_span", default=None)


def _ns(ts: float) -> int:
    return int(ts * 1e9)


class RunTracer:
    """The spans of one run. Call ``begin`` before the run (its trace id goes into
    RunOptions.trace_id), pass ``sink`` and ``middleware`` to the engine, ``shutdown``
    at the end (flushes the exporter)."""

    def __init__(self, provider: Any, environ: Mapping[str, str]) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._provider = provider
        self._tracer = provider.get_tracer("orch")
        self._propagator = TraceContextTextMapPropagator()
        parent = environ.get("TRACEPARENT")
        self._parent = self._propagator.extract({"traceparent": parent}) if parent else None
        self._run: Any = None
        self._run_id: str | None = None
        self.trace_id: str | None = None
        self._phases: dict[str, Any] = {}
        self._attempts: dict[str, Any] = {}
        self._compensations: dict[str, Any] = {}

    def begin(self, workflow: str, start: float) -> str:
        """Start the run span now; return its trace id (32 hex digits)."""
        self._run = self._tracer.start_span(
            f"run {workflow}",
            context=self._parent,
            start_time=_ns(start),
            attributes={"orch.workflow": workflow},
        )
        self.trace_id = format(self._run.get_span_context().trace_id, "032x")
        return self.trace_id

    def _in(self, span: Any) -> Any:
        return self._trace.set_span_in_context(span)

    def _start(self, name: str, parent: Any, ts: float, attributes: dict[str, Any]) -> Any:
        return self._tracer.start_span(
            name, context=self._in(parent), start_time=_ns(ts), attributes=attributes
        )

    def _end(self, span: Any, ts: float, ok: bool, message: str = "") -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.OK) if ok else Status(StatusCode.ERROR, message))
        span.end(end_time=_ns(ts))

    # -- the event sink ---------------------------------------------------------------

    def sink(self, event: Event) -> None:
        """Fold one event into spans (a sync engine sink)."""
        if self._run is None:
            return
        pid, data, kind = event.phase, event.data, event.event
        if pid is None:
            if kind == "workflow_started":
                self._run_id = event.run_id
                self._run.set_attribute("orch.run_id", event.run_id)
            elif kind.startswith("workflow_"):
                self._end_run(event)
            return
        if kind == "phase_started":
            phase = self._start(
                f"phase {pid}",
                self._run,
                event.ts,
                {"orch.phase.id": pid, "orch.agent": str(data.get("agent", ""))},
            )
            self._phases[pid] = phase
            self._open_attempt(pid, event.attempt or 1, event.ts)
        elif kind == "phase_retry" and "item" not in data:
            attempt = self._attempts.pop(pid, None)
            if attempt is not None:
                self._end(attempt, event.ts, False, str(data.get("error", "")))
            delay = data.get("delay")
            wait = float(delay) if isinstance(delay, (int, float)) else 0.0
            self._open_attempt(pid, int(data.get("next_attempt") or 2), event.ts + wait)
        elif kind in ("phase_completed", "phase_failed", "phase_skipped"):
            self._end_phase(pid, event)
        elif kind == "phase_stream" and data.get("compensation") == "started":
            self._compensations[pid] = self._start(
                f"compensate {pid}", self._run, event.ts, {"orch.phase.id": pid}
            )
        elif kind == "phase_compensated":
            span = self._compensations.pop(pid, None)
            if span is not None:
                self._end(span, event.ts, bool(data.get("ok")), str(data.get("error") or ""))

    def _open_attempt(self, pid: str, n: int, ts: float) -> None:
        phase = self._phases.get(pid)
        if phase is not None:
            self._attempts[pid] = self._start(
                f"attempt {n}", phase, ts, {"orch.phase.id": pid, "orch.attempt": n}
            )

    def _end_phase(self, pid: str, event: Event) -> None:
        data = event.data
        status = str(data.get("status", ""))
        ok = status in ("completed", "skipped")
        message = str(data.get("error") or "")
        phase = self._phases.pop(pid, None)
        if phase is None:  # skipped before it started: a point in time
            phase = self._start(f"phase {pid}", self._run, event.ts, {"orch.phase.id": pid})
        phase.set_attribute("orch.phase.status", status)
        phase.set_attribute("orch.cache_hit", bool(data.get("cached")))
        if isinstance(data.get("attempts"), int):
            phase.set_attribute("orch.attempts", data["attempts"])
        if data.get("reason"):
            phase.set_attribute("orch.skip_reason", str(data["reason"]))
        attempt = self._attempts.pop(pid, None)
        if attempt is not None:
            attempt.set_attribute("orch.cache_hit", bool(data.get("cached")))
            self._end(attempt, event.ts, ok, message)
        self._end(phase, event.ts, ok, message)

    def _end_run(self, event: Event) -> None:
        for pid in list(self._phases):  # phases still open: the run ended under them
            self._end_phase(pid, dataclasses.replace(event, data={"status": "cancelled"}))
        status = str(event.data.get("status", ""))
        self._run.set_attribute("orch.run.status", status)
        self._end(self._run, event.ts, status == "completed", str(event.data.get("error") or ""))

    # -- the call middleware ------------------------------------------------------------

    async def middleware(self, spec: Any, channel: Any, call_next: Any) -> Any:
        """A span per agent call (child of its attempt), its traceparent passed to the agent.

        A sub-run's calls (another run id) nest in the call span of the phase that
        started the sub-run (the ``workflow`` agent's call)."""
        if spec.run_id != self._run_id and _CALL.get() is not None:
            parent = _CALL.get()
        else:
            parent = (
                self._attempts.get(spec.phase_id) or self._phases.get(spec.phase_id) or self._run
            )
        if parent is None:
            return await call_next(spec, channel)
        llm = spec.agent_type == "llm"
        model = str(spec.input.get("model", "")) if llm else ""
        attributes: dict[str, Any] = {
            "orch.phase.id": spec.phase_id,
            "orch.agent": spec.agent_name,
            "orch.agent.type": spec.agent_type,
            "orch.attempt": spec.attempt,
        }
        if spec.item is not None:
            attributes["orch.item"] = spec.item
        if llm:  # OpenTelemetry semantic conventions for GenAI client spans
            attributes |= {
                "gen_ai.operation.name": "chat",
                "gen_ai.system": "openai",
                "gen_ai.request.model": model,
            }
        name = f"chat {model}" if llm else f"call {spec.agent_name}"
        span = self._tracer.start_span(name, context=self._in(parent), attributes=attributes)
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._in(span))
        spec = dataclasses.replace(spec, traceparent=carrier.get("traceparent"))
        from opentelemetry.trace import Status, StatusCode

        token = _CALL.set(span)
        try:
            result = await call_next(spec, channel)
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.end()
            raise
        finally:
            _CALL.reset(token)
        metadata = getattr(result, "metadata", None) or {}
        tokens = metadata.get("tokens") if isinstance(metadata, Mapping) else None
        if llm and isinstance(tokens, Mapping):
            span.set_attribute("gen_ai.usage.input_tokens", int(tokens.get("prompt") or 0))
            span.set_attribute("gen_ai.usage.output_tokens", int(tokens.get("completion") or 0))
            if metadata.get("model"):
                span.set_attribute("gen_ai.response.model", str(metadata["model"]))
        if isinstance(metadata, Mapping) and isinstance(metadata.get("cost"), (int, float)):
            span.set_attribute("orch.cost", float(metadata["cost"]))
        span.set_status(Status(StatusCode.OK))
        span.end()
        return result

    def shutdown(self) -> None:
        """End what is still open and flush every span to the exporter."""
        self._provider.shutdown()

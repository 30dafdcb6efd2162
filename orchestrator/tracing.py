"""OpenTelemetry traces of a run (the only module that imports ``opentelemetry``).

Opt-in by the standard variables: tracing is on when ``OTEL_TRACES_EXPORTER``
is set (and not ``none``) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is. Nothing of OpenTelemetry is
imported otherwise (``tracing_wanted`` reads only the environment), and when
the ``otel`` extra is missing ``start_tracing`` raises ``TracingUnavailable``
with the command that installs it.

``RunTracer`` turns the run into spans, fed by its events (a sink) and by the
call path (a call middleware):

    run  (orch.run, from workflow_started to the workflow_* event)
    └── phase X  (phase_started .. phase_completed / failed / skipped)
        └── attempt N  (an attempt, ended by phase_retry or the phase's end)
            └── call  (one agent call; llm calls follow the GenAI conventions)
                └── run Y  (a sub-run the call started: the workflow agent)
                    └── phase, attempt, call ...  (the sub-run's own, as above)
    └── compensate X

The sink follows sub-runs (``sees_sub_runs``: the engine gives it their events,
each with the sub-run's run id), so a sub-run has its own run, phase and
attempt spans, in the same trace, under the call of the phase that started it.

No secret reaches a span: what the sink folds comes from events the engine has
masked (a sub-run's masker masks its parent's secrets too), and what the call
middleware writes (attributes, an error status) is masked with the run's masker
(``CallChannel.masker``).

The call span's W3C ``traceparent`` goes to the agent (``CallSpec.traceparent``:
an http/llm header, ``TRACEPARENT`` for shell commands). A ``TRACEPARENT`` in
orch's own environment (a CI job's trace) becomes the run span's parent.
"""

from __future__ import annotations

import contextvars
import dataclasses
import sys
from collections.abc import Callable, Mapping
from typing import Any

from .errors import UsageError, one_line
from .events import Event, SecretMasker

__all__ = [
    "RunTracer",
    "TracingUnavailable",
    "start_tracing",
    "tracing_provider",
    "tracing_wanted",
]


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


def start_tracing(environ: Mapping[str, str], provider: Any = None) -> RunTracer:
    """A RunTracer exporting as the environment says (OTLP over HTTP, or ``console``).

    With ``provider`` (``tracing_provider``'s, shared by the runs of `orch serve`)
    the tracer uses it and leaves it open at ``shutdown``. Raises TracingUnavailable
    when the extra is not installed, UsageError for an exporter other than ``otlp``
    or ``console``.
    """
    if provider is not None:
        return RunTracer(provider, environ, owns_provider=False)
    return RunTracer(tracing_provider(environ), environ)


def tracing_provider(environ: Mapping[str, str]) -> Any:
    """The OpenTelemetry TracerProvider the environment asks for (its exporter, a batch
    processor); ``shutdown()`` flushes it. Raises as ``start_tracing``."""
    from .extras import install_command, missing_module

    missing = missing_module("otel")
    if missing is not None:
        raise TracingUnavailable(
            "tracing is asked for (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER), "
            f"but OpenTelemetry is not installed ({missing} is missing)",
            hint=f"{install_command('otel')}, or unset the OTEL_ variables",
        )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

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
    return provider


#: The call an agent call runs under (its span, run id and phase id): a sub-run started by
#: that call (the ``workflow`` agent) nests its run span in it.
_CALL: contextvars.ContextVar[tuple[Any, str, str] | None] = contextvars.ContextVar(
    "orch_call_span", default=None
)


def _masked(masker: SecretMasker | None, value: Any) -> Any:
    """A string with the secrets of ``masker`` masked; anything else as it is."""
    return masker.mask_text(value) if masker and isinstance(value, str) else value


def _ns(ts: float) -> int:
    return int(ts * 1e9)


class _RunSpans:
    """The open spans of one run (the traced run, or one of its sub-runs)."""

    __slots__ = ("span", "phases", "attempts", "compensations")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.phases: dict[str, Any] = {}
        self.attempts: dict[str, Any] = {}
        self.compensations: dict[str, Any] = {}


class _Sink:
    """The tracer's event sink; it sees the events of sub-runs too (``sees_sub_runs``)."""

    __slots__ = ("fold",)
    sees_sub_runs = True  # the engine passes this sink on to every sub-run

    def __init__(self, fold: Callable[[Event], None]) -> None:
        self.fold = fold

    def __call__(self, event: Event) -> None:
        self.fold(event)


class RunTracer:
    """The spans of one run and its sub-runs. Call ``begin`` before the run (its trace id
    goes into RunOptions.trace_id), pass ``sink`` to the engine (it follows sub-runs
    too) and ``middleware`` as a call middleware, ``shutdown`` at the end (flushes
    the exporter)."""

    def __init__(
        self, provider: Any, environ: Mapping[str, str], *, owns_provider: bool = True
    ) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._provider = provider
        self._owns_provider = owns_provider
        self._tracer = provider.get_tracer("orch")
        self._propagator = TraceContextTextMapPropagator()
        parent = environ.get("TRACEPARENT")
        self._parent = self._propagator.extract({"traceparent": parent}) if parent else None
        self._top: _RunSpans | None = None
        self._run_id: str | None = None
        self._runs: dict[str, _RunSpans] = {}  # run id -> its open spans (sub-runs included)
        self.trace_id: str | None = None
        self.sink = _Sink(self._fold)

    def begin(self, workflow: str, start: float) -> str:
        """Start the run span now; return its trace id (32 hex digits)."""
        span = self._tracer.start_span(
            f"run {workflow}",
            context=self._parent,
            start_time=_ns(start),
            attributes={"orch.workflow": workflow},
        )
        self._top = _RunSpans(span)
        self.trace_id = format(span.get_span_context().trace_id, "032x")
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

    def _fold(self, event: Event) -> None:
        """Fold one event, of the run or of one of its sub-runs, into spans."""
        run = self._runs.get(event.run_id)
        if run is None:
            run = self._open_run(event)
            if run is None:
                return
        pid, data, kind = event.phase, event.data, event.event
        if pid is None:
            if kind.startswith("workflow_") and kind != "workflow_started":
                self._end_run(run, event)
                if event.run_id != self._run_id:
                    del self._runs[event.run_id]  # a sub-run ended
            return
        if kind == "phase_started":
            phase = self._start(
                f"phase {pid}",
                run.span,
                event.ts,
                {"orch.phase.id": pid, "orch.agent": str(data.get("agent", ""))},
            )
            run.phases[pid] = phase
            self._open_attempt(run, pid, event.attempt or 1, event.ts)
        elif kind == "phase_retry" and "item" not in data:
            attempt = run.attempts.pop(pid, None)
            if attempt is not None:
                self._end(attempt, event.ts, False, str(data.get("error", "")))
            delay = data.get("delay")
            wait = float(delay) if isinstance(delay, (int, float)) else 0.0
            self._open_attempt(run, pid, int(data.get("next_attempt") or 2), event.ts + wait)
        elif kind in ("phase_completed", "phase_failed", "phase_skipped"):
            self._end_phase(run, pid, event)
        elif kind == "breaker_opened":
            span = run.attempts.get(pid) or run.phases.get(pid) or run.span
            span.add_event(
                "circuit breaker opened",
                {
                    "orch.agent": str(data.get("agent", "")),
                    "orch.breaker.failures": int(data.get("failures") or 0),
                    "orch.breaker.reset_after": float(data.get("reset_after") or 0),
                },
                timestamp=_ns(event.ts),
            )
        elif kind == "phase_stream" and data.get("compensation") == "started":
            run.compensations[pid] = self._start(
                f"compensate {pid}", run.span, event.ts, {"orch.phase.id": pid}
            )
        elif kind == "phase_compensated":
            span = run.compensations.pop(pid, None)
            if span is not None:
                self._end(span, event.ts, bool(data.get("ok")), str(data.get("error") or ""))

    def _open_run(self, event: Event) -> _RunSpans | None:
        """The spans of the run an event of a run not seen yet starts: the traced run's
        first event, or a sub-run's workflow_started (its span nests in the call that
        started it); None for anything else."""
        if self._top is None:
            return None
        if self._run_id is None:  # the traced run's first event
            self._run_id = event.run_id
            self._top.span.set_attribute("orch.run_id", event.run_id)
            self._runs[event.run_id] = self._top
            return self._top
        if event.event != "workflow_started":
            return None
        caller = _CALL.get()
        workflow = str(event.data.get("workflow", ""))
        attributes: dict[str, Any] = {"orch.workflow": workflow, "orch.run_id": event.run_id}
        if caller is not None:
            attributes |= {"orch.parent.run_id": caller[1], "orch.parent.phase.id": caller[2]}
        parent = caller[0] if caller is not None else self._top.span
        run = self._runs[event.run_id] = _RunSpans(
            self._start(f"run {workflow}", parent, event.ts, attributes)
        )
        return run

    def _open_attempt(self, run: _RunSpans, pid: str, n: int, ts: float) -> None:
        phase = run.phases.get(pid)
        if phase is not None:
            run.attempts[pid] = self._start(
                f"attempt {n}", phase, ts, {"orch.phase.id": pid, "orch.attempt": n}
            )

    def _end_phase(self, run: _RunSpans, pid: str, event: Event) -> None:
        data = event.data
        status = str(data.get("status", ""))
        ok = status in ("completed", "skipped")
        message = str(data.get("error") or "")
        phase = run.phases.pop(pid, None)
        if phase is None:  # skipped before it started: a point in time
            phase = self._start(f"phase {pid}", run.span, event.ts, {"orch.phase.id": pid})
        phase.set_attribute("orch.phase.status", status)
        phase.set_attribute("orch.cache_hit", bool(data.get("cached")))
        if isinstance(data.get("attempts"), int):
            phase.set_attribute("orch.attempts", data["attempts"])
        if data.get("reason"):
            phase.set_attribute("orch.skip_reason", str(data["reason"]))
        attempt = run.attempts.pop(pid, None)
        if attempt is not None:
            attempt.set_attribute("orch.cache_hit", bool(data.get("cached")))
            self._end(attempt, event.ts, ok, message)
        self._end(phase, event.ts, ok, message)

    def _end_run(self, run: _RunSpans, event: Event) -> None:
        for pid in list(run.phases):  # phases still open: the run ended under them
            self._end_phase(run, pid, dataclasses.replace(event, data={"status": "cancelled"}))
        status = str(event.data.get("status", ""))
        run.span.set_attribute("orch.run.status", status)
        self._end(run.span, event.ts, status == "completed", str(event.data.get("error") or ""))

    # -- the call middleware ------------------------------------------------------------

    async def middleware(self, spec: Any, channel: Any, call_next: Any) -> Any:
        """A span per agent call (child of its attempt), its traceparent passed to the agent.

        The call's span is the parent of any sub-run the call starts (the ``workflow``
        agent's): the sub-run's run, phase and attempt spans nest under it."""
        run = self._runs.get(spec.run_id)
        if run is not None:
            parent = run.attempts.get(spec.phase_id) or run.phases.get(spec.phase_id) or run.span
        else:  # a run the sink does not follow: under the call that started it, if any
            caller = _CALL.get()
            parent = caller[0] if caller is not None else None
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
        masker = channel.masker
        if masker:  # what a call writes into its span is masked with the run's masker
            attributes = {k: _masked(masker, v) for k, v in attributes.items()}
        name = _masked(masker, f"chat {model}" if llm else f"call {spec.agent_name}")
        span = self._tracer.start_span(name, context=self._in(parent), attributes=attributes)
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._in(span))
        spec = dataclasses.replace(spec, traceparent=carrier.get("traceparent"))
        from opentelemetry.trace import Status, StatusCode

        token = _CALL.set((span, spec.run_id, spec.phase_id))
        try:
            result = await call_next(spec, channel)
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, _masked(masker, one_line(exc))))
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
                span.set_attribute("gen_ai.response.model", _masked(masker, str(metadata["model"])))
        if isinstance(metadata, Mapping) and isinstance(metadata.get("cost"), (int, float)):
            span.set_attribute("orch.cost", float(metadata["cost"]))
        span.set_status(Status(StatusCode.OK))
        span.end()
        return result

    def shutdown(self) -> None:
        """Flush every span to the exporter and close it (a shared provider stays open:
        its owner shuts it down; its batch processor sends the run's spans meanwhile)."""
        if self._owns_provider:
            self._provider.shutdown()

"""The agent SDK: what a plugin implements (Agent) and what it receives (AgentContext).

The smallest complete agent::

    class Shout(Agent):
        name = "shout"
        description = "Upper-cases its text."
        config_schema = {"type": "object", "properties": {"text": {"type": "string"}},
                         "required": ["text"], "additionalProperties": False}

        async def run(self, input, ctx):
            return AgentResult(output=input["text"].upper())

An agent type is registered under the entry-point group ``orchestrator.agents``.
One instance is made per named agent (``agents:`` in the workflow) or per bare
type, and lives for the run, so it may pool connections; ``aclose`` releases them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from ..errors import ExecutionError

__all__ = [
    "Agent",
    "AgentContext",
    "AgentFailure",
    "AgentProtocol",
    "AgentResult",
    "ConfigProblem",
]


@dataclass(slots=True)
class AgentResult:
    """What one call of an agent gives back.

    ``output`` becomes ``phases.<id>.output``. ``metadata`` is recorded with the
    phase (``tokens``: {"prompt": n, "completion": n, "total": n}, ``cost``,
    ``exit_code``, ``status`` ...). ``handoff`` names the agent that takes over,
    in a handoff phase.
    """

    output: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    handoff: str | None = None


class AgentFailure(ExecutionError):
    """An agent call failed. ``transient`` failures are retried by the phase's policy;
    permanent ones (bad config, HTTP 4xx other than 408/429) are not. ``retry_after``
    (seconds) is a server's request to wait before the next attempt; ``metadata`` what
    the failed call used (``tokens``, ``cost``: counted as a successful call's);
    ``hint`` what to do (``str(exc)`` shows it on a second line, ``exc.headline`` not)."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool = True,
        retry_after: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.transient = transient
        self.retry_after = retry_after
        self.metadata = dict(metadata or {})


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """A problem an agent type finds in a phase's ``with:`` before the run.

    ``path`` is where inside ``with:`` (``("command",)``, ``("headers", "X")``),
    ``()`` for the mapping itself; ``severity`` is ``error`` or ``warning``.
    """

    path: tuple[str | int, ...]
    message: str
    severity: str = "error"
    hint: str | None = None


StreamCallback = Callable[[str], Awaitable[None]]
SubRun = Callable[[str, Mapping[str, Any]], Awaitable[Mapping[str, Any]]]


async def _no_stream(_: str) -> None:
    return None


@dataclass(slots=True)
class AgentContext:
    """What the engine tells an agent about the call it is making.

    ``idempotency_key`` is stable across a crash and resume: ``run_id/phase_id``
    plus ``/attempt`` (plus ``#turn`` in a handoff phase, where ``turn`` counts the
    agents' turns from 1); http and llm agents send it as ``Idempotency-Key``.
    ``deadline`` is a ``time.monotonic()`` value by which the attempt must end,
    or None. ``workdir`` is the workflow file's folder (relative paths start there).
    """

    run_id: str
    phase_id: str
    attempt: int = 1
    agent_name: str = ""
    workdir: str = "."
    deadline: float | None = None
    item_index: int | None = None
    secrets: Mapping[str, str] = field(default_factory=dict)
    _stream: StreamCallback = _no_stream
    run_workflow: SubRun | None = None
    turn: int = 1
    key: str | None = None  # the engine's idempotency key for this call (CallSpec)
    #: the W3C ``traceparent`` of this call when tracing is on: http and llm agents send
    #: it as a header, shell commands get it as ``TRACEPARENT``; plugins may pass it on
    traceparent: str | None = None

    @property
    def idempotency_key(self) -> str:
        """``run_id/phase_id/attempt`` (with ``[index]`` for a foreach item, and
        ``#turn`` from the second turn of a handoff phase; ``~N`` when a resume asks
        again for a phase that failed): the engine's key, else made from the fields."""
        if self.key is not None:
            return self.key
        item = f"[{self.item_index}]" if self.item_index is not None else ""
        turn = f"#{self.turn}" if self.turn > 1 else ""
        return f"{self.run_id}/{self.phase_id}{item}/{self.attempt}{turn}"

    async def stream(self, text: str) -> None:
        """Emit a piece of streamed output (tokens, log lines) as a phase_stream event."""
        await self._stream(text)


@runtime_checkable
class AgentProtocol(Protocol):
    """The structural contract the registry checks when it loads an agent type."""

    name: ClassVar[str]
    config_schema: ClassVar[Mapping[str, Any]]

    async def run(self, input: Mapping[str, Any], ctx: AgentContext) -> AgentResult | Any:
        """Do the work; return an AgentResult (or a plain value, taken as the output)."""
        ...


class Agent:
    """Convenience base class for agent types; subclass and implement ``run``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: JSON Schema (draft 2020-12) of the phase's ``with:`` mapping.
    config_schema: ClassVar[Mapping[str, Any]] = {"type": "object"}
    #: Keys of ``with:`` whose string value is a shell command line: the engine
    #: renders them with ``expr.render_shell``, which shell-quotes every value.
    shell_fields: ClassVar[tuple[str, ...]] = ()
    #: True for an agent type whose calls must run in the orch process even when the
    #: run's calls go to Dask workers (the workflow agent: a sub-run needs the engine).
    runs_in_orch: ClassVar[bool] = False

    @classmethod
    def check_static(cls, config: Mapping[str, Any], *, workflow_path: str) -> list[ConfigProblem]:
        """Problems in a phase's merged ``with:`` that can be found before the run.

        Called by ``orch validate`` after the schema check passed; ``config`` is
        unrendered (template strings are still templates: skip them), and
        ``workflow_path`` is the file being checked. Must not raise.
        """
        return []

    def __init__(self, instance_name: str = "") -> None:
        self.instance_name = instance_name or self.name

    async def run(self, input: Mapping[str, Any], ctx: AgentContext) -> AgentResult | Any:
        """Do the work; return an AgentResult (or a plain value, taken as the output)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release pooled resources at the end of the run."""
        return None

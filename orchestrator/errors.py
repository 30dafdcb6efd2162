"""Every exception orch raises on purpose, and the located Problem a user sees.

The hierarchy (``x`` a category, ``+`` a leaf)::

    * OrchError                      base; has .location and .hint (str() shows both)
      x WorkflowInvalid              aggregate raised by load/validate: .problems -> exit 2
      x UsageError                   bad command-line arguments or inputs -> exit 2
      x WorkflowError                one thing wrong in the user's file; always has a Location
        + YAMLSyntaxError            a YAML parse error
        + UnreadableWorkflow         missing, a directory, binary, too large, not UTF-8, alias bomb
        + SchemaViolation            the file does not match workflow.schema.json
        + UnknownReference           depends_on / agent / phases.X names nothing; .suggestion
        + DuplicatePhase             two phases share an id
        + DependencyCycle            the phases depend on each other in a loop; .cycle
        + AgentConfigError           a phase's ``with:`` fails its agent type's schema
        + ExpressionError            a template or condition fails to parse or to evaluate
      x AgentError
        + AgentNotFound              no installed agent type has that name
        + AgentLoadError             an entry point failed to import or to pass its checks
      x ExecutionError               raised inside a run; becomes events and exit 1
        + PhaseFailed                a phase failed after its last attempt
        + PhaseTimeout               one attempt ran past its timeout
        + RunCancelled               the run was cancelled (Ctrl-C, SIGTERM, orch cancel)
        + RecordFailed               the state store could not record an event: the run stops
      x StateError
        + RunNotFound                no run with that id in the state store
        + RunLocked                  another live process owns the run
        + StateCorrupted             a stored row cannot be read

This module imports only the standard library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AgentConfigError",
    "AgentError",
    "AgentLoadError",
    "AgentNotFound",
    "DependencyCycle",
    "DuplicatePhase",
    "ExecutionError",
    "ExpressionError",
    "Location",
    "OrchError",
    "PhaseFailed",
    "PhaseTimeout",
    "RecordFailed",
    "Problem",
    "RunCancelled",
    "RunLocked",
    "RunNotFound",
    "RunTaken",
    "SchemaViolation",
    "StateCorrupted",
    "StateError",
    "UnknownReference",
    "UnreadableWorkflow",
    "UsageError",
    "WorkflowError",
    "WorkflowInvalid",
    "YAMLSyntaxError",
    "format_duration",
    "one_line",
]


@dataclass(frozen=True, slots=True, order=True)
class Location:
    """A place in a file. ``line`` and ``col`` are 1-based; file-level problems use 1:1.

    ``at`` names the place by its path in the data (``phases[0].agent``) when the
    lines mean nothing to the user (a workflow given as a mapping): it is shown
    instead of them.
    """

    path: str
    line: int = 1
    col: int = 1
    at: str | None = None

    def __str__(self) -> str:
        if self.at is not None:
            return f"{self.path}: {self.at}" if self.at else self.path
        return f"{self.path}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a workflow, located; ``severity`` is ``error`` or ``warning``.

    ``code`` is a short stable slug (``schema``, ``unknown-reference``, ``cycle`` ...) for tools.
    """

    location: Location
    message: str
    hint: str | None = None
    severity: str = "error"
    code: str = "invalid"

    def __str__(self) -> str:
        return self.headline + (f"\n  hint: {self.hint}" if self.hint else "")

    @property
    def headline(self) -> str:
        """``location: message`` on one line, without the hint (``str()`` adds it)."""
        message = self.message
        at = self.location.at
        if at and message.startswith(at + ": "):  # the place is said once
            message = message[len(at) + 2 :]
        if self.severity == "warning":
            return f"{self.location}: warning: {message}"
        return f"{self.location}: {message}"

    def as_dict(self) -> dict[str, object]:
        """The JSON shape used by ``orch validate --format json``."""
        return {
            "file": self.location.path,
            "line": self.location.line,
            "col": self.location.col,
            **({"at": self.location.at} if self.location.at is not None else {}),
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
        }


class OrchError(Exception):
    """Base class for every error orch raises on purpose."""

    def __init__(
        self, message: str, *, location: Location | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.hint = hint

    def __str__(self) -> str:
        # The hint is part of the text a traceback or a notebook shows: a program using
        # the Python API sees what to do, not only what went wrong.
        return self.headline + (f"\n  hint: {self.hint}" if self.hint else "")

    @property
    def headline(self) -> str:
        """``location: message`` without the hint: for whoever shows the hint apart (the
        CLI's ``  hint:`` line, the service's ``hint`` field) or needs one line."""
        prefix = f"{self.location}: " if self.location else ""
        return prefix + self.message


def one_line(exc: BaseException) -> str:
    """An exception's text for a one-line field (a run's or a phase's error, a note, a
    span's status): an orch error's headline (its hint is not in it), else ``str(exc)``."""
    return exc.headline if isinstance(exc, OrchError) else str(exc)


class UsageError(OrchError):
    """Bad command-line arguments, or run inputs of the wrong name or type (exit 2)."""


class WorkflowInvalid(OrchError):
    """Raised once by load/validate with every problem found (exit 2)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        errors = [p for p in problems if p.severity == "error"]
        first = errors[0] if errors else (problems[0] if problems else None)
        count = len(errors)
        summary = f"{count} problem{'s' if count != 1 else ''}"
        super().__init__(
            f"{summary}; first: {first.message}" if first else summary,
            location=first.location if first else None,
        )
        self.problems: tuple[Problem, ...] = tuple(problems)


class WorkflowError(OrchError):
    """One thing wrong in the user's file; always located."""

    code = "invalid"

    def __init__(self, message: str, *, location: Location, hint: str | None = None) -> None:
        super().__init__(message, location=location, hint=hint)
        self.location: Location = location

    def to_problem(self) -> Problem:
        """This error as a Problem, for collection."""
        return Problem(self.location, self.message, self.hint, code=self.code)


class YAMLSyntaxError(WorkflowError):
    """The file is not valid YAML."""

    code = "yaml"


class UnreadableWorkflow(WorkflowError):
    """The file is missing, a directory, binary, too large, not UTF-8, or an alias bomb."""

    code = "unreadable"


class SchemaViolation(WorkflowError):
    """The file does not match the workflow schema."""

    code = "schema"

    def __init__(
        self, message: str, *, location: Location, json_path: str = "", hint: str | None = None
    ) -> None:
        super().__init__(message, location=location, hint=hint)
        self.json_path = json_path


class UnknownReference(WorkflowError):
    """A depends_on, agent or ``phases.X`` reference names nothing."""

    code = "unknown-reference"

    def __init__(
        self,
        message: str,
        *,
        location: Location,
        suggestion: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, location=location, hint=hint)
        self.suggestion = suggestion


class DuplicatePhase(WorkflowError):
    """Two phases share an id."""

    code = "duplicate-phase"


class DependencyCycle(WorkflowError):
    """Phases depend on each other in a loop; ``.cycle`` lists it, first id repeated last."""

    code = "cycle"

    def __init__(self, cycle: Sequence[str], *, location: Location) -> None:
        self.cycle = tuple(cycle)
        super().__init__(
            "cycle: " + " -> ".join(self.cycle),
            location=location,
            hint="remove one of these dependencies",
        )


class AgentConfigError(WorkflowError):
    """A phase's ``with:`` does not match its agent type's config schema."""

    code = "agent-config"


class ExpressionError(WorkflowError):
    """A template or condition fails to parse (at validate) or to evaluate (at run)."""

    code = "expression"


class AgentError(OrchError):
    """Base class for agent registry errors."""


class AgentNotFound(AgentError):
    """No installed agent type has that name."""


class AgentLoadError(AgentError):
    """An agent entry point failed to import or failed its checks; names it and its distribution."""


class ExecutionError(OrchError):
    """Raised inside a run; becomes events and exit code 1, never a traceback."""


class PhaseFailed(ExecutionError):
    """A phase failed after its last attempt."""

    def __init__(self, phase_id: str, message: str, *, attempts: int = 1) -> None:
        super().__init__(message)
        self.phase_id = phase_id
        self.attempts = attempts


class PhaseTimeout(ExecutionError):
    """One attempt of a phase ran past its timeout. The message does not repeat the
    phase: every place that shows it already names the phase."""

    def __init__(self, phase_id: str, seconds: float) -> None:
        super().__init__(f"timed out after {format_duration(seconds)}")
        self.phase_id = phase_id
        self.seconds = seconds


class RunCancelled(ExecutionError):
    """The run was cancelled: Ctrl-C, SIGTERM or ``orch cancel``."""


class RecordFailed(ExecutionError):
    """The state store could not record an event (disk full, an output it cannot store):
    the run stops, since nothing may be shown or built on that is not recorded."""

    def __init__(self, kind: str, phase: str | None, cause: BaseException) -> None:
        what = f"phase '{phase}': its {kind}" if phase else f"the run's {kind}"
        super().__init__(
            f"{what} could not be recorded in the state store, so the run stops: {cause}",
            hint="free some space (or pick another --state-dir), then `orch resume` goes on "
            "from what was recorded",
        )
        self.kind = kind
        self.phase = phase


class StateError(OrchError):
    """Base class for state store errors."""


class RunNotFound(StateError):
    """No run with that id is in the state store."""


class RunLocked(StateError):
    """Another live process owns the run."""


class RunTaken(StateError):
    """A new run's id is already recorded (another run started with it meanwhile): the
    store refuses its ``workflow_started``, so no two runs share a history."""


class StateCorrupted(StateError):
    """A stored row cannot be read; the message names the run, the phase and the row."""


def format_duration(seconds: float) -> str:
    """A duration as the workflow language writes it: ``500ms``, ``30s``, ``1.5s``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:g}s"

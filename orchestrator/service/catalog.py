"""The workflows folder of `orch serve`: names, loading, and reloading edited files.

A workflow's name is its file name without ``.yaml`` (or ``.yml``); a name is
``[A-Za-z0-9][A-Za-z0-9_.-]*`` and always maps to a file directly inside the
folder (a name with a slash, ``..`` or a symlink leading out is refused).
``after: {workflow: X}`` may also name a workflow by its ``name:`` field.
An edited file is loaded again; when the edit is invalid the previous version
stays in service and its problems are reported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import OrchError, Problem, UsageError, WorkflowInvalid

if TYPE_CHECKING:
    from ..agents.registry import AgentRegistry
    from ..plan import Plan
    from ..spec.model import Workflow

__all__ = [
    "NAME_PATTERN",
    "Catalog",
    "Entry",
    "UnknownWorkflow",
    "check_name",
    "workflows_folder",
]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SUFFIXES = (".yaml", ".yml")


class UnknownWorkflow(UsageError):
    """A workflow name that the served folder does not hold (HTTP 404)."""


def check_name(name: str) -> None:
    """Refuse a name that could reach outside the folder; raises UsageError (HTTP 400)."""
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise UsageError(
            f"'{name[:80]}' is not a workflow name",
            hint="a name is the file name without .yaml: letters, digits, '-', '_' and '.'",
        )


def workflows_folder(option: Path | None, environ: Mapping[str, str]) -> Path:
    """The folder ``orch serve``/``orch schedule`` read: ``--workflows``, else
    $ORCH_WORKFLOWS, else ./workflows. Raises UsageError (exit 2) unless it is an
    existing folder this user can list (``files.folder_problem``)."""
    from ..files import folder_problem

    folder = option or Path(environ.get("ORCH_WORKFLOWS") or "workflows")
    problem = folder_problem(folder, must_exist=True, listed=True)
    if problem is not None:
        raise UsageError(
            f"the workflows folder '{folder}' cannot be used: {problem}",
            hint="pass --workflows DIR (or set ORCH_WORKFLOWS)",
        )
    return folder


@dataclass
class Entry:
    """One workflow file: the version in service (None until one loaded) and its problems."""

    name: str
    path: Path
    workflow: Workflow | None = None
    plan: Plan | None = None
    problems: list[Problem] = field(default_factory=list)
    error: str | None = None  # why the file on disk is not the version in service
    signature: tuple[int, int] = (0, 0)

    @property
    def valid(self) -> bool:
        """Whether the file on disk is the version in service."""
        return self.workflow is not None and not self.error


class Catalog:
    """The workflows of one folder, loaded on ``scan`` (call it again to pick up edits)."""

    def __init__(self, folder: Path, registry: AgentRegistry) -> None:
        self.folder = Path(folder)
        self.root = self.folder.resolve()
        self.registry = registry
        self.entries: dict[str, Entry] = {}

    def scan(self) -> list[str]:
        """Load new and changed files, forget removed ones; returns one message per change."""
        messages: list[str] = []
        seen: set[str] = set()
        files = (
            sorted(p for p in self.folder.iterdir() if p.suffix in _SUFFIXES)
            if (self.folder.is_dir())
            else []
        )
        for path in files:
            name = path.stem
            if not NAME_PATTERN.fullmatch(name) or name in seen or not self._inside(path):
                continue
            seen.add(name)
            try:
                stat = path.stat()
            except OSError:
                continue
            signature = (stat.st_mtime_ns, stat.st_size)
            entry = self.entries.get(name)
            if entry is not None and entry.signature == signature:
                continue
            if entry is None:
                entry = self.entries[name] = Entry(name, path)
            entry.signature = signature
            messages.append(self._load(entry, reloaded=entry.workflow is not None))
        for name in [n for n in self.entries if n not in seen]:
            del self.entries[name]
            messages.append(f"workflow {name}: file removed; no longer served")
        return messages

    def _inside(self, path: Path) -> bool:
        try:
            return path.resolve().parent == self.root
        except OSError:
            return False

    def _load(self, entry: Entry, *, reloaded: bool) -> str:
        from ..plan import compile_plan
        from ..spec import load_workflow

        try:
            workflow = load_workflow(entry.path, registry=self.registry)
            plan = compile_plan(workflow)
        except WorkflowInvalid as exc:
            entry.problems = list(exc.problems)
            first = next((p for p in exc.problems if p.severity == "error"), None)
            entry.error = first.headline if first else exc.headline  # hints: in problems
            kept = "; the previous version stays in service" if entry.workflow else ""
            return f"workflow {entry.name}: invalid{kept}: {entry.error}"
        except OrchError as exc:
            entry.error = exc.headline
            kept = "; the previous version stays in service" if entry.workflow else ""
            hint = f" (hint: {exc.hint})" if exc.hint else ""
            return f"workflow {entry.name}: cannot load{kept}: {exc.headline}{hint}"
        entry.workflow, entry.plan, entry.error = workflow, plan, None
        entry.problems = []
        return f"workflow {entry.name}: {'reloaded' if reloaded else 'loaded'} from {entry.path}"

    def get(self, name: str) -> Entry:
        """The entry called ``name``; raises UsageError for a bad name, UnknownWorkflow."""
        check_name(name)
        entry = self.entries.get(name)
        if entry is None:
            raise UnknownWorkflow(
                f"no workflow '{name}' in {self.folder}",
                hint="GET /api/workflows lists the served workflows",
            )
        return entry

    def find(self, name: str) -> Entry | None:
        """The entry whose file name, or else whose ``name:``, is ``name``."""
        if name in self.entries:
            return self.entries[name]
        return next(
            (e for e in self.entries.values() if e.workflow and e.workflow.name == name), None
        )

    def served(self) -> list[Entry]:
        """Entries with a version in service, by name."""
        return [e for _, e in sorted(self.entries.items()) if e.workflow is not None]

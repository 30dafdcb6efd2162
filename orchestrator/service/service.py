"""The service object of `orch serve`: the catalog, runs, scheduler and triggers, and what the
HTTP routes ask of them (the routes in ``app`` only translate HTTP)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import difflib
import logging
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OrchError, RunNotFound, UsageError
from .catalog import Catalog, Entry
from .runs import PRIORITIES, ActiveRun, RunManager
from .scheduler import Clock, Scheduler, upcoming
from .triggers import AfterTriggers

if TYPE_CHECKING:
    from ..agents.registry import AgentRegistry
    from ..engine.dask_executor import DaskExecutor, ExecutorChoice
    from ..state.base import RunRecord
    from ..state.sqlite import SqliteStore

__all__ = ["InputProblems", "Refused", "ServeConfig", "Service"]

log = logging.getLogger("orch.serve")


class InputProblems(UsageError):
    """Run inputs that do not fit the workflow's ``inputs:`` (HTTP 422), each in ``.problems``."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(problems)} problem(s) with the run inputs")
        self.problems = problems


class Refused(OrchError):
    """An operation the current state does not allow (HTTP 409), or one not available (501)."""

    def __init__(self, message: str, *, status: int = 409, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """What `orch serve` was told."""

    host: str = "127.0.0.1"
    port: int = 8080
    folder: Path = Path("workflows")
    max_runs: int = 4
    token: str | None = None
    state_dir: Path | None = None
    webhook_rate: tuple[float, float] = (10.0, 60.0)  # burst, per seconds
    executor: ExecutorChoice | None = None  # --executor: the Dask cluster runs' calls go to


class Service:
    """Everything `orch serve` runs, over one state store."""

    def __init__(
        self, config: ServeConfig, store: SqliteStore, registry: AgentRegistry, clock: Clock
    ) -> None:
        self.config = config
        self.store = store
        #: Set on SIGINT/SIGTERM: open event streams end, so the HTTP server can close
        #: (from Python 3.12 it waits for every open connection before it stops).
        self.stopping = False
        self.clock = clock
        self.catalog = Catalog(config.folder, registry)
        self.runs = RunManager(store, registry, config.max_runs, clock=clock.now)
        self.scheduler = Scheduler(self.catalog, self.runs, clock, refresh=self.refresh)
        self.after: AfterTriggers | None = None
        self.notes: collections.deque[tuple[float, str]] = collections.deque(maxlen=200)
        self._task: asyncio.Task[None] | None = None
        self._dask: DaskExecutor | None = None
        self.started_at = time.time()

    # -- life cycle ---------------------------------------------------------------

    def note(self, text: str) -> None:
        """Remember (for GET /api/service) and log one thing the service did or found."""
        self.notes.append((time.time(), text))
        log.info("%s", text)

    def refresh(self) -> None:
        """Reload edited workflow files and start what ended runs trigger (every tick)."""
        for message in self.catalog.scan():
            self.note(message)
        if self.after is not None:
            self.after.poll()

    def start_up(self) -> list[str]:
        """Load the folder and say what was found; returns the lines to print at start."""
        self.after = AfterTriggers(self.catalog, self.runs)
        lines = []
        for message in self.catalog.scan():
            self.notes.append((time.time(), message))
            lines.append(message)
        served = self.catalog.served()
        lines.append(f"{len(served)} workflow(s) served from {self.config.folder}")
        for row in upcoming(served, self.clock.now(), 1):
            when = row["next"][0] if row["next"] else "never (past)"  # type: ignore[index]
            what = row["cron"] or f"run_at {row['run_at']}"
            lines.append(f"schedule {row['workflow']}: {what} ({row['timezone']}); next {when}")
        for entry in served:
            assert entry.workflow is not None
            for t in entry.workflow.triggers:
                if t.webhook:
                    lines.append(f"webhook {entry.name}: POST /api/workflows/{entry.name}/runs")
                if t.after:
                    lines.append(f"trigger {entry.name}: after {t.after} {t.status}")
        for run in self.store.list_runs(limit=500):
            if run.status == "interrupted" and self._started_by_service(run.id):
                lines.append(
                    f"run {run.id} ({run.workflow}) was interrupted by a crash of the service;"
                    f" `orch resume {run.id}` continues it"
                )
        return lines

    def _started_by_service(self, run_id: str) -> bool:
        with contextlib.suppress(OrchError):
            first = self.store.events(run_id, limit=1)
            return bool(first and "trigger" in first[0][1].data)
        return False

    async def open_executor(self) -> str | None:
        """Start (or reach) the Dask cluster of ``--executor``, shared by every run the
        service starts until it stops; returns the line saying where calls run.
        Raises UsageError when the scheduler cannot be reached."""
        if self.config.executor is None:
            return None
        from ..engine.dask_executor import open_executor

        self._dask = await open_executor(self.config.executor)
        self.runs.executor = self._dask
        return await self._dask.describe()

    async def run_scheduler(self) -> None:
        """Tick once now (baselines of new entries, fire times missed while down), then start
        the scheduler loop (cancelled by ``shut_down``)."""
        self.scheduler.tick(self.clock.now())
        self._task = asyncio.get_running_loop().create_task(self.scheduler.run_forever())

    async def shut_down(self, by: signal.Signals = signal.SIGTERM) -> None:
        """Stop firing, cancel queued and running runs (recorded cancelled, resumable,
        ``cancelled_by`` ``by``: the signal that stops the service)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.runs.shutdown(by)
        if self._dask is not None:  # after the runs: they cancel their calls on it first
            await self._dask.aclose()
            self._dask = None

    # -- workflows ----------------------------------------------------------------

    def workflow_summary(self, entry: Entry, *, detail: bool = False) -> dict[str, Any]:
        """A workflow as the API shows it (with its schedules' next fire times)."""
        wf = entry.workflow
        out: dict[str, Any] = {
            "name": entry.name,
            "title": wf.name if wf else None,
            "path": str(entry.path),
            "valid": entry.valid,
            "error": entry.error,
            "problems": [p.as_dict() for p in entry.problems],
            "description": wf.description if wf else None,
            "schedules": upcoming([entry], self.clock.now(), 3),
            "webhook": bool(wf and any(t.webhook for t in wf.triggers)),
            "after": [{"workflow": t.after, "status": t.status} for t in wf.triggers if t.after]
            if wf
            else [],
            "active_runs": [r.id for r in self.runs.running(wf.name)] if wf else [],
        }
        if detail and wf is not None and entry.plan is not None:
            plan = entry.plan
            out["inputs"] = {
                n: {"type": s.type, "required": s.required and not s.has_default}
                for n, s in wf.inputs.items()
            }
            out["phases"] = [
                {"id": pid, "depends_on": list(plan.predecessors[pid]), "level": plan.level_of[pid]}
                for pid in plan.order
            ]
            with contextlib.suppress(OSError):
                out["source"] = entry.path.read_text(encoding="utf-8")
        return out

    def validate(self, name: str) -> dict[str, Any]:
        """Load the file on disk now (without changing the version in service)."""
        from ..spec import validate

        entry = self.catalog.get(name)
        problems = validate(entry.path, registry=self.catalog.registry)
        return {
            "name": name,
            "valid": not any(p.severity == "error" for p in problems),
            "problems": [p.as_dict() | {"text": str(p)} for p in problems],
        }

    # -- runs -------------------------------------------------------------------------

    def check_inputs(self, entry: Entry, given: Any) -> dict[str, Any]:
        """Inputs from JSON checked as ``--input`` checks them; raises InputProblems (all)."""
        from ..engine.inputs import resolve_inputs
        from ..spec.model import Workflow

        wf = entry.workflow
        assert wf is not None
        if given is None:
            given = {}
        if not isinstance(given, Mapping):
            raise InputProblems([{"location": "inputs", "message": "inputs must be a JSON object"}])
        problems: list[dict[str, Any]] = []
        for name, value in given.items():
            spec = wf.inputs.get(str(name))
            if spec is None:
                close = difflib.get_close_matches(str(name), list(wf.inputs), n=1)
                problems.append(
                    {
                        "location": f"inputs.{name}",
                        "message": f"unknown input '{name}'",
                        "hint": f"did you mean '{close[0]}'?" if close else None,
                    }
                )
                continue
            try:
                probe = Workflow(name="", phases=(), inputs={str(name): spec})
                resolve_inputs(probe, {str(name): value}, strings=True)
            except UsageError as exc:
                problems.append(
                    {"location": f"inputs.{name}", "message": exc.headline, "hint": exc.hint}
                )
        for name, spec in wf.inputs.items():
            if name not in given and spec.required and not spec.has_default:
                problems.append(
                    {
                        "location": f"inputs.{name}",
                        "message": f"missing required input '{name}' ({spec.type})",
                        "hint": None,
                    }
                )
        if problems:
            raise InputProblems(problems)
        return resolve_inputs(wf, dict(given), strings=True)

    def start(self, name: str, given: Any, *, kind: str, priority: str = "medium") -> ActiveRun:
        """Queue a run of workflow ``name`` with JSON inputs; ``kind`` says who asked."""
        entry = self.catalog.get(name)
        if entry.workflow is None or entry.plan is None:
            raise Refused(f"workflow '{name}' is invalid: {entry.error}", status=422)
        if priority not in PRIORITIES:
            raise UsageError(f"priority '{priority}' is not one of {', '.join(PRIORITIES)}")
        inputs = self.check_inputs(entry, given)
        return self.runs.submit(
            entry.plan, inputs, trigger={"kind": kind, "workflow": name}, priority=priority
        )

    def get_run(self, run_id: str) -> RunRecord | ActiveRun:
        """A stored run, or a queued one this service has not started yet."""
        active = self.runs.active.get(run_id)
        if active is not None and active.status == "queued":
            return active
        try:
            return self.store.get_run(run_id)
        except RunNotFound:
            if active is not None:  # started, its first event not stored yet
                return active
            raise

    def cancel(self, run_id: str) -> str:
        """Cancel a run of this service (queued or running): recorded ``cancelled_by``
        SIGTERM, as `orch cancel` records it (`orch wait` exits 143)."""
        active = self.runs.cancel(run_id, signal.SIGTERM)
        if active is not None:
            return f"run {run_id} is being cancelled"
        run = self.store.get_run(run_id)
        if run.finished:
            raise Refused(f"run {run.id} has already ended ({run.status}); nothing to cancel")
        raise Refused(
            f"run {run.id} is not run by this service",
            hint=f"`orch cancel {run.id}` stops it from a shell",
        )

    def resume(self, run_id: str) -> str:
        """Resume a stopped run with `orch resume` in its own process; returns a message."""
        import subprocess
        import sys
        import tempfile

        run = self.store.get_run(run_id)
        if run.status == "completed":
            raise Refused(f"run {run.id} completed; there is nothing to resume")
        if run.status == "running":
            raise Refused(f"run {run.id} is still running")
        argv = [sys.executable, "-m", "orchestrator", "resume", run.id]
        if self.config.state_dir is not None:
            argv += ["--state-dir", str(self.config.state_dir)]
        if self._dask is not None:  # on the service's cluster (its local one included)
            argv += ["--executor", self._dask.address]
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
            try:  # a refusal (changed workflow, a live owner) comes at once
                code = proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                return f"run {run.id} resumed in process {proc.pid}"
            err.seek(0)
            text = err.read().decode("utf-8", "replace").strip()
        if code == 2:
            raise Refused(text or f"run {run.id} cannot be resumed")
        return f"run {run.id} resumed and ended (exit {code})"

    def not_found(self, run_id: str) -> RunNotFound:
        """The error for an unknown run id."""
        return RunNotFound(f"no run '{run_id}'", hint="GET /api/runs lists the runs")

    def decide(self, run_id: str, phase: str, decision: str, comment: Any) -> str:
        """Approve or reject a phase waiting for approval (``approvals.decide``, as `orch
        approve` does); the first decision wins. Raises Refused (409) when nothing waits."""
        from ..approvals import decide

        if decision not in ("approve", "reject"):
            raise UsageError(f"'{decision}' is neither approve nor reject")
        if comment is not None and not isinstance(comment, str):
            raise UsageError("comment must be a string")
        try:
            made = decide(
                self.store,
                run_id,
                phase,
                approve=decision == "approve",
                who="orch serve API",
                comment=comment,
            )
        except RunNotFound:
            raise
        except UsageError as exc:
            raise Refused(exc.headline, hint=exc.hint) from None
        verb = "approved" if made.approved else "rejected"
        return f"phase {phase} of run {made.run_id} {verb}"

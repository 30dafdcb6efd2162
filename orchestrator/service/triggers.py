"""``after:`` triggers: a run that ends with the given status starts the workflows waiting on it.

The service watches the store's final events (``workflow_completed``,
``workflow_failed``, ``workflow_cancelled``) that appear after it started, so a
run started by `orch run` in a shell triggers as well as one the service ran.
The started run reads ``trigger.run_id``, ``trigger.workflow``,
``trigger.status`` and ``trigger.outputs``. Runs that end while the service is
down trigger nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalog import Catalog, Entry
    from .runs import RunManager

__all__ = ["AfterTriggers"]

log = logging.getLogger("orch.serve")


def _matches(entry: Entry, workflow: str, path_stem: str, status: str) -> bool:
    wf = entry.workflow
    if wf is None:
        return False
    return any(
        t.after in (workflow, path_stem) and t.status in (status, "any") for t in wf.triggers
    )


class AfterTriggers:
    """Polls the store for runs that ended and starts the workflows that wait for them."""

    def __init__(self, catalog: Catalog, runs: RunManager) -> None:
        self.catalog = catalog
        self.runs = runs
        self.store = runs.store
        self.seen = self.store.last_seq()
        self.started = 0

    def poll(self) -> list[str]:
        """Start what runs ended since the last poll trigger; returns the started run ids."""
        from pathlib import Path

        from ..engine.inputs import resolve_inputs

        started: list[str] = []
        for seq, run_id, status in self.store.ended_after(self.seen):
            self.seen = max(self.seen, seq)
            try:
                run = self.store.get_run(run_id)
            except Exception as exc:  # an unreadable row triggers nothing
                log.error("after-trigger: run %s cannot be read: %s", run_id, exc)
                continue
            stem = Path(run.path).stem
            for entry in self.catalog.served():
                if not _matches(entry, run.workflow, stem, status):
                    continue
                assert entry.workflow is not None and entry.plan is not None
                trigger: dict[str, Any] = {
                    "kind": "after",
                    "run_id": run.id,
                    "workflow": run.workflow,
                    "status": status,
                    "outputs": run.outputs,
                }
                try:
                    inputs = resolve_inputs(entry.workflow, {})
                except Exception as exc:
                    log.error("after-trigger of %s refused: %s", entry.name, exc)
                    continue
                new = self.runs.submit(entry.plan, inputs, trigger=trigger)
                self.started += 1
                started.append(new.id)
                log.info(
                    "run %s of %s %s: started %s (%s)",
                    run.id,
                    run.workflow,
                    status,
                    entry.name,
                    new.id,
                )
        return started

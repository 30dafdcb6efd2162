"""The state store attached to `orch run` and `orch resume`, and what resume decides.

``open_run_session`` gives `orch run` its durable event sink and phase cache;
``seed_view`` shows a resumed run's earlier completions; ``cache_preview`` is
the cache part of ``--dry-run``; ``changed_phases`` and ``downstream`` decide
what a forced resume runs again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..plan import Plan
    from ..state.base import RunRecord
    from ..state.sqlite import SqliteStore

__all__ = [
    "RunSession",
    "cache_preview",
    "changed_phases",
    "downstream",
    "open_run_session",
    "seed_view",
]


class RunSession:
    """The state store attached to one ``orch run``: its event sink, the phase cache, close.

    ``record`` goes into the engine's sinks; ``cache`` into RunOptions.cache.
    """

    def __init__(self, store: SqliteStore, plan: Plan, *, no_cache: bool) -> None:
        import os

        from ..engine.cache import StoreCache
        from ..events import SecretMasker

        self.store = store
        self.record = store.record
        wf = plan.workflow
        masker = SecretMasker(os.environ.get(name, "") for name in wf.secret_names)
        self.cache: StoreCache | None = (
            None if no_cache else StoreCache(store, wf, mask=masker.mask)
        )

    def close(self) -> None:
        """Wait for the last writes and release the database."""
        self.store.close()


def open_run_session(state_dir: Path | None, plan: Plan, *, no_cache: bool = False) -> RunSession:
    """Open the state store for a run of ``plan`` (``--state-dir``, $ORCH_STATE_DIR, .orch).

    Raises StateError when the store cannot be opened.
    """
    from ..state.sqlite import open_store

    store = open_store(state_dir)
    store.check_writable()  # a read-only folder: refused before anything runs
    return RunSession(store, plan, no_cache=no_cache)


def seed_view(
    view: Callable[[Any], None], plan: Plan, prior: Mapping[str, Any], run_id: str
) -> None:
    """Show a resumed run's earlier completions in a display sink (not in the store).

    Feeds ``view`` one ``phase_completed`` event per prior outcome, in plan order.
    """
    from ..events import Event

    for pid in plan.order:
        outcome = prior.get(pid)
        if outcome is None:
            continue
        view(
            Event(
                "phase_completed",
                run_id,
                outcome.ended or 0.0,
                pid,
                outcome.attempts or 1,
                {
                    "status": "completed",
                    "output": outcome.output,
                    "duration": outcome.duration,
                    "attempts": outcome.attempts or 1,
                    "cached": outcome.cached,
                    "fallback_used": outcome.fallback_used,
                },
            )
        )


def cache_preview(
    plan: Plan, inputs: Mapping[str, Any], state_dir: Path | None, *, no_cache: bool = False
) -> list[str]:
    """For ``orch run --dry-run``: one line per phase with ``cache``, saying whether it
    would be served from the cache. Reads the store only when it exists (creates nothing).
    """
    import os

    from ..engine.cache import StoreCache
    from ..errors import OrchError
    from ..expr import is_template, render
    from ..state.sqlite import open_store, resolve_state_dir

    cached = [p for p in plan.workflow.phases if p.cache is not None and p.agent]
    if not cached:
        return []
    if no_cache:
        return [f"cache: off (--no-cache): {', '.join(p.id for p in cached)} will run"]
    folder = resolve_state_dir(state_dir)
    if not (folder / "state.db").exists():
        return [f"cache: empty (no runs recorded in {folder}): {p.id} will run" for p in cached]
    wf = plan.workflow
    context = {
        "inputs": dict(inputs),
        "run": {"workflow": wf.name},
        "env": dict(os.environ),
        "secrets": {n: os.environ.get(n, "") for n in wf.secret_names},
    }
    store = open_store(folder)
    lines = []
    try:
        cache = StoreCache(store, wf)
        for phase in cached:
            spec = wf.agents.get(phase.agent or "")
            merged = wf.call_input(phase.agent, phase.with_)
            try:
                rendered = render(merged, context) if _templated(merged, is_template) else merged
            except OrchError:  # it reads other phases' results: known only at run time
                lines.append(f"cache: {phase.id} depends on run-time values; decided when it runs")
                continue
            agent_type = spec.type if spec else (phase.agent or "")
            key = cache.key(phase, agent_type, rendered)
            hit = store.cache_get(key)
            if hit is not None:
                lines.append(f"cache: {phase.id} would be served from the cache")
            else:
                lines.append(f"cache: {phase.id} is not cached yet; it will run")
    finally:
        store.close()
    return lines


def _templated(value: Any, is_template: Callable[[str], bool]) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, Mapping):
        return any(_templated(v, is_template) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_templated(v, is_template) for v in value)
    return False


def changed_phases(run: RunRecord, plan: Plan) -> list[str]:
    """Phases whose definition differs from the one the run recorded (new ones included)."""
    if not run.fingerprints:
        return []
    current = plan.workflow.fingerprints()
    changed = [pid for pid in plan.order if run.fingerprints.get(pid) != current[pid]]
    removed = [pid for pid in run.fingerprints if pid not in current]
    return changed + removed


def downstream(plan: Plan, roots: list[str]) -> list[str]:
    """``roots`` and every phase that depends on them, directly or not, in plan order."""
    seen = {r for r in roots if r in plan.phases}
    for pid in plan.order:
        if any(dep in seen for dep in plan.predecessors[pid]):
            seen.add(pid)
    return [pid for pid in plan.order if pid in seen]

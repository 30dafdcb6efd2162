"""What `orch run` and `orch resume` show besides the engine's events.

``seed_view`` shows a resumed run's earlier completions in the display;
``dry_run_cache_lines`` opens the store (if any) for the cache part of ``--dry-run``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..plan import Plan

__all__ = ["dry_run_cache_lines", "seed_view"]


def seed_view(
    view: Callable[[Any], None], plan: Plan, prior: Mapping[str, Any], run_id: str
) -> None:
    """Show a resumed run's earlier completions in a display sink (not in the store).

    Feeds ``view`` one ``phase_completed`` event per prior outcome, in plan order.
    """
    from ..events import phase_completed

    for pid in plan.order:
        outcome = prior.get(pid)
        if outcome is None:
            continue
        view(
            phase_completed(
                run_id,
                outcome.ended or 0.0,
                pid,
                outcome.attempts or 1,
                output=outcome.output,
                duration=outcome.duration,
                attempts=outcome.attempts or 1,
                cached=outcome.cached,
                fallback_used=outcome.fallback_used,
            )
        )


def dry_run_cache_lines(
    plan: Plan, inputs: Mapping[str, Any], state_dir: Path | None, *, no_cache: bool = False
) -> list[str]:
    """``engine.cache.cache_preview`` over the store in ``state_dir`` (created by nothing)."""
    from ..engine.cache import cache_preview
    from ..state.sqlite import check_state_folder, open_store, resolve_state_dir

    folder = resolve_state_dir(state_dir)
    exists = check_state_folder(folder) and not no_cache  # a folder `orch run` refuses: exit 2
    if not any(p.cache is not None and p.agent for p in plan.workflow.phases):
        exists = False
    store = open_store(folder) if exists else None
    try:
        return cache_preview(
            plan, inputs, store, environ=os.environ, where=str(folder), no_cache=no_cache
        )
    finally:
        if store is not None:
            store.close()

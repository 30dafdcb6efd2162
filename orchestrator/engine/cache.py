"""The phase result cache: a ResultCache over the state store, keyed by (agent, config, input).

A phase with ``cache: true`` (or ``{key, ttl}``) reuses the output of an earlier
identical call: same agent type, same agent config, same rendered input (and the
same ``key`` when one is given). A result holding a secret of the run never reaches
it: the engine keeps it out of every ``ResultCache`` (``phase._holds_secret``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..agents.base import AgentResult

if TYPE_CHECKING:
    from ..plan import Plan
    from ..spec.model import Phase, Workflow
    from ..state.base import StateStore

__all__ = ["StoreCache", "cache_key", "cache_preview", "keyed_input"]


def cache_key(
    agent_type: str,
    agent_config: Mapping[str, Any],
    input: Mapping[str, Any],
    user_key: str | None = None,
) -> str:
    """The cache key of one call: sha256 of the agent type, its config, the input and the key."""
    payload = json.dumps(
        [agent_type, agent_config, input, user_key],
        sort_keys=True,
        ensure_ascii=False,
        default=repr,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def keyed_input(input: Mapping[str, Any], iteration: int | None) -> Mapping[str, Any]:
    """What a call is cached under: its input, and in a ``repeat`` loop the iteration
    number too (iteration 2 is never answered with iteration 1's output)."""
    return input if iteration is None else {"input": input, "repeat_iteration": iteration}


class StoreCache:
    """A ResultCache (engine/result.py) backed by a StateStore's cache table.

    Only phases with a ``cache`` setting are looked up or stored. ``hits`` lists the
    phases served from the cache in this run.
    """

    def __init__(
        self,
        store: StateStore,
        workflow: Workflow,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.workflow = workflow
        self.clock = clock
        self.hits: list[str] = []

    def key(self, phase: Phase, agent_type: str, input: Mapping[str, Any]) -> str:
        """The key of this phase's call with this rendered input."""
        spec = self.workflow.agents.get(phase.agent or "")
        config = dict(spec.with_) if spec is not None else {}
        user_key = phase.cache.key if phase.cache is not None else None
        return cache_key(agent_type, config, input, user_key)

    async def get(
        self, phase: Phase, agent_type: str, input: Mapping[str, Any]
    ) -> AgentResult | None:
        """The stored result of an identical earlier call that has not expired, or None."""
        if phase.cache is None:
            return None
        hit = self.store.cache_get(self.key(phase, agent_type, input), now=self.clock())
        if hit is None:
            return None
        self.hits.append(phase.id)
        return AgentResult(output=hit.output, metadata=dict(hit.metadata))

    async def put(
        self, phase: Phase, agent_type: str, input: Mapping[str, Any], result: AgentResult
    ) -> None:
        """Store a successful call's output for the phase's ttl (forever when none)."""
        if phase.cache is None:
            return
        await self.store.cache_put(
            self.key(phase, agent_type, input),
            result.output,
            dict(result.metadata),
            now=self.clock(),
            ttl=phase.cache.ttl,
        )


def cache_preview(
    plan: Plan,
    inputs: Mapping[str, Any],
    store: StateStore | None,
    *,
    environ: Mapping[str, str],
    where: str,
    no_cache: bool = False,
    clock: Callable[[], float] = time.time,
) -> list[str]:
    """For ``--dry-run``: one line per phase with ``cache``, saying whether it would be
    served from the cache. ``store`` is None when nothing is recorded (in ``where``)."""
    from ..errors import OrchError
    from ..expr import has_template, render

    wf = plan.workflow
    cached = [p for p in wf.phases if p.cache is not None and p.agent]
    if not cached:
        return []
    if no_cache:
        return [f"cache: off (--no-cache): {', '.join(p.id for p in cached)} will run"]
    if store is None:
        return [f"cache: empty (no runs recorded in {where}): {p.id} will run" for p in cached]
    context = {
        "inputs": dict(inputs),
        "run": {"workflow": wf.name},
        "env": dict(environ),
        "secrets": {n: environ.get(n, "") for n in wf.secret_names},
    }
    cache = StoreCache(store, wf, clock=clock)
    lines = []
    for phase in cached:
        spec = wf.agents.get(phase.agent or "")
        merged = wf.call_input(phase.agent, phase.with_)
        first = None if phase.repeat is None else 1  # a loop: its first iteration's call
        at = context if first is None else {**context, "iteration": _first_iteration(phase)}
        try:
            rendered = render(merged, at) if has_template(merged) else merged
        except OrchError:  # it reads other phases' results: known only at run time
            lines.append(f"cache: {phase.id} depends on run-time values; decided when it runs")
            continue
        agent_type = spec.type if spec else (phase.agent or "")
        key = cache.key(phase, agent_type, keyed_input(rendered, first))
        if store.cache_get(key, now=clock()) is not None:
            lines.append(f"cache: {phase.id} would be served from the cache")
        else:
            lines.append(f"cache: {phase.id} is not cached yet; it will run")
    return lines


def _first_iteration(phase: Phase) -> dict[str, Any]:
    """``iteration`` in a ``repeat`` loop's first call (as engine/phase.py sets it)."""
    assert phase.repeat is not None
    return {"n": 1, "previous": None, "max": phase.repeat.max}

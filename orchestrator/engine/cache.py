"""The phase result cache: a ResultCache over the state store, keyed by (agent, config, input).

A phase with ``cache: true`` (or ``{key, ttl}``) reuses the output of an earlier
identical call: same agent type, same agent config, same rendered input (and the
same ``key`` when one is given). Outputs are masked before they are stored, so a
secret never reaches the database through the cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..agents.base import AgentResult

if TYPE_CHECKING:
    from ..spec.model import Phase, Workflow
    from ..state.base import StateStore

__all__ = ["StoreCache", "cache_key"]


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


class StoreCache:
    """A ResultCache (engine/result.py) backed by a StateStore's cache table.

    Only phases with a ``cache`` setting are looked up or stored. ``mask`` is
    applied to outputs and metadata before they are stored (SecretMasker.mask).
    ``hits`` lists the phases served from the cache in this run.
    """

    def __init__(
        self,
        store: StateStore,
        workflow: Workflow,
        *,
        mask: Callable[[Any], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.workflow = workflow
        self.mask = mask or (lambda value: value)
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
        """Store a successful call's (masked) output for the phase's ttl (forever when none)."""
        if phase.cache is None:
            return
        await self.store.cache_put(
            self.key(phase, agent_type, input),
            self.mask(result.output),
            self.mask(dict(result.metadata)),
            now=self.clock(),
            ttl=phase.cache.ttl,
        )

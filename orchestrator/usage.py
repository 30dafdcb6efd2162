"""Tokens and cost that agent calls report (``metadata.tokens``, ``metadata.cost``): the one
way to read and sum them, for the engine (phases, budgets, the run's final event), the
stored runs' views (`orch status`, reports, the service) and `orch stats`.

Only the standard library: ``state/`` and ``engine/`` both import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Usage", "add_tokens", "reported_cost"]


def add_tokens(total: dict[str, int], metadata: Mapping[str, Any]) -> None:
    """Add a call's ``metadata.tokens`` ({prompt, completion, total}) to ``total``."""
    used = metadata.get("tokens") if metadata else None
    if isinstance(used, Mapping):
        for key in ("prompt", "completion", "total"):
            value = used.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value


def reported_cost(metadata: Mapping[str, Any] | None) -> float | None:
    """A call's ``metadata.cost`` when it is a finite, non-negative number, else None."""
    cost = metadata.get("cost") if metadata else None
    if isinstance(cost, (int, float)) and not isinstance(cost, bool) and 0 <= cost < float("inf"):
        return float(cost)
    return None


@dataclass(slots=True)
class Usage:
    """Tokens and cost summed over calls (``metadata.tokens``, ``metadata.cost``).

    ``cost`` stays None until a call reports one. ``as_metadata`` gives what a phase
    made of several calls (foreach items, handoff turns) reports as its own.
    """

    tokens: dict[str, int] = field(default_factory=dict)
    cost: float | None = None

    def add(self, metadata: Mapping[str, Any] | None) -> None:
        """Add one call's (or one phase's) reported usage."""
        if not metadata:
            return
        add_tokens(self.tokens, metadata)
        cost = reported_cost(metadata)
        if cost is not None:
            self.cost = (self.cost or 0.0) + cost

    @property
    def total_tokens(self) -> int:
        """``tokens.total``, else prompt + completion (0 when nothing was reported)."""
        return self.tokens.get("total") or (
            self.tokens.get("prompt", 0) + self.tokens.get("completion", 0)
        )

    def as_metadata(self) -> dict[str, Any]:
        """``{"tokens": ..., "cost": ...}`` with only what was reported."""
        out: dict[str, Any] = {}
        if self.tokens:
            out["tokens"] = dict(self.tokens)
        if self.cost is not None:
            out["cost"] = round(self.cost, 10)
        return out

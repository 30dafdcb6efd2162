"""Tokens and cost that agent calls report (``metadata.tokens``, ``metadata.cost``): the one
way to read and sum them, for the engine (phases, budgets, the run's final event), the
stored runs' views (`orch status`, reports, the service) and `orch stats`.

Only the standard library: ``state/`` and ``engine/`` both import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

__all__ = ["Usage", "add_tokens", "checked_usage", "reported_cost"]

_COUNTS = ("prompt", "completion", "total")


def add_tokens(total: dict[str, int], metadata: Mapping[str, Any]) -> None:
    """Add a call's ``metadata.tokens`` ({prompt, completion, total}) to ``total``.

    The one token rule: a call's total is the total it reported, or prompt + completion
    when it reported none (or less: a server that omits ``total_tokens``). Totals are
    made per call, so a sum over calls that report differently (one only a total,
    another only prompt and completion) still counts every token.
    """
    used = metadata.get("tokens") if metadata else None
    if not isinstance(used, Mapping):
        return
    prompt, completion, reported = (used.get(key) for key in _COUNTS)
    parts = 0
    for key, value in (("prompt", prompt), ("completion", completion)):
        if _count(value):
            total[key] = total.get(key, 0) + value
            parts += value
    whole = max(reported if _count(reported) else 0, parts)
    if whole or _count(reported):
        total["total"] = total.get("total", 0) + whole


def _count(value: Any) -> TypeGuard[int]:
    """A token count: a non-negative integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def reported_cost(metadata: Mapping[str, Any] | None) -> float | None:
    """A call's ``metadata.cost`` when it is a finite, non-negative number, else None."""
    cost = metadata.get("cost") if metadata else None
    if isinstance(cost, (int, float)) and not isinstance(cost, bool) and 0 <= cost < float("inf"):
        return float(cost)
    return None


def checked_usage(metadata: dict[str, Any]) -> dict[str, Any]:
    """A call's metadata with ``cost`` and ``tokens`` as the event contract has them.

    An agent (a plugin, say) may report a negative, infinite or non-numeric cost, or
    token counts that are not non-negative integers: those values are left out (they
    never counted anyway), so that a stored event always matches the published schema.
    """
    cost = metadata.get("cost")
    tokens = metadata.get("tokens")
    cost_ok = cost is None or reported_cost(metadata) is not None
    tokens_ok = tokens is None or (
        isinstance(tokens, Mapping) and all(_count(tokens[k]) for k in _COUNTS if k in tokens)
    )
    if cost_ok and tokens_ok:
        return metadata
    checked = dict(metadata)
    if not cost_ok:
        del checked["cost"]
    if not tokens_ok:
        if isinstance(tokens, Mapping):
            checked["tokens"] = {k: v for k, v in tokens.items() if k not in _COUNTS or _count(v)}
        else:
            del checked["tokens"]
    return checked


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
        """Every token the calls used (each call's total, see ``add_tokens``)."""
        return self.tokens.get("total", 0)

    def as_metadata(self) -> dict[str, Any]:
        """``{"tokens": ..., "cost": ...}`` with only what was reported."""
        out: dict[str, Any] = {}
        if self.tokens:
            out["tokens"] = dict(self.tokens)
        if self.cost is not None:
            out["cost"] = round(self.cost, 10)
        return out

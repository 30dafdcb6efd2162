"""The small agents that demos and tests need: echo, noop, sleep, fail.

They are ordinary plugins (see the entry points in pyproject.toml) and the
shortest examples of the agent SDK.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

from ..base import Agent, AgentContext, AgentFailure, AgentResult

__all__ = ["EchoAgent", "FailAgent", "NoopAgent", "SleepAgent"]

# For orch's own crash tests; `orch agents` hides keys marked x-internal.
_LEDGER = {
    "type": "string",
    "description": "Append a line per call to this file (for testing resume).",
    "x-internal": True,
}


def _append_ledger(path: str, ctx: AgentContext) -> None:
    """Record one execution durably (O_APPEND + fsync), so crash tests can count them."""
    line = f"{ctx.run_id} {ctx.phase_id} {ctx.attempt}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


class EchoAgent(Agent):
    """Returns ``text`` (any value), or the whole input when there is no ``text``."""

    name = "echo"
    description = "Returns its `text` (or its whole input) as the output."
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "text": {"description": "The value to return (any type)."},
            "ledger": _LEDGER,
        },
    }

    async def run(self, input: Mapping[str, Any], ctx: AgentContext) -> AgentResult:
        if "ledger" in input:
            _append_ledger(str(input["ledger"]), ctx)
            input = {k: v for k, v in input.items() if k != "ledger"}
        return AgentResult(output=input["text"] if "text" in input else dict(input))


class NoopAgent(Agent):
    """Does nothing; the output is null."""

    name = "noop"
    description = "Does nothing; the output is null."
    config_schema: ClassVar[Mapping[str, Any]] = {"type": "object", "additionalProperties": False}

    async def run(self, input: Mapping[str, Any], ctx: AgentContext) -> AgentResult:
        return AgentResult()


class SleepAgent(Agent):
    """Sleeps ``seconds``, then returns ``output`` (default: the seconds slept)."""

    name = "sleep"
    description = "Sleeps `seconds`, then returns `output` (default: the seconds slept)."
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "seconds": {"type": "number", "minimum": 0, "description": "How long to sleep."},
            "output": {"description": "The value to return when done."},
            "ledger": _LEDGER,
        },
        "required": ["seconds"],
        "additionalProperties": False,
    }

    async def run(self, input: Mapping[str, Any], ctx: AgentContext) -> AgentResult:
        seconds = float(input["seconds"])
        if "ledger" in input:
            _append_ledger(str(input["ledger"]), ctx)
        import asyncio  # here: `orch validate` imports this module, and needs no event loop

        await asyncio.sleep(seconds)
        return AgentResult(output=input.get("output", seconds))


class FailAgent(Agent):
    """Fails the first ``times`` attempts (all of them when ``times`` is absent), then succeeds."""

    name = "fail"
    description = "Fails the first `times` attempts (all when absent), then returns `output`."
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "times": {"type": "integer", "minimum": 0, "description": "Attempts that fail."},
            "message": {"type": "string", "description": "The error message."},
            "transient": {
                "type": "boolean",
                "description": "Whether the failure may be retried (default true).",
            },
            "output": {"description": "The value to return once it succeeds."},
        },
        "additionalProperties": False,
    }

    async def run(self, input: Mapping[str, Any], ctx: AgentContext) -> AgentResult:
        times = input.get("times")
        if times is None or ctx.attempt <= int(times):
            message = str(input.get("message", f"failing on purpose (attempt {ctx.attempt})"))
            raise AgentFailure(message, transient=bool(input.get("transient", True)))
        return AgentResult(output=input.get("output", f"succeeded on attempt {ctx.attempt}"))

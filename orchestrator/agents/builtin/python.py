"""The ``python`` agent: calls ``module:function`` with the phase's ``kwargs``.

Sync functions run in a daemon thread of their own (a timed-out one cannot be
stopped: it runs on in the background, and orch does not wait for it at exit),
async ones are awaited. A function that
has a parameter named ``ctx`` also gets the AgentContext. The workflow file's
folder is importable, so a module next to the workflow is found.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import inspect
import re
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from ...errors import OrchError, one_line
from ...template_syntax import is_template
from ..base import Agent, AgentContext, AgentFailure, AgentResult, ConfigProblem

__all__ = ["PythonAgent"]

_TARGET = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$")


class PythonAgent(Agent):
    """Calls a Python function; its return value is the output."""

    name = "python"
    description = (
        "Calls `function` ('module:function', sync in a daemon thread or async) with "
        "`kwargs` as keyword arguments; the return value is the output (an AgentResult "
        "is used as it is)."
    )
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "function": {
                "description": (
                    "What to call, as 'module:function' (module importable from the "
                    "workflow's folder or the environment)."
                ),
                "type": "string",
            },
            "kwargs": {
                "description": "Keyword arguments passed to the function.",
                "type": "object",
            },
        },
        "required": ["function"],
        "additionalProperties": False,
    }

    @classmethod
    def check_static(cls, config: Mapping[str, Any], *, workflow_path: str) -> list[ConfigProblem]:
        """Import the function now (when it is not a template), so a typo is found at validate."""
        target = config.get("function")
        if not isinstance(target, str) or is_template(target):
            return []
        if not _TARGET.match(target):
            return [
                ConfigProblem(
                    ("function",),
                    f"'{target}' is not 'module:function'",
                    hint='e.g. function: "mypackage.scoring:score"',
                )
            ]
        try:
            func = _load(target, str(Path(workflow_path).parent))
        except AgentFailure as exc:
            return [ConfigProblem(("function",), exc.message)]
        kwargs = config.get("kwargs", {})
        if not isinstance(kwargs, Mapping):
            return []
        names = [str(k) for k in kwargs]
        if _wants_ctx(func):
            names.append("ctx")
        misfit = _misfit(func, target, names)
        if misfit is None:
            return []
        return [ConfigProblem(("kwargs",) if "kwargs" in config else (), misfit)]

    async def run(self, input: Mapping[str, Any], ctx: AgentContext) -> AgentResult:
        """Call the function; its exceptions become a failed attempt (AgentFailure)."""
        target = str(input["function"])
        func = _load(target, ctx.workdir)
        kwargs = dict(input.get("kwargs") or {})
        if _wants_ctx(func):
            kwargs["ctx"] = ctx
        misfit = _misfit(func, target, list(kwargs))
        if misfit is not None:
            raise AgentFailure(misfit, transient=False)
        try:
            if inspect.iscoroutinefunction(func):
                value = await func(**kwargs)
            else:
                value = await _in_daemon_thread(functools.partial(func, **kwargs), target)
                if inspect.isawaitable(value):
                    value = await value
        except AgentFailure:
            raise
        except (Exception, SystemExit) as exc:  # the user's code may raise anything, exit too
            raise AgentFailure(
                f"{target} raised {type(exc).__name__}: {one_line(exc)}",
                hint=exc.hint if isinstance(exc, OrchError) else None,
            ) from exc
        if isinstance(value, AgentResult):
            return value
        return AgentResult(output=value)


def _load(target: str, workdir: str) -> Callable[..., Any]:
    """The callable named by 'module:function'; raises AgentFailure (permanent) if absent."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise AgentFailure(f"'{target}' is not 'module:function'", transient=False)
    folder = str(Path(workdir).resolve())
    if folder not in sys.path:
        sys.path.append(folder)  # after the environment: a local file never shadows a package
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentFailure(f"cannot import module '{module_name}': {exc}", transient=False) from exc
    except (Exception, SystemExit) as exc:  # an import runs the module's code
        raise AgentFailure(
            f"importing '{module_name}' raised {type(exc).__name__}: {exc}", transient=False
        ) from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AgentFailure(f"module '{module_name}' has no attribute '{attr}'", transient=False)
        obj = getattr(obj, part)
    if not callable(obj):
        raise AgentFailure(f"'{target}' is not callable", transient=False)
    return obj  # type: ignore[no-any-return]


async def _in_daemon_thread(call: Callable[[], Any], name: str) -> Any:
    """Run ``call`` in a new daemon thread and await its result.

    Not the loop's default executor: ``asyncio.run`` waits for that one's threads
    at the end, so a timed-out function would hold the run open until it returned.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():  # cancelled: the phase timed out
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def work() -> None:
        try:
            value, error = context.run(call), None
        except BaseException as exc:  # handed to the awaiting coroutine
            value, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, value, error)
        except RuntimeError:  # the loop is closed: nobody waits for this any more
            pass

    threading.Thread(target=work, name=f"orch python {name}", daemon=True).start()
    return await future


def _misfit(func: Callable[..., Any], target: str, names: list[str]) -> str | None:
    """Why ``func`` cannot be called with keyword arguments ``names`` (every unexpected
    and every missing one), or None when it can or has no signature to check."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None  # a builtin without a signature: the call will tell
    given = set(names)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    by_name = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unexpected = [] if takes_any else [n for n in names if n not in by_name]
    missing = [
        p.name
        for p in params
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and (p.name not in given or p.kind is p.POSITIONAL_ONLY)
    ]
    if not unexpected and not missing:
        return None
    parts = []
    if unexpected:
        parts.append("unexpected " + ", ".join(f"'{n}'" for n in unexpected))
    if missing:
        parts.append("missing " + ", ".join(f"'{n}'" for n in missing))
    shown = ", ".join(p.name for p in params if p.name != "ctx")
    return f"kwargs do not fit {target}({shown}): {'; '.join(parts)}"


def _wants_ctx(func: Callable[..., Any]) -> bool:
    try:
        return "ctx" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False

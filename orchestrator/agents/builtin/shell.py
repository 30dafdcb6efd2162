"""The ``shell`` agent: runs a command (an argv list, or a string run by /bin/sh).

Template values spliced into a ``command`` string are shell-quoted by the engine
(``shell_fields``); an argv list is passed as it is. Each command runs in its own
session and is ended with its whole process tree on timeout or cancellation.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from ... import jsontext
from ...expr import is_template, template_references
from ..base import Agent, AgentContext, AgentFailure, AgentResult, ConfigProblem
from .process import TAG_VARIABLE, ProcessTree, kill_tagged

__all__ = ["ShellAgent"]

_DEFAULT_MAX_OUTPUT = 10 * 1024 * 1024
_STDERR_TAIL = 4096
_CHUNK = 65536


class ShellAgent(Agent):
    """Runs a command; the output is its stdout (text, JSON or lines)."""

    name = "shell"
    description = (
        "Runs a command: an argv list (passed as it is) or a string run by /bin/sh "
        "(template values are shell-quoted). Output: stdout as text, json or lines; "
        "metadata: exit_code. A non-zero exit fails the phase with the stderr tail."
    )
    shell_fields: ClassVar[tuple[str, ...]] = ("command",)
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "command": {
                "description": (
                    "The command. A string is run by /bin/sh -c, with every {{ }} value "
                    "shell-quoted (do not add quotes around it); a list is the argv, "
                    "passed as it is, without a shell."
                ),
                "type": ["string", "array"],
                "minLength": 1,
                "items": {"type": "string", "description": "One argument."},
                "minItems": 1,
            },
            "env": {
                "description": "Environment variables added to orch's own environment.",
                "type": "object",
                "additionalProperties": {"type": ["string", "number", "boolean"]},
            },
            "inherit_env": {
                "description": "Whether the command sees orch's environment (default true).",
                "type": "boolean",
            },
            "cwd": {
                "description": "Working directory, relative to the workflow file's folder.",
                "type": "string",
            },
            "stdin": {
                "description": "Text written to the command's standard input (default: none).",
                "type": "string",
            },
            "output": {
                "description": (
                    "How stdout becomes the output: text (default; one trailing newline "
                    "removed), json (parsed) or lines (a list of lines)."
                ),
                "enum": ["text", "json", "lines"],
            },
            "max_output": {
                "description": "Largest stdout accepted, in bytes (default 10 MiB).",
                "type": "integer",
                "minimum": 1,
            },
            "stream": {
                "description": (
                    "Send stdout as phase_stream events while the command runs (default false)."
                ),
                "type": "boolean",
            },
            "kill_grace": {
                "description": (
                    "Seconds between SIGTERM and SIGKILL when the command is stopped (default 3)."
                ),
                "type": "number",
                "minimum": 0,
            },
        },
        "required": ["command"],
        "additionalProperties": False,
    }

    @classmethod
    def check_static(cls, config: Mapping[str, Any], *, workflow_path: str) -> list[ConfigProblem]:
        """Warn where a phase output is spliced into a command string (quoted, but risky)."""
        command = config.get("command")
        if not isinstance(command, str) or not is_template(command):
            return []
        problems: list[ConfigProblem] = []
        quoted = _quoted_template(command)
        if quoted is not None:
            problems.append(
                ConfigProblem(
                    ("command",),
                    f"the template {quoted} is inside quotes in a command string: orch quotes"
                    " every template value itself, so the quotes you wrote arrive as"
                    " literal characters",
                    severity="warning",
                    hint="remove the quotes around {{ ... }} (echo text {{ x }}, not"
                    ' echo "text {{ x }}")',
                )
            )
        refs = template_references(command)
        used = sorted(
            {".".join(ref[:2]) for ref in refs if ref[0] == "phases"}
            | {"previous" for ref in refs if ref[0] == "previous"}
        )
        if not used:
            return problems
        return [
            *problems,
            ConfigProblem(
                ("command",),
                f"the output of {', '.join(used)} is spliced into a shell command string; "
                "it is shell-quoted, but an argv list or env is safer",
                severity="warning",
                hint="use command: [prog, arg, ...] or pass the value through env",
            ),
        ]

    async def run(self, input: Mapping[str, Any], ctx: AgentContext) -> AgentResult:
        """Run the command; raises AgentFailure on a non-zero exit, a too-large output,
        bad JSON, or a command that cannot start."""
        command = input["command"]
        argv = (
            ["/bin/sh", "-c", command] if isinstance(command, str) else [_word(a) for a in command]
        )
        tag = f"{ctx.run_id}/{ctx.phase_id}/{ctx.attempt}/{uuid.uuid4().hex}"
        env = dict(os.environ) if input.get("inherit_env", True) else {}
        env.update({k: _word(v) for k, v in (input.get("env") or {}).items()})
        env[TAG_VARIABLE] = tag
        if ctx.traceparent:  # W3C trace context for commands that trace (OpenTelemetry)
            env["TRACEPARENT"] = ctx.traceparent
        cwd = Path(ctx.workdir, input["cwd"]) if input.get("cwd") else Path(ctx.workdir)
        if not cwd.is_dir():
            raise AgentFailure(f"working directory '{cwd}' does not exist", transient=False)
        stdin = input.get("stdin")
        grace = float(input.get("kill_grace", 3))
        cap = int(input.get("max_output", _DEFAULT_MAX_OUTPUT))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise AgentFailure(
                f"cannot start {argv[0]!r}: {exc.strerror or exc}", transient=False
            ) from exc
        except BaseException:  # cancelled while starting: what already runs must not survive
            kill_tagged(tag)  # asyncio kills only the leader; its children carry the tag
            raise
        tree = ProcessTree(proc.pid, tag)
        try:
            live = ctx.stream if input.get("stream") else None
            stdout, stderr = await _communicate(proc, tree, stdin, cap, ctx.deadline, live)
        except BaseException:  # cancelled, timed out or failed: no process may survive
            # SIGTERM at once: a second cancel (run teardown) can cut the shielded wait
            # below before its task ever runs, and the tree must be signalled all the same
            tree.signal(signal.SIGTERM)
            await asyncio.shield(_end(proc, tree, grace))
            raise
        code = proc.returncode if proc.returncode is not None else -1
        err_tail = stderr[-_STDERR_TAIL:].decode("utf-8", "replace")
        metadata: dict[str, Any] = {"exit_code": code}
        if code != 0:
            reason = (
                f"killed by {signal.Signals(-code).name}"
                if code < 0 and -code in signal.Signals._value2member_map_
                else f"exited with code {code}"
            )
            message = f"command {reason}"
            if err_tail.strip():
                message += f"; stderr: {err_tail.strip()}"
            raise AgentFailure(message, metadata={**metadata, "stderr": err_tail})
        if err_tail:
            metadata["stderr"] = err_tail
        return AgentResult(output=_parse(stdout, input.get("output", "text")), metadata=metadata)


def _word(value: Any) -> str:
    """An argv item or env value from any rendered value: text as it is, data as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple, bool)) or value is None:
        return json.dumps(value, ensure_ascii=False)
    return str(value)


async def _communicate(
    proc: asyncio.subprocess.Process,
    tree: ProcessTree,
    stdin: str | None,
    cap: int,
    deadline: float | None,
    live: Callable[[str], Awaitable[None]] | None = None,
) -> tuple[bytes, bytes]:
    """Feed stdin, read both pipes (stdout capped, stderr tail kept), wait for the exit."""
    assert proc.stdout is not None and proc.stderr is not None
    out = bytearray()
    err = bytearray()

    async def feed() -> None:
        if stdin is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(stdin.encode())
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the command did not read all of it
        finally:
            proc.stdin.close()

    async def read_out() -> None:
        assert proc.stdout is not None
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while chunk := await proc.stdout.read(_CHUNK):
            out.extend(chunk)
            if live is not None and (text := decoder.decode(chunk)):
                await live(text)
            if len(out) > cap:
                raise AgentFailure(
                    f"command output exceeds max_output ({cap} bytes); it was stopped",
                    transient=False,
                )

    async def read_err() -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(_CHUNK):
            err.extend(chunk)
            del err[: max(0, len(err) - _STDERR_TAIL * 4)]

    async def pipes() -> None:
        await asyncio.gather(feed(), read_out(), read_err())

    async def exited() -> None:
        # Not proc.wait(): on Python < 3.12 it also waits for the pipes, which a
        # left-behind grandchild may hold open forever.
        delay = 0.001
        while proc.returncode is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    reader = asyncio.ensure_future(pipes())
    waiter = asyncio.ensure_future(exited())
    try:
        while not waiter.done():
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            # once the pipes are closed, only the exit is left to wait for
            pending = {waiter} if reader.done() else {waiter, reader}
            done, _ = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                raise AgentFailure("command timed out (deadline reached); it was stopped")
            if reader in done and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
        # The command exited; a left-behind child may still hold the pipes open.
        finished, _ = await asyncio.wait({reader}, timeout=1.0)
        if not finished:
            await tree.terminate(0.5)
        await reader
        await proc.wait()  # the pipes are closed: this reaps the transport
    finally:
        for task in (reader, waiter):
            if not task.done():
                task.cancel()
        await asyncio.gather(reader, waiter, return_exceptions=True)
    return bytes(out), bytes(err)


async def _end(proc: asyncio.subprocess.Process, tree: ProcessTree, grace: float) -> None:
    await tree.terminate(grace)
    # Read the pipes to their end (the writers are dead): a pipe left unread stays
    # paused and its transport is never closed.
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            try:
                await asyncio.wait_for(_drain(stream), 2)
            except (asyncio.TimeoutError, OSError):  # pragma: no cover - a survivor holds it
                pass
    try:  # reaps the process and lets its pipe transports close
        await asyncio.wait_for(proc.wait(), 5)
    except asyncio.TimeoutError:  # pragma: no cover - SIGKILL was sent; give up waiting
        pass


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(_CHUNK):
        pass


def _parse(stdout: bytes, mode: str) -> Any:
    text = stdout.decode("utf-8", "replace")
    if mode == "json":
        try:
            return jsontext.loads(text)
        except ValueError as exc:
            snippet = text[:200]
            raise AgentFailure(
                f"stdout is not valid JSON ({exc}): {snippet!r}", transient=False
            ) from exc
    if mode == "lines":
        return text.splitlines()
    return text[:-1] if text.endswith("\n") else text


def _quoted_template(command: str) -> str | None:
    """The first ``{{ ... }}`` written inside shell quotes ('...' or "..."), or None."""
    quote = ""
    i = 0
    while i < len(command):
        ch = command[i]
        if command.startswith("{{", i):
            end = command.find("}}", i)
            if quote:
                shown = command[i : end + 2] if end >= 0 else command[i : i + 20]
                return shown if len(shown) <= 40 else shown[:37] + "..."
            i = end + 2 if end >= 0 else len(command)
            continue
        if ch == "\\" and quote != "'":
            i += 2
            continue
        if ch in "'\"" and quote in ("", ch):
            quote = "" if quote else ch
        i += 1
    return None

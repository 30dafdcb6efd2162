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
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from ... import jsontext
from ...expr import is_template, template_references
from ..base import Agent, AgentContext, AgentFailure, AgentResult, ConfigProblem
from .process import TAG_VARIABLE, ProcessTree

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
        try:  # synchronously (as asyncio does): the pid is known before anything is awaited
            proc = _Command(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,
                )
            )
        except OSError as exc:
            raise AgentFailure(
                f"cannot start {argv[0]!r}: {exc.strerror or exc}", transient=False
            ) from exc
        tree = ProcessTree(proc.pid, tag)
        try:
            await proc.connect()
            live = ctx.stream if input.get("stream") else None
            stdout, stderr = await _communicate(proc, tree, stdin, cap, ctx.deadline, live)
        except BaseException:  # cancelled, timed out or failed: no process may survive
            # SIGTERM at once: a second cancel (run teardown) can cut the shielded wait
            # below before its task ever runs, and the tree must be signalled all the same
            tree.signal(signal.SIGTERM)
            ending = asyncio.ensure_future(_end(proc, tree, grace))
            try:
                await asyncio.shield(ending)
            except asyncio.CancelledError:  # cancelled again (a second Ctrl-C): kill now
                tree.signal(signal.SIGKILL)
                await asyncio.shield(ending)
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


class _Command:
    """A started command: its ``Popen`` and asyncio streams over its pipes.

    Not ``asyncio.create_subprocess_exec``: a task cancelled while that is starting the
    command waits for the command's pipes to connect, which never happens when the
    event loop is shutting down (``asyncio.run`` returning right after a program left a
    run at ``phase_started`` cancels every task): the program hung, the command lived on.
    Here the process starts synchronously (asyncio's transport does too), so the pid is
    known, and the process tree guarded, before anything is awaited.
    """

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.stdin: asyncio.StreamWriter | None = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None

    async def connect(self) -> None:
        """Read stdout and stderr (and write stdin) through the event loop."""
        loop = asyncio.get_running_loop()
        popen = self.popen
        self.stdout = await _reader(loop, popen.stdout)
        self.stderr = await _reader(loop, popen.stderr)
        if popen.stdin is not None:
            transport, protocol = await loop.connect_write_pipe(
                lambda: _WriteProtocol(loop=loop), popen.stdin
            )
            self.stdin = asyncio.StreamWriter(transport, protocol, None, loop)

    def release(self) -> None:
        """Close what is left of the pipes on this side: stdin, and a pipe a cancel kept
        from being connected (a connected read pipe closes at its end of file)."""
        if self.stdin is not None:
            self.stdin.close()
        for stream, pipe in ((self.stdout, self.popen.stdout), (self.stderr, self.popen.stderr)):
            if stream is None and pipe is not None:
                pipe.close()
        if self.stdin is None and self.popen.stdin is not None:
            self.popen.stdin.close()

    @property
    def returncode(self) -> int | None:
        """The exit status once the command has ended (reaped), else None."""
        return self.popen.poll()

    async def wait(self) -> int:
        """Wait for the command to end, without a child watcher: its pidfd becomes
        readable at the exit (Linux >= 5.3), where the event loop can watch one;
        elsewhere the exit is polled (a backoff up to 50 ms)."""
        code = self.popen.poll()
        if code is not None:
            return code
        # nothing reaps the command between that poll and this (no await): the pidfd is
        # the command's, even if it has just exited
        fd = _pidfd(self.pid)
        if fd is not None:
            try:
                if await _readable(fd):
                    return self.popen.wait()  # it exited: reaping does not block
            finally:
                os.close(fd)
        delay = 0.001
        while (code := self.popen.poll()) is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return code


def _pidfd(pid: int) -> int | None:
    """A file descriptor that becomes readable when process ``pid`` exits, or None where
    there is none (not Linux, a kernel before 5.3, a sandbox refusing the call)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(pid)
    except OSError:
        return None
    return fd


async def _readable(fd: int) -> bool:
    """Wait until ``fd`` is readable; False at once when the event loop cannot watch it."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    try:
        loop.add_reader(fd, _settle, ready)
    except (NotImplementedError, OSError, ValueError):  # e.g. a loop without add_reader
        return False
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    return True


def _settle(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


async def _reader(loop: asyncio.AbstractEventLoop, pipe: Any) -> asyncio.StreamReader:
    """A stream over a pipe the command writes to."""
    reader = asyncio.StreamReader(limit=_CHUNK, loop=loop)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe)
    return reader


class _WriteProtocol(asyncio.streams.FlowControlMixin):
    """The protocol of the stdin pipe (flow control for ``StreamWriter.drain``)."""


def _word(value: Any) -> str:
    """An argv item or env value from any rendered value: text as it is, data as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple, bool)) or value is None:
        return json.dumps(value, ensure_ascii=False)
    return str(value)


async def _communicate(
    proc: _Command,
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

    reader = asyncio.ensure_future(pipes())
    waiter = asyncio.ensure_future(proc.wait())  # the exit only: a grandchild may hold the pipes
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
    finally:
        for task in (reader, waiter):
            if not task.done():
                task.cancel()
        await asyncio.gather(reader, waiter, return_exceptions=True)
    return bytes(out), bytes(err)


async def _end(proc: _Command, tree: ProcessTree, grace: float) -> None:
    await tree.terminate(grace)
    proc.release()
    # Read the pipes to their end (the writers are dead): a pipe left unread stays
    # paused and its transport is never closed.
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            try:
                await asyncio.wait_for(_drain(stream), 2)
            except (asyncio.TimeoutError, OSError):  # pragma: no cover - a survivor holds it
                pass
    try:  # reaps the process
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

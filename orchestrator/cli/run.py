"""`orch run`: load, plan and run a workflow with live progress or plain lines; print the outputs.

Exit codes: 0 completed, 1 failed, 2 invalid file or usage, 130 Ctrl-C, 143
SIGTERM. Progress, the summary and messages go to stderr; stdout carries the
outputs as JSON, or with ``--events jsonl`` one JSON event per line and nothing
else (``--dry-run --events jsonl`` prints its text plan to stderr).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from ..errors import ExecutionError, Location, OrchError, UsageError, WorkflowInvalid
from ..jsontext import dumps
from .usage import StateDirOption, complete_workflow_name, whole_number

if TYPE_CHECKING:
    from ..engine import RunResult
    from ..engine.dask_executor import ExecutorChoice
    from ..events import EventSink
    from ..plan import Plan
    from ..spec.model import Workflow

__all__ = [
    "ExecutorOption",
    "RecordOption",
    "ReplayOption",
    "call_log",
    "register",
    "write_file",
]


class EventsFormat(str, Enum):
    """Machine-readable event formats for ``--events``."""

    jsonl = "jsonl"


#: ``--record``, ``--replay`` and ``--executor``, shared by `orch run` and `orch resume`.
RecordOption = Annotated[
    Path | None,
    typer.Option(
        "--record",
        help="Store every agent call (input hash, result, stream, tokens) in this folder.",
        metavar="DIR",
        readable=False,  # checked by engine/recording (files.folder_problem)
    ),
]
ReplayOption = Annotated[
    Path | None,
    typer.Option(
        "--replay",
        help="Answer every agent call from a folder made by --record (offline).",
        metavar="DIR",
        readable=False,  # checked by engine/recording (files.folder_problem)
    ),
]
ExecutorOption = Annotated[
    str | None,
    typer.Option(
        "--executor",
        help=(
            "Where agent calls run: local (default), dask (a local Dask cluster, or "
            "$DASK_SCHEDULER_ADDRESS) or dask://HOST:PORT (an existing cluster)."
        ),
        metavar="WHERE",
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``orch run`` to ``app``."""
    app.command("run")(run_command)


def run_command(
    ctx: typer.Context,
    file: Annotated[
        str,  # as given: an empty one is an error, not Path('') (the current folder)
        typer.Argument(
            help="The workflow file to run, or NAME for NAME.yaml in $ORCH_WORKFLOWS"
            " (default ./workflows).",
            show_default=False,
            metavar="FILE|NAME",
            autocompletion=complete_workflow_name,
        ),
    ],
    input_: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            help="A run input as NAME=VALUE (repeatable).",
            show_default=False,
            metavar="NAME=VALUE",
        ),
    ] = None,
    inputs_file: Annotated[
        Path | None,
        typer.Option(
            "--inputs-file",
            help="A YAML or JSON file mapping input names to values.",
            metavar="FILE",
        ),
    ] = None,
    max_parallel: Annotated[
        int | None,
        typer.Option(
            "--max-parallel",
            parser=whole_number,
            help="At most this many phases at once.",
            metavar="N",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the execution plan and run nothing.")
    ] = False,
    events: Annotated[
        EventsFormat | None,
        typer.Option("--events", help="Write every event to stdout as JSON lines."),
    ] = None,
    output_file: Annotated[
        Path | None,
        typer.Option(
            "--output-file",
            help="Write the workflow outputs to this file as JSON.",
            metavar="FILE",
            readable=False,  # only written: checked by files.check_output_path
        ),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write cached phase results.")
    ] = False,
    state_dir: StateDirOption = None,
    junit: Annotated[
        Path | None,
        typer.Option(
            "--junit",
            help="Write a JUnit XML report (one testcase per phase).",
            metavar="FILE",
            readable=False,  # only written: checked by files.check_output_path
        ),
    ] = None,
    record: RecordOption = None,
    replay: ReplayOption = None,
    executor: ExecutorOption = None,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            help="Print the run id and return at once; a background process runs it "
            "(follow it with `orch status`, `orch logs --follow`, `orch wait`).",
        ),
    ] = False,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", hidden=True, help="The id to record the run under."),
    ] = None,
) -> None:
    """Run a workflow: live progress on a terminal, plain lines elsewhere; print the outputs."""
    try:
        from ..engine.dask_executor import parse_executor
        from ..spec.locate import find_workflow

        where = parse_executor(executor)  # before anything runs: a bad value exits 2 at once
        found = find_workflow(file)
        workflow = _load(found)
        from ..plan import compile_plan

        plan = compile_plan(workflow)
        inputs = _resolve_inputs(workflow, input_ or [], inputs_file)
        from ..files import check_output_path

        for option, path, example in (
            ("--output-file", output_file, "outputs.json"),
            ("--junit", junit, "junit.xml"),
        ):
            if path is not None:  # before anything runs, not after a long run
                check_output_path(path, option, example=example)
        if dry_run:
            # stdout carries only JSON under --events jsonl: the plan (text) goes to stderr
            out = sys.stderr if events is EventsFormat.jsonl else sys.stdout
            from .session import dry_run_cache_lines as cache_preview

            # first: a state folder `orch run` would refuse exits 2 before the plan shows
            cache_lines = cache_preview(plan, inputs, state_dir, no_cache=no_cache)
            _print_plan(plan, inputs, out)
            for line in cache_lines:
                out.write(line + "\n")
            out.flush()
            raise typer.Exit(0)
        calls = call_log(record, replay)  # a missing --replay folder: exit 2, before detaching
        if detach:
            if events is not None:
                raise UsageError(
                    "--detach and --events cannot go together: a detached run prints nothing",
                    hint="follow it with `orch logs RUN --follow --json`",
                )
            from .detach import child_options, detach_run

            raise typer.Exit(detach_run(found, child_options(ctx), state_dir=state_dir))
        result_code = _run(
            plan,
            inputs,
            events=events is EventsFormat.jsonl,
            output_file=output_file,
            max_parallel=max_parallel,
            no_cache=no_cache,
            state_dir=state_dir,
            junit=junit,
            calls=calls,
            executor=where,
            run_id=run_id,
        )
    except WorkflowInvalid as exc:
        _print_problems(exc)
        raise typer.Exit(2) from None
    except ExecutionError as exc:  # the run itself broke (its store could not record it)
        _print_error(exc)
        raise typer.Exit(1) from None
    except OrchError as exc:  # bad inputs, a located WorkflowError, an agent that cannot load
        _print_error(exc)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:  # Ctrl-C before the run's own handlers were installed
        sys.stderr.write("interrupted\n")
        raise typer.Exit(130) from None
    raise typer.Exit(result_code)


def call_log(record: Path | None, replay: Path | None) -> Any:
    """The CallLog of ``--record DIR`` or ``--replay DIR`` (None without either).

    Raises UsageError (exit 2) for both at once, a missing --replay folder, an
    unwritable --record one: before anything runs.
    """
    if record is not None and replay is not None:
        raise UsageError("--record and --replay cannot be used together; choose one")
    if record is None and replay is None:
        return None
    from ..engine.recording import CallLog

    if replay is not None:
        return CallLog(replay, replay=True)
    assert record is not None
    return CallLog(record, replay=False)


def _print_error(exc: OrchError) -> None:
    """An error on stderr, shaped as `orch validate` prints problems, with its hint.

    A located error is ``FILE:LINE:COL: message``; one without a place is ``error: message``.
    """
    text = exc.headline if exc.location is not None else f"error: {exc.headline}"
    sys.stderr.write(text + "\n" + (f"  hint: {exc.hint}\n" if exc.hint else ""))
    sys.stderr.flush()


def _load(file: Path) -> Workflow:
    from .validate import load_or_exit

    return load_or_exit(file)


def _print_problems(exc: WorkflowInvalid) -> None:
    from ..render.problems import write_problems

    write_problems(exc.problems, "text", sys.stderr)


def _resolve_inputs(
    workflow: Workflow, pairs: list[str], inputs_file: Path | None
) -> dict[str, Any]:
    """The run's inputs: ``--inputs-file`` first, then each ``--input`` over it, typed."""
    from ..engine.inputs import resolve_inputs

    from_file: dict[str, Any] = {}
    if inputs_file is not None:
        from ..spec.source import read_source

        source = read_source(inputs_file, kind="inputs file")  # located errors -> exit 2
        if not isinstance(source.data, Mapping):
            raise UsageError(
                "the inputs file must map input names to values, "
                f"not a {type(source.data).__name__}",
                location=Location(str(inputs_file)),
            )
        from_file = {str(k): v for k, v in source.data.items()}
    strings: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(
                f"--input '{pair}' is not NAME=VALUE", hint="write e.g. --input account_id=ACC-1"
            )
        strings[name.strip()] = value
    # One call, so that defaults and required inputs are checked once; string values
    # (every --input, and strings in the file) are parsed by their declared type.
    return resolve_inputs(workflow, {**from_file, **strings}, strings=True)


def _print_plan(plan: Plan, inputs: Mapping[str, Any], out: TextIO) -> None:
    from ..expr import render, template_references
    from ..render.summary import render_plan_preview

    context = {"inputs": dict(inputs), "run": {"workflow": plan.workflow.name}}

    def static(value: Any) -> Any:
        if isinstance(value, str):
            refs = template_references(value)
            if all(r[0] == "inputs" or r[:2] == ("run", "workflow") for r in refs):
                try:
                    return render(value, context)
                except OrchError:  # shown unrendered; `orch validate` reports it
                    return value
            return value
        if isinstance(value, Mapping):
            return {k: static(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [static(v) for v in value]
        return value

    out.write(render_plan_preview(plan, static) + "\n")
    out.flush()


def _run(
    plan: Plan,
    inputs: Mapping[str, Any],
    *,
    events: bool,
    output_file: Path | None,
    max_parallel: int | None,
    no_cache: bool,
    state_dir: Path | None = None,
    run_id: str | None = None,
    prepared: Any = None,
    junit: Path | None = None,
    calls: Any = None,
    executor: ExecutorChoice | None = None,
) -> int:
    """Run the plan with the sinks this invocation wants; returns the exit code.

    Every run is recorded in the state store (``state_dir``) through
    ``orchestrator.runs.start``; ``prepared`` (``runs.prepare``) goes on with a
    stopped run instead (``orch resume``).
    """
    import asyncio  # here, not at module level: `orch --help` does not need it

    from ..events import MIN_SECRET_LENGTH, too_short
    from ..render.console import is_live, make_console
    from ..render.progress import JsonLines, LiveProgress, PlainLines, RunView
    from ..render.summary import print_summary
    from ..runs import go_on, start, status_exit_code

    prior = prepared.resume.prior if prepared is not None else None
    # only secrets that are set: an unset one is refused, or stood in for under --replay
    set_ = {n: os.environ[n] for n in plan.workflow.secret_names if n in os.environ}
    short = too_short(set_)
    if short:  # said before the run starts: these values will show in clear
        names = ", ".join(short)
        sys.stderr.write(
            f"warning: secret{'s' if len(short) > 1 else ''} {names}: shorter than"
            f" {MIN_SECRET_LENGTH} characters, so not masked (masking them would rewrite"
            " ordinary text); use longer secrets\n"
        )
    err = make_console(sys.stderr)
    view = RunView()
    if prior:  # a resumed run: the summary shows the phases completed before, as completed
        from .session import seed_view

        seed_view(view, plan, prior, prepared.resume.run.id)
    view.workflow = plan.workflow.name  # the first frame is drawn before the first event
    view.expect(plan.order)  # handler phases are shown, but not counted as the workflow's
    sinks: list[EventSink] = [view]
    if events:
        sinks.append(JsonLines(sys.stdout))
    # JSON lines on the same terminal would tear the live display apart: plain lines then.
    live = (
        LiveProgress(view, err) if is_live(err) and not (events and _isatty(sys.stdout)) else None
    )
    if live is None:
        sinks.append(PlainLines(sys.stderr, completed_before=len(prior or {})))
    tracer = _tracer(plan)
    if tracer is not None:
        sinks.append(tracer.sink)
    # outermost first: the trace spans a call that --record / --replay answers
    middleware = tuple(
        m for m in (tracer.middleware if tracer is not None else None, calls) if m is not None
    )
    trace_id = tracer.trace_id if tracer is not None else None
    received: list[int] = []

    def on_second_signal() -> None:
        if live is not None:
            live.stop()
        sys.stderr.write("forced exit: phases may still be running\n")
        sys.stderr.flush()
        os._exit(status_exit_code("cancelled", signal.Signals(received[-1]).name))

    def notify(text: str) -> None:
        if live is not None:
            err.print(text, soft_wrap=True)  # shown above the live display, not drawn over
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    where_to: Any = None  # the opened Dask executor, with --executor dask

    async def launch() -> Any:
        how: dict[str, Any] = {  # the same for a new run and a resumed one
            "state_dir": state_dir,
            "max_parallel": max_parallel,
            "no_cache": no_cache,
            "sinks": sinks,
            "call_middleware": middleware,  # tracing, --record / --replay
            "replay": calls is not None and calls.replay,
            "executor": where_to,
            "trace_id": trace_id,
        }
        if prepared is not None:
            return await go_on(prepared, **how)
        return await start(plan, inputs=inputs, run_id=run_id, **how)

    async def main() -> RunResult:
        nonlocal where_to
        if executor is None:
            return await _execute(launch, received, on_second_signal, notify=notify)
        from ..engine.dask_executor import opened

        async with opened(executor, notify) as dask:  # the cluster lives as long as the run
            where_to = dask
            return await _execute(launch, received, on_second_signal, notify=notify)

    try:
        if live is not None:
            with live:
                result = asyncio.run(main())
        else:
            result = asyncio.run(main())
    except KeyboardInterrupt:  # a signal that arrived outside the loop's handlers
        sys.stderr.write("interrupted\n")
        return 130
    finally:
        if tracer is not None:
            tracer.shutdown()
    if view.status is None:  # the engine ended without a final event (it should not)
        view.status = result.status
    print_summary(err, view, plan, str(state_dir) if state_dir is not None else None)
    _ci_reports(view, plan, junit)
    outputs = view.outputs if view.outputs is not None else result.outputs
    if output_file is not None:
        text = dumps(outputs, indent=2, what="the run's outputs") + "\n"
        write_file(output_file, text, "--output-file")
    if not events and result.status == "completed":
        text = dumps(outputs, indent=2, what="the run's outputs") + "\n"
        with contextlib.suppress(BrokenPipeError):  # `orch run wf.yaml | head -1`
            sys.stdout.write(text)
            sys.stdout.flush()
    return status_exit_code(result.status, signal.Signals(received[0]).name if received else None)


async def _execute(
    launch: Callable[[], Coroutine[Any, Any, Any]],
    received: list[int],
    force: Callable[[], None],
    *,
    notify: Callable[[str], None] | None = None,
) -> RunResult:
    """Start the run with SIGINT and SIGTERM turned into a clean cancel; a second one stops
    it now (running commands are killed, the compensations then run; one that came while
    compensating stops it: those not started are left to ``orch resume``), a third forces
    the exit (``orch resume`` finishes what was left)."""
    import asyncio

    loop = asyncio.get_running_loop()
    handle: list[Any] = []

    def say(message: str) -> None:
        if notify is not None:
            notify(message)
        else:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) > 2 or (len(received) > 1 and not handle):
            force()
            return
        name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        if len(received) == 2:  # stop now: the run records its end (cancelled) and returns
            say(
                f"{name} again: stopping now (running commands are killed, then the "
                "compensations run; a compensation under way is stopped and the rest left "
                "to `orch resume`; again to force exit)"
            )
            handle[0].cancel(received[0], force=True)
            return
        say(f"{name}: cancelling the run (again to stop now)")
        if handle:
            handle[0].cancel(signum)

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, int(sig))
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, Windows
            pass
    try:
        started = await launch()
        handle.append(started)
        if received:  # a signal arrived while the run was starting
            started.cancel(received[0])
        result: RunResult = await started.wait()
        by = started.cancelled_by
        if not received and by in signal.Signals.__members__:  # `orch cancel`: as SIGTERM
            received.append(int(signal.Signals[by]))
        return result
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _tracer(plan: Plan) -> Any:
    """A RunTracer with its run span begun when the OTEL_ variables ask for traces, else None.

    Without the ``otel`` extra the run goes on untraced, after a warning saying
    how to install it. An unsupported exporter or protocol is a UsageError (exit 2).
    """
    from ..tracing import TracingUnavailable, start_tracing, tracing_wanted

    if not tracing_wanted(os.environ):
        return None
    try:
        tracer = start_tracing(os.environ)
    except TracingUnavailable as exc:
        sys.stderr.write(f"warning: {exc.headline}; the run is not traced\n  hint: {exc.hint}\n")
        return None
    import time

    tracer.begin(plan.workflow.name, time.time())
    return tracer


def _ci_reports(view: Any, plan: Plan, junit: Path | None) -> None:
    """What CI reads: ``--junit``; under GitHub Actions the annotations and the step summary."""
    if junit is None and os.environ.get("GITHUB_ACTIONS") != "true":
        return
    from ..render import ci

    wf = plan.workflow
    if junit is not None:
        write_file(junit, ci.junit_xml(view, wf), "--junit")
    if os.environ.get("GITHUB_ACTIONS") != "true":
        return
    for line in ci.github_annotations(view, wf):
        sys.stderr.write(line + "\n")
    sys.stderr.flush()
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(ci.step_summary(view, wf))
        except OSError as exc:  # the run's outcome stands: say why the summary is missing
            sys.stderr.write(f"warning: cannot append to GITHUB_STEP_SUMMARY '{summary}': {exc}\n")


def write_file(path: Path, text: str, option: str) -> None:
    """Write ``text`` to ``path`` atomically: a new or regular file only (orchestrator.files)."""
    from ..files import write_output_atomic

    write_output_atomic(path, text, option)

"""`orch report RUN [-o FILE]`: one self-contained HTML page of a recorded run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .runs import _fail, _store
from .usage import StateDirOption

if TYPE_CHECKING:
    from ..plan import Plan
    from ..state.base import RunRecord

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``orch report`` to ``app``."""
    app.command("report")(report_command)


def report_command(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run (its id or a prefix).")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Where to write the page (default: orch-report-RUN.html; - for stdout).",
            readable=False,  # only written: checked by files.check_output_path
        ),
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Write one self-contained HTML page of a run: summary, graph, a timeline of every
    attempt, errors with their log tails, tokens and cost. Opens offline."""
    from ..errors import OrchError
    from ..files import check_output_path
    from ..render.report import report_html
    from ..state.timeline import load_report
    from .run import write_file

    store = _store(state_dir, run_id)
    try:
        report = load_report(store, run_id)
    except OrchError as exc:
        _fail(exc)
    finally:
        store.close()
    plan, note = _plan_of(report.run)
    page = report_html(report, plan, note)
    if output is not None and str(output) == "-":
        sys.stdout.write(page)
        return
    target = output or Path(f"orch-report-{report.run.id}.html")
    try:
        check_output_path(target, "--output", example="report.html")
        write_file(target, page, "--output")
    except OrchError as exc:
        _fail(exc)
    sys.stderr.write(f"wrote {target}\n")


def _plan_of(run: RunRecord) -> tuple[Plan | None, str]:
    """The run's workflow as its file is now, and a note when it cannot be, or changed."""
    from ..errors import OrchError
    from ..plan import compile_plan
    from ..spec import load_workflow

    try:
        plan = compile_plan(load_workflow(run.path))
    except OrchError as exc:
        return (
            None,
            f"graph not drawn: the workflow file '{run.path}' cannot be loaded ({exc.headline})",
        )
    if run.source_hash and plan.workflow.source_hash != run.source_hash:
        return (
            plan,
            f"the workflow file '{run.path}' changed since this run; "
            "the graph is of the file as it is now",
        )
    return plan, ""

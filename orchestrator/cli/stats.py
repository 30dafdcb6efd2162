"""`orch stats`: runs, success rate, durations, retries, tokens and cost across recorded runs."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .runs import _existing, _fail
from .usage import StateDirOption

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``orch stats`` to ``app``."""
    app.command("stats")(stats_command)


def stats_command(
    workflow: Annotated[
        str | None,
        typer.Argument(help="Only this workflow (its name).", show_default=False),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only runs started this long ago or later (7d, 12h, 30m).",
            metavar="DURATION",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    openmetrics: Annotated[
        bool, typer.Option("--openmetrics", help="Print OpenMetrics text (for a scraper).")
    ] = False,
    state_dir: StateDirOption = None,
) -> None:
    """Across recorded runs: per workflow, phase and agent, runs, success rate, p50/p95
    durations, calls, failures, retries, time busy, tokens and cost."""
    from ..errors import OrchError, UsageError
    from ..runs import stats as compute
    from ..state.stats import parse_since

    try:
        if as_json and openmetrics:
            raise UsageError("--json and --openmetrics cannot be used together; choose one")
        start = None if since is None else parse_since(since, option="--since")
        store = _existing(state_dir)  # a file: exit 2; nothing recorded: says where
        if store is not None:
            store.close()
        stats = compute(workflow, since=start, state_dir=state_dir)
    except OrchError as exc:
        _fail(exc)
    if as_json:
        from ..jsontext import dumps

        sys.stdout.write(dumps(stats.as_dict(), indent=2, what="the statistics") + "\n")
    elif openmetrics:
        from ..render.stats import openmetrics as to_openmetrics

        sys.stdout.write(to_openmetrics(stats))
    else:
        from ..render.console import make_console
        from ..render.stats import stats_view

        make_console(sys.stdout).print(stats_view(stats))

"""`orch approve RUN PHASE [--comment C]` and `orch reject RUN PHASE [--comment C]`.

They record a decision for a phase waiting for approval (``orchestrator.approve``/``reject``);
the run waiting for it, or ``orch resume`` later, goes on from there. Exit 0 when
recorded; 2 for an unknown run or phase, a phase that is not waiting, a run that
has ended, or a decision already made.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .usage import StateDirOption

__all__ = ["register"]

_RUN = typer.Argument(..., metavar="RUN", help="A run id (or a unique prefix).")
_PHASE = typer.Argument(..., metavar="PHASE", help="The id of the phase waiting for approval.")
_COMMENT = typer.Option(None, "--comment", "-m", help="Why: recorded with the decision.")


def register(app: typer.Typer) -> None:
    """Add ``orch approve`` and ``orch reject`` to ``app``."""
    app.command("approve")(approve_command)
    app.command("reject")(reject_command)


def approve_command(
    run_id: str = _RUN,
    phase: str = _PHASE,
    comment: str | None = _COMMENT,
    state_dir: StateDirOption = None,
) -> None:
    """Approve a phase waiting for approval: it runs."""
    _decide(run_id, phase, approve=True, comment=comment, state_dir=state_dir)


def reject_command(
    run_id: str = _RUN,
    phase: str = _PHASE,
    comment: str | None = _COMMENT,
    state_dir: StateDirOption = None,
) -> None:
    """Reject a phase waiting for approval: it fails (its run goes on as on any failure)."""
    _decide(run_id, phase, approve=False, comment=comment, state_dir=state_dir)


def _decide(
    run_id: str, phase: str, *, approve: bool, comment: str | None, state_dir: Path | None
) -> None:
    from ..errors import OrchError
    from ..runs import approve as approve_
    from ..runs import reject
    from .runs import _fail

    try:
        decide = approve_ if approve else reject
        decision = decide(run_id, phase, comment=comment, state_dir=state_dir)
    except OrchError as exc:
        _fail(exc)
    sys.stderr.write(f"phase {decision.phase} of run {decision.run_id} {decision.text}\n")

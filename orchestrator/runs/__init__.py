"""Runs over the state store, from Python: the peer of the CLI (contract section 9).

``start`` runs a workflow in this process's event loop, recorded in the state
store exactly as ``orch run`` records it (so ``orch runs/status/logs/resume/cancel``
see it), with the phase cache; it returns a ``RunHandle`` to follow its events,
read its status, wait for it and cancel it. ``resume`` goes on with a stopped
run. ``status``, ``list_runs``, ``follow``, ``wait``, ``cancel``, ``approve`` and
``reject`` work on any recorded run, started here or by another process (``orch
run``, ``orch serve``); ``stats`` across them. The CLI commands call these and print.

Modules: ``launch`` (start, prepare, go_on, resume: starting and owning runs),
``handle`` (RunHandle), ``recorded`` (reading, waiting for, cancelling and deciding
approvals of any recorded run; stats), ``live`` (the runs this process is running).
"""

from __future__ import annotations

from .handle import RunHandle
from .launch import Prepared, go_on, prepare, resume, start
from .recorded import (
    EXIT_CODES,
    POLL,
    Cancelled,
    RunStatus,
    approve,
    cancel,
    exit_code,
    follow,
    list_runs,
    reject,
    stats,
    status,
    status_exit_code,
    wait,
    wait_sync,
)

__all__ = [
    "EXIT_CODES",
    "POLL",
    "Cancelled",
    "Prepared",
    "RunHandle",
    "RunStatus",
    "approve",
    "cancel",
    "exit_code",
    "follow",
    "go_on",
    "list_runs",
    "prepare",
    "reject",
    "resume",
    "start",
    "stats",
    "status",
    "status_exit_code",
    "wait",
    "wait_sync",
]

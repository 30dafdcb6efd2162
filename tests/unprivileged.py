"""Run the real `orch` as a user who is not the owner of the test's files.

Permission bits do not stop root: as root, the command runs as ``nobody`` through
setpriv (the test is skipped without setpriv, or when that user cannot start this
Python); otherwise as oneself, the files having been made unreadable by their mode.
The folder it runs in must be reachable by that user: the ``shared_dir`` fixture
(tests/conftest.py) is one. ``run_orch`` runs it as oneself, the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

__all__ = ["run_orch", "run_unprivileged", "shut_folder"]

_AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def run_unprivileged(
    args: list[str], cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``orch ARGS`` in ``cwd`` as an unprivileged user (``nobody`` when one is root)."""
    cmd = [sys.executable, "-m", "orchestrator", *args]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv")
        cmd = [*_AS_NOBODY, *cmd]
        cannot = _cannot_start(cwd)
        if cannot:  # the interpreter (or its libpython, under /root) is out of its reach
            pytest.skip(f"the unprivileged user cannot start this Python: {cannot[:200]}")
    base = {k: v for k, v in os.environ.items() if not k.startswith("COV")}
    for name in ("ORCH_WORKFLOWS", "ORCH_STATE_DIR"):  # the test's own are out of reach
        base.pop(name, None)
    res = subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, "NO_COLOR": "1", "HOME": str(cwd), **(env or {})},
    )
    return res


def run_orch(
    args: list[str], cwd: Path, env: Mapping[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """``orch ARGS`` in ``cwd`` as oneself (the real command, ``main`` included), without
    the test's $ORCH_STATE_DIR; ``env`` adds variables, ``stdin`` is its standard input."""
    base = {k: v for k, v in os.environ.items() if k != "ORCH_STATE_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, "NO_COLOR": "1", **(env or {})},
    )


@contextlib.contextmanager
def shut_folder(path: Path) -> Iterator[Path]:
    """``path`` made (if missing) a folder of mode 000 for the block, 0755 again after:
    no user but root may open it (``run_unprivileged`` is not root)."""
    path.mkdir(exist_ok=True)
    path.chmod(0o000)
    try:
        yield path
    finally:
        path.chmod(0o755)


def _cannot_start(cwd: Path) -> str:
    """Why ``nobody`` cannot import orchestrator with this Python in ``cwd`` ('' if it can)."""
    probe = [*_AS_NOBODY, sys.executable, "-c", "import orchestrator"]
    done = subprocess.run(probe, cwd=cwd, capture_output=True, text=True, timeout=60)
    return "" if done.returncode == 0 else done.stderr or f"exit {done.returncode}"

"""A workflow this user may not read, or in a folder this user may not search: a
located message and exit 2 from every command that takes a workflow, never a traceback.

The rule lives in spec/locate.py; these run the real `orch` as an unprivileged user
(tests/unprivileged.py), since permission bits do not stop root.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unprivileged import run_unprivileged

WORKFLOW = "name: dep\nphases:\n  - id: a\n    agent: echo\n    with: {text: hi}\n"


@pytest.fixture
def locked(shared_dir: Path) -> Iterator[Path]:
    """``shared_dir`` with noread.yaml (mode 000) and noreaddir/dep.yaml (folder mode 000)."""
    (shared_dir / "noread.yaml").write_text(WORKFLOW)
    (shared_dir / "noread.yaml").chmod(0)
    folder = shared_dir / "noreaddir"
    folder.mkdir()
    (folder / "dep.yaml").write_text(WORKFLOW)
    folder.chmod(0)
    yield shared_dir
    folder.chmod(0o755)  # so that the fixture can remove it


def _says(res, *lines: str) -> None:
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 2, res.stderr
    assert (res.stdout + res.stderr).splitlines() == list(lines)  # validate reports on stdout


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "noreaddir/dep.yaml"],
        ["run", "noreaddir/dep.yaml"],
        ["graph", "noreaddir/dep.yaml"],
    ],
)
def test_a_file_in_a_folder_that_cannot_be_searched_is_a_file_that_cannot_be_read(locked, args):
    res = run_unprivileged(args, locked)
    _says(res, "noreaddir/dep.yaml:1:1: cannot read 'noreaddir/dep.yaml': Permission denied")


def test_validate_names_an_unreadable_file_and_a_folder_that_cannot_be_read(locked):
    res = run_unprivileged(["validate", "noread.yaml", "noreaddir"], locked)
    _says(
        res,
        "noreaddir:1:1: cannot read the folder 'noreaddir': Permission denied",
        "  hint: let this user read and search it (chmod a+rx), or name the files",
        "noread.yaml:1:1: cannot read 'noread.yaml': Permission denied",
    )


def test_resume_with_such_a_workflow_gets_as_far_as_looking_for_the_run(locked):
    res = run_unprivileged(["resume", "X", "--workflow", "noreaddir/dep.yaml"], locked)
    _says(
        res,
        "error: no run 'X': nothing is recorded in .orch",
        "  hint: `orch run` records runs there; --state-dir or ORCH_STATE_DIR look elsewhere",
    )


@pytest.mark.parametrize("name", ["dep", "nothere"])
def test_a_workflows_folder_that_cannot_be_searched_is_named_not_skipped(locked, name):
    # skipping it could run a later folder's NAME.yaml instead of the one meant
    res = run_unprivileged(["run", name], locked, env={"ORCH_WORKFLOWS": "noreaddir"})
    _says(
        res,
        f"error: cannot search the workflows folder 'noreaddir' for '{name}.yaml':"
        " Permission denied",
        "  hint: let this user search it (chmod a+rx 'noreaddir'),"
        " or leave it out of ORCH_WORKFLOWS",
    )

"""The state folder keeps itself out of git: a folder of orch's own gets its .gitignore,
whoever made it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ORCH = str(Path(sys.executable).parent / "orch")
WORKFLOW = "name: tiny\nphases:\n  - id: a\n    agent: echo\n    with: {text: hi}\n"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


def _orch(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ORCH_STATE_DIR"}
    done = subprocess.run(
        [ORCH, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _run_in(repo: Path, *extra: str) -> None:
    _orch(repo, "run", "wf.yaml", *extra)


def test_a_run_in_a_git_repo_leaves_nothing_for_git_to_add(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    _run_in(tmp_path)

    assert (tmp_path / ".orch" / "state.db").is_file()
    assert (tmp_path / ".orch" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert _git(tmp_path, "status", "--porcelain", "--untracked-files=all") == "?? wf.yaml\n"


def test_an_existing_folder_given_as_state_dir_gets_no_gitignore(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    _run_in(tmp_path, "--state-dir", ".")

    assert not (tmp_path / ".gitignore").exists()  # `--state-dir .` must not hide the project
    assert "wf.yaml" in _git(tmp_path, "status", "--porcelain")


def test_a_gitignore_the_user_wrote_is_kept(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    _run_in(tmp_path)
    ignore = tmp_path / ".orch" / ".gitignore"
    ignore.write_text("state.db\n")
    _run_in(tmp_path)

    assert ignore.read_text() == "state.db\n"


def test_a_state_folder_a_detached_run_creates_leaves_nothing_for_git_to_add(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    run_id = _orch(tmp_path, "run", "wf.yaml", "--detach").strip()
    _orch(tmp_path, "wait", run_id)

    assert (tmp_path / ".orch" / "logs" / f"{run_id}.log").is_file()
    assert (tmp_path / ".orch" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert _git(tmp_path, "status", "--porcelain", "--untracked-files=all") == "?? wf.yaml\n"


def test_a_state_folder_left_without_its_gitignore_gets_it_at_the_next_run(tmp_path):
    # as an earlier orch's `run --detach` left it: its logs and database, no .gitignore
    _git(tmp_path, "init", "-q")
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    _run_in(tmp_path)
    (tmp_path / ".orch" / ".gitignore").unlink()
    (tmp_path / ".orch" / "logs").mkdir()
    (tmp_path / ".orch" / "logs" / "0123456789ab.log").write_text("")
    _run_in(tmp_path)

    assert (tmp_path / ".orch" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert _git(tmp_path, "status", "--porcelain", "--untracked-files=all") == "?? wf.yaml\n"


def test_an_empty_existing_folder_given_as_state_dir_gets_no_gitignore(tmp_path):
    # `mkdir sub && cd sub && orch run ... --state-dir .`: the folder is the user's, though empty
    _git(tmp_path, "init", "-q")
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    sub = tmp_path / "sub"
    sub.mkdir()
    _orch(sub, "run", str(tmp_path / "wf.yaml"), "--state-dir", ".")
    _orch(sub, "runs", "--state-dir", ".")  # a later command opens it holding only orch's files
    (sub / "app.py").write_text("x\n")

    assert not (sub / ".gitignore").exists()
    assert "?? sub/app.py" in _git(tmp_path, "status", "--porcelain", "--untracked-files=all")


def test_an_empty_existing_folder_a_detached_run_uses_gets_no_gitignore(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    sub = tmp_path / "sub"
    sub.mkdir()
    run_id = _orch(sub, "run", str(tmp_path / "wf.yaml"), "--state-dir", ".", "--detach").strip()
    _orch(sub, "wait", run_id, "--state-dir", ".")
    (sub / "app.py").write_text("x\n")

    assert not (sub / ".gitignore").exists()
    assert "?? sub/app.py" in _git(tmp_path, "status", "--porcelain", "--untracked-files=all")

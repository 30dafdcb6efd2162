"""`orch validate` as a pre-commit hook: the real pre-commit, a scratch git repo, real commits.

pre-commit installs the hook the way its users get it: it clones this repository at
its current commit, reads ``.pre-commit-hooks.yaml`` and pip-installs orch into a
fresh virtualenv. Slow for that reason; skipped without git or pre-commit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRE_COMMIT = shutil.which("pre-commit", path=str(Path(sys.executable).parent))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None, reason="needs git"),
    pytest.mark.skipif(PRE_COMMIT is None, reason="needs pre-commit (the dev extra)"),
]

GOOD = "name: ok\nphases:\n  - {id: a, agent: echo, with: {text: hi}}\n"
BAD = "name: bad\nphases:\n  - {id: a, agent: ech}\n  - {id: b, agent: echo, timeout: 0}\n"

ACTIONS = (
    "name: ci\non: [push]\n"
    "jobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n      - run: make test\n"
)


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)


def test_the_hook_stops_a_commit_with_a_broken_workflow_and_lets_a_fixed_one_through(
    tmp_path,
):
    assert PRE_COMMIT is not None
    home, repo = tmp_path / "pre-commit-home", tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "workflows").mkdir()
    (repo / "workflows" / "good.yaml").write_text(GOOD)
    (repo / "workflows" / "bad.yaml").write_text(BAD)
    (repo / "compose.yaml").write_text("services: {}\n")  # not a workflow: not checked
    # GitHub Actions' workflows are not orch's: a repository with CI can still commit
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "ci.yml").write_text(ACTIONS)
    _git(repo, "add", "-A")
    env = {**os.environ, "PRE_COMMIT_HOME": str(home)}

    # The repo's config names this repository at its current commit, as users pin a tag.
    rev = _git(ROOT, "rev-parse", "HEAD").stdout.strip()
    if not rev:
        pytest.skip("this source tree is not a git checkout: nothing for pre-commit to clone")
    (repo / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {ROOT}\n    rev: {rev}\n    hooks:\n      - id: orch-validate\n"
    )
    assert subprocess.run([PRE_COMMIT, "install"], cwd=repo, env=env).returncode == 0
    _git(repo, "add", "-A")
    env_commit = {**env, "PATH": f"{Path(PRE_COMMIT).parent}{os.pathsep}{os.environ['PATH']}"}
    refused = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "wip"],
        cwd=repo, env=env_commit, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert "workflows/bad.yaml:3:20: unknown agent 'ech'; did you mean 'echo'?" in said
    assert "workflows/bad.yaml:4:35: phases[1].timeout: a timeout must be greater than 0" in said
    assert "workflows/good.yaml: ok (1 phase, 1 agent type: echo)" in said
    assert "compose.yaml" not in said
    assert ".github" not in said
    assert _git(repo, "rev-list", "--all").stdout == ""  # nothing was committed

    (repo / "workflows" / "bad.yaml").write_text(GOOD.replace("ok", "fixed"))
    _git(repo, "add", "-A")
    accepted = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "ok"],
        cwd=repo, env=env_commit, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr

"""`orch run NAME` finds NAME.yaml in the workflows path ($ORCH_WORKFLOWS, default ./workflows)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ORCH = str(Path(sys.executable).parent / "orch")


def _orch(cwd: Path, *args: str, env: dict[str, str] | None = None):
    full = {k: v for k, v in os.environ.items() if k != "ORCH_WORKFLOWS"}
    full.update(env or {})
    return subprocess.run([ORCH, *args], cwd=cwd, env=full, capture_output=True, text=True)


def _workflow(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    body = f"name: {name}\nphases:\n  - id: a\n    agent: echo\n    with: {{text: {text}}}\n"
    (folder / f"{name}.yaml").write_text(body + "outputs: {said: '{{ phases.a.output }}'}\n")


def test_a_name_runs_the_file_in_the_default_workflows_folder(tmp_path):
    _workflow(tmp_path / "workflows", "hello", "from-workflows")
    done = _orch(tmp_path, "run", "hello")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"said": "from-workflows"}


def test_orch_workflows_lists_folders_searched_in_order(tmp_path):
    _workflow(tmp_path / "one", "other", "x")
    _workflow(tmp_path / "two", "hello", "from-two")
    _workflow(tmp_path / "three", "hello", "from-three")
    path = os.pathsep.join(str(tmp_path / d) for d in ("one", "two", "three"))
    done = _orch(tmp_path, "run", "hello", env={"ORCH_WORKFLOWS": path})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"said": "from-two"}


def test_a_file_in_the_current_folder_wins_over_a_name(tmp_path):
    _workflow(tmp_path / "workflows", "hello", "from-workflows")
    _workflow(tmp_path, "hello", "here")
    (tmp_path / "hello").write_bytes((tmp_path / "hello.yaml").read_bytes())
    done = _orch(tmp_path, "run", "hello")
    assert json.loads(done.stdout) == {"said": "here"}


def test_an_unknown_name_says_where_it_looked_and_what_is_there(tmp_path):
    _workflow(tmp_path / "workflows", "hello", "x")
    _workflow(tmp_path / "workflows", "report", "x")
    done = _orch(tmp_path, "run", "helo")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: no workflow file 'helo', and no 'helo.yaml' in the workflows path"
        " ('workflows'); did you mean 'hello'?",
        "  hint: workflows there: hello, report",
    ]
    assert "Traceback" not in done.stderr


def test_a_name_never_reaches_outside_the_workflows_folder(tmp_path):
    _workflow(tmp_path, "secret", "x")  # ../secret.yaml from the workflows folder
    (tmp_path / "workflows").mkdir()
    done = _orch(tmp_path, "run", "../secret")
    assert done.returncode == 2
    assert "no such file '../secret'" in done.stderr

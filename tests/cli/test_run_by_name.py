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


def test_a_folder_of_the_same_name_does_not_hide_a_name_from_run_and_graph(tmp_path):
    _workflow(tmp_path / "workflows", "demo", "from-workflows")
    (tmp_path / "demo").mkdir()  # e.g. the demo's own files, next to workflows/
    done = _orch(tmp_path, "run", "demo")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"said": "from-workflows"}
    drawn = _orch(tmp_path, "graph", "demo", "--format", "json")
    assert drawn.returncode == 0, drawn.stderr
    assert json.loads(drawn.stdout)["name"] == "demo"
    # a folder that is no name in the workflows path is still no workflow file
    (tmp_path / "other").mkdir()
    other = _orch(tmp_path, "run", "other")
    assert other.returncode == 2
    assert "'other' is a directory, not a workflow file" in other.stderr


def test_validate_and_graph_take_a_name_as_run_does(tmp_path):
    _workflow(tmp_path / "workflows", "hello", "x")
    _workflow(tmp_path / "workflows", "report", "x")
    checked = _orch(tmp_path, "validate", "hello", "report")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines() == [
        "workflows/hello.yaml: ok (1 phase, 1 agent type: echo)",
        "workflows/report.yaml: ok (1 phase, 1 agent type: echo)",
    ]
    unknown = _orch(tmp_path, "validate", "helo", "report")
    assert unknown.returncode == 2
    assert unknown.stdout.splitlines() == [
        "helo:1:1: no workflow file 'helo', and no 'helo.yaml' in the workflows path"
        " ('workflows'); did you mean 'hello'?",
        "  hint: workflows there: hello, report",
        "workflows/report.yaml: ok (1 phase, 1 agent type: echo)",
    ]
    drawn = _orch(tmp_path, "graph", "hello")
    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stdout.startswith("hello  (1 phase, 1 level)\n")
    missing = _orch(tmp_path, "graph", "helo")
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [
        "error: no workflow file 'helo', and no 'helo.yaml' in the workflows path"
        " ('workflows'); did you mean 'hello'?",
        "  hint: workflows there: hello, report",
    ]


def test_for_validate_an_existing_folder_is_a_folder_and_a_file_path_wins(tmp_path):
    _workflow(tmp_path / "workflows", "demo", "from-workflows")
    _workflow(tmp_path / "demo", "inner", "x")
    checked = _orch(tmp_path, "validate", "demo")
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.splitlines() == ["demo/inner.yaml: ok (1 phase, 1 agent type: echo)"]
    (tmp_path / "hello").write_text("name: here\nphases:\n  - {id: a, agent: noop}\n")
    _workflow(tmp_path / "workflows", "hello", "x")
    here = _orch(tmp_path, "validate", "hello")
    assert here.stdout.splitlines() == ["hello: ok (1 phase, 1 agent type: noop)"]


def test_an_empty_file_argument_is_an_error_not_the_current_folder(tmp_path):
    # `orch run "$WF"` with WF unset: said so, not "'.' is a directory"
    _workflow(tmp_path / "workflows", "hello", "x")
    for args in (["run", ""], ["run", "", "--detach"], ["graph", ""]):
        done = _orch(tmp_path, *args)
        assert done.returncode == 2, args
        assert done.stderr.splitlines() == [
            "error: an empty path names no workflow file (an unset variable in a script?)",
            "  hint: give the workflow file's path or a NAME",
        ], args
    assert not (tmp_path / ".orch").exists()  # nothing started

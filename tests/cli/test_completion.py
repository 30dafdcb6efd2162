"""Shell completion through a real bash: the script `orch completion bash` (or
`orch --show-completion bash`) prints."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _complete(cwd: Path, *words: str, source: str = "orch completion bash") -> list[str]:
    """What bash offers after ``words`` (the last one is being typed), via orch's script."""
    script = (
        f'eval "$({source})"\n'
        f"COMP_WORDS=(orch {' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words)}\n"
        "_orch_completion orch\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("ORCH_WORKFLOWS", None)
    done = subprocess.run(
        ["bash", "--norc", "-c", script], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_commands_and_options_complete(tmp_path):
    assert _complete(tmp_path, "va") == ["validate"]
    assert _complete(tmp_path, "run", "--inp") == ["--input", "--inputs-file"]


def test_orch_run_completes_workflow_names_from_the_workflows_path(tmp_path):
    (tmp_path / "workflows").mkdir()
    for name in ("deploy", "demo", "report"):
        (tmp_path / "workflows" / f"{name}.yaml").write_text("name: x\n")
    assert _complete(tmp_path, "run", "de") == ["demo", "deploy"]
    assert _complete(tmp_path, "run", "workflows/") == []  # a path: bash completes files


def test_every_command_taking_a_workflow_name_completes_it(tmp_path):
    (tmp_path / "workflows").mkdir()
    for name in ("deploy", "demo", "report"):
        (tmp_path / "workflows" / f"{name}.yaml").write_text("name: x\n")
    assert _complete(tmp_path, "graph", "de") == ["demo", "deploy"]
    assert _complete(tmp_path, "graph", "--format", "json", "r") == ["report"]
    assert _complete(tmp_path, "validate", "de") == ["demo", "deploy"]
    assert _complete(tmp_path, "validate", "report", "de") == ["demo", "deploy"]  # FILE...
    assert _complete(tmp_path, "resume", "RUN", "--workflow", "de") == ["demo", "deploy"]
    assert _complete(tmp_path, "graph", "workflows/") == []  # a path: bash completes files


def test_the_install_option_is_offered_in_help():
    done = subprocess.run([str(BIN / "orch"), "--help"], capture_output=True, text=True)
    assert "--install-completion" in done.stdout


def _orch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "orch"), *args], capture_output=True, text=True, timeout=60)


def test_orch_completion_prints_the_script_for_each_shell(tmp_path):
    # the script --show-completion prints, evaluated by a real bash
    assert _complete(tmp_path, "va", source="orch --show-completion bash") == ["validate"]
    assert _complete(tmp_path, "completion", "z") == ["zsh"]
    starts = {
        "bash": "_orch_completion() {",
        "zsh": "#compdef orch",
        "fish": "complete --command orch",
        "powershell": "Import-Module PSReadLine",
        "pwsh": "Import-Module PSReadLine",
    }
    for shell, start in starts.items():
        done = _orch("completion", shell)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(start), shell
        assert "_ORCH_COMPLETE" in done.stdout, shell


def test_an_unknown_shell_is_a_usage_error():
    done = _orch("completion", "tcsh")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [
        "error: no completion for the shell 'tcsh'",
        "  hint: give one of bash, zsh, fish, powershell, pwsh",
    ]

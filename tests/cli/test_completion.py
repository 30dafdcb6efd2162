"""Shell completion through a real bash: the script `orch --show-completion bash` prints."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _complete(cwd: Path, *words: str) -> list[str]:
    """What bash offers after ``words`` (the last one is being typed), via orch's script."""
    script = (
        'eval "$(orch --show-completion bash)"\n'
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


def test_the_install_option_is_offered_in_help():
    done = subprocess.run([str(BIN / "orch"), "--help"], capture_output=True, text=True)
    assert "--install-completion" in done.stdout

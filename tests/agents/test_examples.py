"""The Python API examples run as scripts; every built-in agent type has a README section."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from orchestrator.agents import AgentRegistry

ROOT = Path(__file__).resolve().parents[2]


def script(name: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )


def test_python_api_example_runs_and_prints_the_outputs(tmp_path):
    done = script("python_api.py", tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == {
        "status": "completed",
        "outputs": {"sections": ["intro to tide pools", "details", "summary"], "words": "3"},
    }
    assert done.stderr.split() == [
        "phase_started", "outline", "phase_completed", "outline",
        "phase_started", "count", "phase_completed", "count",
    ]  # fmt: skip


def test_custom_agent_example_registers_in_code_and_runs(tmp_path):
    done = script("custom_agent.py", tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"status": "completed", "outputs": {"words": 11}}


def test_every_builtin_agent_type_has_a_readme_section():
    """datasette's test_docs style: a new built-in without documentation fails here."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    headings = {
        name
        for line in re.findall(r"^###+ .*$", readme, flags=re.MULTILINE)
        for name in re.findall(r"`([a-z_]+)`", line)
    }
    registry = AgentRegistry.from_entry_points()
    builtins = {n for n in registry.names() if registry.info(n).source.startswith("orchestrator.")}
    assert builtins, "no built-in agent types found"
    missing = sorted(builtins - headings)
    assert missing == [], f"README.md has no '### `name`' section for: {missing}"
    assert "## Writing an agent plugin" in readme

"""Ctrl-C at every early moment of `orch run`: exit 130, one line, no traceback.

A real SIGINT is sent to the real `orch` process at a chosen moment: while it
imports a given module (an import hook sends the signal to its own process, so
the moment does not depend on the machine's speed). The command is started the
way the ``orch`` console script starts it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# What the console script does, with a hook that interrupts the import of argv[1].
LAUNCHER = """
import os, signal, sys
target = sys.argv.pop(1)

class Interrupt:
    def find_spec(self, name, path=None, target_module=None):
        if name == target:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, Interrupt())
sys.argv[0] = "orch"
from orchestrator.__main__ import main
sys.exit(main())
"""

# Imported in this order by `orch run`: the package, the command line, loading, the run.
MOMENTS = [
    "orchestrator.errors",
    "typer",
    "orchestrator.cli",
    "orchestrator.spec",
    "ruamel.yaml",
    "orchestrator.spec.schema",  # jsonschema is imported only to explain a bad file
    "orchestrator.plan",
    "jinja2",
    "orchestrator.engine",
    "orchestrator.state.sqlite",
    "asyncio",
]


def test_the_package_itself_imports_nothing():
    # `import orchestrator` runs before any guard can: it must be instant (no typing, no errors).
    code = (
        "import sys; before = set(sys.modules); import orchestrator;"
        " print(sorted(set(sys.modules) - before))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['__future__', 'orchestrator']"


@pytest.mark.parametrize("moment", MOMENTS)
def test_ctrl_c_while_orch_starts_exits_130_in_one_line(tmp_path, moment):
    wf = tmp_path / "wf.yaml"
    wf.write_text("name: w\nphases:\n  - {id: a, agent: echo, with: {text: hi}}\n")
    res = subprocess.run(
        [sys.executable, "-c", LAUNCHER, moment, "run", str(wf), "--state-dir", "st"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr, res.stderr
    assert res.returncode == 130, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    # a cancelled run's summary ends with the commands that resume it and read its logs
    if lines[-1].startswith("its logs:  orch logs "):
        assert lines[-2].startswith("resume it: orch resume "), res.stderr
        lines = lines[:-2]
    assert lines[-1] in ("interrupted", "error: the run was cancelled"), res.stderr
    if not Path(tmp_path / "st").exists():
        return
    # a run recorded before the signal is cancelled, never left "running"
    status = subprocess.run(
        [sys.executable, "-m", "orchestrator", "runs", "--json", "--state-dir", "st"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert '"running"' not in status.stdout


@pytest.mark.parametrize(
    ("command", "moment"),
    [
        (["validate", "wf.yaml"], "ruamel.yaml"),
        (["graph", "wf.yaml"], "orchestrator.plan"),
        (["runs", "--state-dir", "st"], "sqlite3"),
        (["agents"], "orchestrator.agents.registry"),  # entry points: no importlib.metadata
    ],
)
def test_ctrl_c_in_any_command_says_interrupted_and_exits_130(tmp_path, command, moment):
    (tmp_path / "wf.yaml").write_text(
        "name: w\nphases:\n  - {id: a, agent: echo, with: {text: hi}}\n"
    )
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "state.db").touch()  # `orch runs` opens the store (and imports sqlite3)
    res = subprocess.run(
        [sys.executable, "-c", LAUNCHER, moment, *command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 130, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "interrupted", res.stderr

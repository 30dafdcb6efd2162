"""The built wheel works on its own: installed into a fresh virtualenv, `orch` validates a file.

This proves the schema ships inside the package (hatch force-include) and is
found through importlib.resources, away from the source tree. Dependencies come
from the package registry, as for a user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WORKFLOW = """\
# yaml-language-server: $schema=../schemas/workflow.schema.json
name: wheel-check
phases:
  - id: hello
    agent: echo
    with: {text: hello}
  - id: shout
    agent: echo
    with: {text: "{{ phases.hello.output }}!"}
"""


def _run(*cmd: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Nothing may point back at the source tree or the project's venv; pip's own
    # settings (index, certificates, proxies) pass through.
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    env.update(NO_COLOR="1", PIP_NO_INPUT="1")
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    (path,) = out.glob("orch_workflows-*.whl")
    return path


def test_the_wheel_holds_the_schema_the_script_and_the_agent_entry_points(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "orchestrator/schemas/workflow.schema.json" in names
        assert "orchestrator/py.typed" in names
        assert "orchestrator/cli/help.txt" in names  # `orch --help` without typer
        # `orch --version` without importlib.metadata: hatchling writes it from pyproject
        version = zf.read("orchestrator/_version.py").decode()
        schema = json.loads(zf.read("orchestrator/schemas/workflow.schema.json"))
        assert schema == json.loads((ROOT / "schemas" / "workflow.schema.json").read_text())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = zf.read(entry_points).decode()
    assert "orch = orchestrator.__main__:main" in text
    assert f'__version__ = "{wheel.name.split("-")[1]}"' in version  # the wheel's version
    assert "[orchestrator.agents]" in text and "echo = " in text


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_venv_validates_a_workflow(wheel, tmp_path):
    venv = tmp_path / "venv"
    made = _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    bin_ = venv / "bin"
    installed = _run(
        bin_ / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel,
        cwd=tmp_path,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr

    work = tmp_path / "work"
    work.mkdir()
    (work / "flow.yaml").write_text(WORKFLOW)

    where = _run(
        bin_ / "python",
        "-c",
        "import importlib.resources as r, orchestrator; "
        "f = r.files('orchestrator') / 'schemas' / 'workflow.schema.json'; "
        "print(orchestrator.__file__); print(f.is_file())",
        cwd=work,
    )
    package_file, is_file = where.stdout.split()
    assert Path(package_file).is_relative_to(venv) and is_file == "True"

    shown = _run(bin_ / "orch", "--version", cwd=work)
    assert shown.stdout == f"orch {wheel.name.split('-')[1]}\n", shown.stderr

    ok = _run(bin_ / "orch", "validate", "flow.yaml", cwd=work)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "flow.yaml" in ok.stdout

    graph = _run(
        bin_ / "python", "-m", "orchestrator", "graph", "flow.yaml", "-f", "json", cwd=work
    )
    assert graph.returncode == 0, graph.stderr
    assert json.loads(graph.stdout)["order"] == ["hello", "shout"]

    (work / "bad.yaml").write_text(
        "name: bad\nphases:\n  - id: a\n    agent: echo\n    tmeout: 1s\n"
    )
    bad = _run(bin_ / "orch", "validate", "bad.yaml", cwd=work)
    assert bad.returncode == 2 and "bad.yaml:5:" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr

    # The example plugin depends on orch-workflows with a version range: pip resolves it
    # against the wheel just installed (orch is not on the index), and `orch agents` lists it.
    plugin = _run(
        bin_ / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
        ROOT / "examples" / "orch-plugin-shout", cwd=tmp_path,
    )  # fmt: skip
    assert plugin.returncode == 0, plugin.stdout + plugin.stderr
    assert _run(bin_ / "python", "-m", "pip", "check", cwd=tmp_path).returncode == 0
    requires = _run(
        bin_ / "python", "-c",
        "from importlib.metadata import requires; print(requires('orch-plugin-shout'))",
        cwd=tmp_path,
    )  # fmt: skip
    assert "orch-workflows<0.2,>=0.1" in requires.stdout
    listed = json.loads(_run(bin_ / "orch", "agents", "--json", cwd=work).stdout)
    shout = next(r for r in listed if r["name"] == "shout")
    assert (shout["distribution"], shout["error"]) == ("orch-plugin-shout", None)

"""`orch agents`: the real command in-process (CliRunner) and, with plugins on PYTHONPATH, as a
subprocess; the example plugin installed for real with pip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.agents.test_registry import GOOD, make_site

ROOT = Path(__file__).resolve().parents[2]
ORCH = str(Path(sys.executable).parent / "orch")
BUILTINS = {"echo", "fail", "http", "llm", "noop", "python", "shell", "sleep", "workflow"}


def orch(*args: str):
    return CliRunner().invoke(app, ["agents", *args], env={"COLUMNS": "200"})


def orch_process(*args: str, pythonpath: Path, cwd: Path | None = None):
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "COLUMNS": "200"}
    return subprocess.run(
        [ORCH, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def test_the_table_lists_every_builtin_with_its_origin_and_config():
    result = orch()
    assert result.exit_code == 0, result.output
    for name in BUILTINS:
        assert f"│ {name} " in result.output
    assert "orch-workflows 0.1.0" in result.output
    assert "command*, env, inherit_env, cwd" in result.output  # shell's keys, required starred


def test_json_lists_name_distribution_version_description_and_schema():
    result = orch("--json")
    assert result.exit_code == 0
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert BUILTINS <= set(records)
    shell = records["shell"]
    assert shell["distribution"] == "orch-workflows" and shell["version"] == "0.1.0"
    assert shell["source"] == "orchestrator.agents.builtin.shell:ShellAgent"
    assert shell["config_schema"]["required"] == ["command"]
    assert shell["error"] is None


def test_one_type_in_full_and_an_unknown_name():
    result = orch("http")
    assert result.exit_code == 0
    assert "expect_status" in result.output and "Statuses that count as success" in result.output
    one = orch("llm", "--json")
    assert json.loads(one.stdout)["name"] == "llm"
    unknown = orch("shel")
    assert unknown.exit_code == 2
    assert "unknown agent type 'shel'; did you mean 'shell'?" in unknown.output
    assert "Traceback" not in unknown.output


@pytest.fixture
def plugins(tmp_path):
    return make_site(
        tmp_path / "site",
        {
            "hello-plugin-1.2": ("", {"hello": "reg_good:Hello", "broken": "reg_broken:Agent"}),
            "shadow-tools-0.9": ("", {"shell": "reg_good:Hello"}),
        },
        {"reg_good": GOOD, "reg_broken": "import no_such_dependency_xyz\n"},
    )


def test_a_plugin_that_fails_to_load_is_listed_with_its_error_and_exit_0(plugins):
    result = orch_process("agents", pythonpath=plugins)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "hello-plugin 1.2" in out
    assert "ERROR: agent type 'broken' failed to load" in out
    assert "failed to load; workflows that use them will not validate" in out
    records = {
        r["name"]: r
        for r in json.loads(orch_process("agents", "--json", pythonpath=plugins).stdout)
    }
    assert "ModuleNotFoundError" in records["broken"]["error"]
    assert "registered by two distributions" in records["shell"]["error"]
    assert records["hello"]["error"] is None


def test_a_broken_plugin_fails_only_the_workflows_that_use_it(plugins, tmp_path):
    uses = tmp_path / "uses.yaml"
    uses.write_text("name: u\nphases:\n  - id: a\n    agent: broken\n")
    other = tmp_path / "other.yaml"
    other.write_text(
        "name: o\nphases:\n  - id: a\n    agent: hello\n    with: {who: me}\n"
        "outputs:\n  g: '{{ phases.a.output }}'\n"
    )
    bad = orch_process("validate", str(uses), pythonpath=plugins)
    assert bad.returncode == 2
    assert f"{uses}:4:12:" in bad.stdout + bad.stderr
    assert "'broken = reg_broken:Agent' of hello-plugin 1.2" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr
    good = orch_process("run", str(other), pythonpath=plugins, cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout) == {"g": "hello me"}


@pytest.fixture(scope="module")
def shout_site(tmp_path_factory):
    """The example plugin package, installed for real (pip, no network, into a folder)."""
    target = tmp_path_factory.mktemp("shout-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(ROOT / "examples" / "orch-plugin-shout"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert list(target.glob("orch_plugin_shout-1.0.0.dist-info"))
    return target


def test_the_example_plugin_shows_in_orch_agents_and_runs(shout_site, tmp_path):
    listed = orch_process("agents", "--json", pythonpath=shout_site)
    shout = next(r for r in json.loads(listed.stdout) if r["name"] == "shout")
    assert (shout["distribution"], shout["version"]) == ("orch-plugin-shout", "1.0.0")
    assert shout["error"] is None
    flow = ROOT / "examples" / "orch-plugin-shout" / "shout.yaml"
    ran = orch_process(
        "run", str(flow), "--input", "who=plugins", pythonpath=shout_site, cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"greeting": "HELLO PLUGINS!!!"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: b\nphases:\n  - id: s\n    agent: shout\n    with: {text: 1, loud: true}\n"
    )
    checked = orch_process("validate", str(bad), pythonpath=shout_site)
    assert checked.returncode == 2
    shown = checked.stdout + checked.stderr
    assert f"{bad}:5:" in shown and "'loud'" in shown


def test_one_broken_type_in_full_shows_its_error_and_exits_0(plugins):
    result = orch_process("agents", "broken", pythonpath=plugins)
    assert result.returncode == 0
    assert "broken  (hello-plugin 1.2; reg_broken:Agent)" in result.stdout
    assert "ERROR: agent type 'broken' failed to load" in result.stdout
